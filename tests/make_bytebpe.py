#!/usr/bin/env python3
"""
Makes the byte-level BPE tokenizer fixture in tests/bytebpe/:

  tokenizer.json   a small (1000 + 2 tokens) BPE tokenizer trained on tinyshakespeare,
                   configured exactly like Meta Llama 3's tokenizer.json: regex Split
                   pre-tokenizer + ByteLevel, BPE with ignore_merges, ByteLevel decoder,
                   <|begin_of_text|> prepended by the post-processor.
  reference.json   [{"text", "ids", "tokens"}] for ~30 strings chosen to hit the corner
                   cases of the Llama 3 regex and of byte-level BPE (contractions, accents,
                   CJK, emoji ZWJ sequences and flags, digit runs, whitespace runs, ...);
                   ids are tok.encode(text, add_special_tokens=False).ids and every one
                   decodes back to its text.

Needs the Hugging Face `tokenizers` library (not needed to run the tests):

  python3 tests/make_bytebpe.py --data ../shared/data/tinyshakespeare.txt --out tests/bytebpe
"""

import argparse
import json
import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# the pre-tokenizer pattern of Meta Llama 3's tokenizer.json, verbatim
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "I'm sure they'll say we've done it, and you'd agree it's fine.",
    "DON'T SHOUT! I'M HERE, YOU'LL SEE, WE'VE GOT IT, SHE'D KNOW, IT'S OK.",
    "don't won't can't shan't ain't y'all o'er 'tis",
    "'s 't 're 've 'm 'll 'd",
    "café naïve façade résumé",
    "Ünïcödé ÀÉÎÕÜ ñ ß Straße",
    "日本語のテキスト",
    "中文，标点。",
    "Привет, мир! مرحبا नमस्ते",
    "emoji 😀🚀 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 thumbs 👍🏽",
    "1234567 3.14159 1e-5 0x1F 2024-01-01",
    "123456789012 and 9",
    "tabs\tand\t\ttabs",
    "multiple   spaces    here",
    "trailing spaces   ",
    "   leading spaces",
    "\n\n\n",
    "line one\r\nline two\r\n",
    "\r\n\r\n  \n",
    " \t \n x",
    "!!!??? ... --- *** ((()))",
    "a+b=c; x->y; foo::bar(); #include <stdio.h>",
    "mixed: ABC123def ÄÖÜ 42% of $5.00 \u2014 \u201cquotes\u201d \u2018single\u2019",
    "\u00a0nbsp and \u200bzero-width",
    "",
    " ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Ha! ha! HA!\n\n  Indented\n\tTabbed line\n",
]

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training text (tinyshakespeare.txt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vocab-size", type=int, default=1000)
    args = p.parse_args()

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([args.data], trainer)

    # special tokens come after the learned vocabulary, as in Llama 3 (128000, 128001)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A:0",
                                      pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])

    # make sure the saved JSON says what Llama 3's does (some versions drop fields in training)
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    j["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=False, trim_offsets=True, use_regex=False)
    tok = Tokenizer.from_str(json.dumps(j))
    assert json.loads(tok.to_str())["model"]["ignore_merges"] is True

    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"), pretty=True)

    reference = []
    for text in TEXTS:
        enc = tok.encode(text, add_special_tokens=False)
        decoded = tok.decode(enc.ids, skip_special_tokens=False)
        assert decoded == text, (text, decoded)
        reference.append({"text": text, "ids": enc.ids, "tokens": enc.tokens})
    assert tok.encode("Hi", add_special_tokens=True).ids[0] == bos
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in reference) + "\n]\n")
    print(f"wrote {args.out}/tokenizer.json ({tok.get_vocab_size()} tokens, <|begin_of_text|> = {bos}) "
          f"and reference.json ({len(reference)} strings, all decode back to their text)")

if __name__ == "__main__":
    main()
