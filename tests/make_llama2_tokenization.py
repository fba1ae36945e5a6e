#!/usr/bin/env python3
"""Writes tests/fixtures/llama2-tokenization-reference.json: the Llama 2 sentencepiece ids of test strings.

Needs the sentencepiece Python package (Debian: apt-get install python3-sentencepiece) and the Llama 2
tokenizer.model (../shared/tokenizers/llama2/tokenizer.model, or the first argument). The strings are those of
../shared/tokenizers/llama2/llama2-tokenization-reference.json (made there with sentencepiece 0.2.2); this script
re-encodes them, so a fresh clone has the reference without ../shared, and prints whether both versions agree.

    python3 tests/make_llama2_tokenization.py [tokenizer.model] [strings.json]
"""
import json, sys
import sentencepiece as spm

model = sys.argv[1] if len(sys.argv) > 1 else "../shared/tokenizers/llama2/tokenizer.model"
src = sys.argv[2] if len(sys.argv) > 2 else "../shared/tokenizers/llama2/llama2-tokenization-reference.json"
out = "tests/fixtures/llama2-tokenization-reference.json"
sp = spm.SentencePieceProcessor(model_file=model)
rows = json.load(open(src, encoding="utf-8"))
res, same = [], 0
for r in rows:
    ids = sp.encode(r["text"])
    same += ids == r.get("sentencepiece_ids")
    res.append({"text": r["text"], "sentencepiece_ids": ids})
with open(out, "w", encoding="utf-8") as f:
    json.dump(res, f, ensure_ascii=False, indent=0)
    f.write("\n")
print("wrote %s: %d strings, sentencepiece %s; %d/%d equal to %s" % (out, len(res), spm.__version__, same, len(rows), src))
