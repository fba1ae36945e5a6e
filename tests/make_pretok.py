#!/usr/bin/env python3
"""
Makes tests/pretok/reference.json: how Hugging Face `tokenizers` (Oniguruma regexes) splits
strings with the three pre-tokenizer patterns peft.c implements by hand:

  llama3  Split(Regex(Llama 3's pattern), "isolated")
  qwen2   Split(Regex(Qwen2's pattern: Llama 3's with \\p{N} instead of \\p{N}{1,3}), "isolated")
  gpt2    ByteLevel(add_prefix_space=False, use_regex=True), pieces mapped back to text

[{"text", "llama3": [pieces], "qwen2": [pieces], "gpt2": [pieces]}] for hand-made corner cases
and random strings drawn from a pool of letters, marks, digits of several scripts, every
Unicode White_Space character, apostrophes and case-folding oddities (ſ, K). Fixed seed.

Needs the Hugging Face `tokenizers` library (not needed to run the tests):

  python3 tests/make_pretok.py --out tests/pretok
"""

import argparse
import json
import os
import random

from tokenizers import Regex, pre_tokenizers

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CASES = [
    "Hello world", "I'm sure they'll say we've done it, you'd agree it's fine.",
    "DON'T SHOUT! I'M HERE, YOU'LL SEE, WE'VE GOT IT, SHE'D KNOW, IT'S OK.", "'s 't 're 've 'm 'll 'd",
    "'S 'T 'RE 'Ve 'M 'Ll 'D", "'ſ 'K 'x ''s", "1234567 12 123456789012", "١٢٣٤ ²³ Ⅻ ½",
    "   leading", "trailing   ", "a  b   c", "\n\n\n", "x\r\n\r\ny", "\r\n\r\n  \n", " \t \n x", "a \n b",
    "!!!??? ... --- *** ((()))", " !x", "  !x", "a+b=c; x->y;\n", "\u00a0nbsp\u3000ideo\u2028ls\u0085nel",
    "e\u0301 combining", "👨\u200d👩\u200d👧 🇫🇷 👍🏽", "日本語のテキスト", "Привет, мир!", "", " ", "\t",
]
POOL = (list("aZé東ßǅʰ\u05d0") + ["\u0301", "\u0903"] + list("09١²Ⅻ½") + list(" \t\n\r\x0b\x0c")
        + ["\x85", "\xa0", "\u1680", "\u2000", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
           "\u200b", "\x1c", "\x1f"] + list("'!.,-_\"(") + ["'s", "'S", "'ll", "'LL", "'re", "'ſ", "ſ", "\u212a",
           "😀", "\U0001F3FD", "\u200d", "\ufeff", "\U00020000", "\U000E0001"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--random", type=int, default=300, help="how many random strings")
    args = p.parse_args()
    rng = random.Random(4321)
    texts = CASES + ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 16))) for _ in range(args.random)]

    split = {name: pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False)
             for name, pat in (("llama3", LLAMA3), ("qwen2", QWEN2))}
    bytelevel = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # GPT-2's byte -> printable character table, inverted
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:] + [256 + n for n in range(256 - len(bs))]
    unmap = dict(zip((chr(c) for c in cs), bs + [b for b in range(256) if b not in bs]))

    reference = []
    for text in texts:
        r = {"text": text}
        for name, pre in split.items():
            r[name] = [piece for piece, _ in pre.pre_tokenize_str(text)]
        r["gpt2"] = [bytes(unmap[c] for c in piece).decode("utf-8") for piece, _ in bytelevel.pre_tokenize_str(text)]
        for key in ("llama3", "qwen2", "gpt2"):
            assert "".join(r[key]) == text, (key, text, r[key])
        reference.append(r)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in reference) + "\n]\n")
    print(f"wrote {args.out}/reference.json ({len(reference)} strings)")


if __name__ == "__main__":
    main()
