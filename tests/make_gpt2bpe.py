#!/usr/bin/env python3
"""
Makes the GPT-2-style byte-level BPE fixture in tests/gpt2bpe/:

  tokenizer.json         a small (600 tokens) BPE trained on tinyshakespeare with the pre-tokenizer
                         ByteLevel(add_prefix_space=True, use_regex=True) alone (GPT-2's regex inside
                         ByteLevel, as GPT-2/RoBERTa files have it), no ignore_merges,
                         <|endoftext|> as an added special token.
  tokenizer_digits.json  the same model with SmolLM's pre-tokenizer Sequence[Digits(individual_digits),
                         ByteLevel(add_prefix_space=False, use_regex=True)] and one more added token,
                         "<custom>", that is not special.
  reference.json         [{"text", "special", "ids", "ids_digits"}]: tok.encode(text).ids of each
                         ("special": the text holds <|endoftext|> or <custom>, which Hugging Face
                         matches as added tokens).

Needs the Hugging Face `tokenizers` library (not needed to run the tests):

  python3 tests/make_gpt2bpe.py --data ../shared/data/tinyshakespeare.txt --out tests/gpt2bpe
"""

import argparse
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TEXTS = [
    "Hello world", "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
    "I'm sure they'll say we've done it.", "DON'T SHOUT, I'M HERE", "café naïve 東京 Привет 😀🚀 👍🏽",
    "1234567890 3.14159", "multiple   spaces\tand\ttabs\n\nnewlines", " leading space", "trailing spaces   ",
    "\n\n", "line one\r\nline two\r\n", "", " ", "\u00a0nbsp \u3000 ideographic", "!!!??? ((()))",
    "2024-01-01 v1.2.3 x86_64 \u2460\u2461 \u0661\u0662\u0663 \u00bd 3rd 42nd", "pi=3.14159265358979",
]
SPECIAL_TEXTS = ["<|endoftext|>", "Hello<|endoftext|>world", "a <|endoftext|> b", "<custom>", "x <custom>y 12<custom>34"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training text (tinyshakespeare.txt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vocab-size", type=int, default=600)
    args = p.parse_args()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, show_progress=False, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([args.data], trainer)

    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"), pretty=False)
    digits = Tokenizer.from_str(tok.to_str())
    digits.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    digits.add_tokens(["<custom>"])
    digits.save(os.path.join(args.out, "tokenizer_digits.json"), pretty=False)
    reference = [{"text": t, "special": t in SPECIAL_TEXTS, "ids": tok.encode(t).ids, "ids_digits": digits.encode(t).ids}
                 for t in TEXTS + SPECIAL_TEXTS]
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in reference) + "\n]\n")
    print(f"wrote {args.out}: {tok.get_vocab_size()} tokens, {len(reference)} reference strings")


if __name__ == "__main__":
    main()
