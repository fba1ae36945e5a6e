#!/usr/bin/env python3
"""
Makes the sentencepiece-style BPE fixture in tests/spbpe/:

  tokenizer.json                 800-token BPE laid out like Llama 2's tokenizer.json: <unk> <s> </s>
                                 = ids 0 1 2, byte fallback pieces <0x00>..<0xFF> = ids 3..258, then
                                 the pieces learned on tinyshakespeare; byte_fallback, fuse_unk, the
                                 "legacy" normalizer Sequence[Prepend("▁"), Replace(" ", "▁")],
                                 no pre-tokenizer, <s> prepended by the post-processor.
  tokenizer_metaspace.json       the same model with no normalizer and the newer pre-tokenizer
                                 Metaspace(replacement "▁", prepend_scheme "first", split false).
  tokenizer_metaspace_split.json the same model with Metaspace(prepend_scheme "always", split true).
  reference.json                 [{"text", "special", "ids", "ids_bos", "ids_metaspace",
                                 "ids_metaspace_split"}]: tok.encode(text, add_special_tokens=False)
                                 .ids of each variant, and ids_bos = tok.encode(text).ids of the
                                 first; "special" is true when the text holds <s>, </s> or <unk>
                                 (Hugging Face matches those in the text as added tokens).

Needs the Hugging Face `tokenizers` library (not needed to run the tests):

  python3 tests/make_spbpe.py --data ../shared/data/tinyshakespeare.txt --out tests/spbpe
"""

import argparse
import json
import os
import random

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TEXTS = [
    "Hello world",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "I'm sure they'll say we've done it.",
    "naïve café, Straße, 東京, Привет, 😀🚀",
    "café naïve façade résumé Ünïcödé",
    "日本語のテキスト 中文，标点。",
    "emoji 😀🚀 family 👨\u200d👩\u200d👧 flags 🇫🇷 thumbs 👍🏽",
    "1234567890 3.14159 1e-5 0x1F",
    "multiple   spaces\tand\ttabs\n\nnewlines",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "\n",
    "\nstarts with a newline",
    "ends with a newline\n",
    "line one\r\nline two\r\n",
    " \t \n x",
    "",
    " ",
    "   ",
    "a",
    "\u00a0nbsp and \u200bzero-width",
    "control \x01\x02 chars \x7f",
    "~`^|\\{}[]@#$%&*_+=<>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "thethethethe the the the",
    "KING RICHARD III:\nNow is the winter of our discontent",
]
SPECIAL_TEXTS = [
    "<s> not a special token </s>",
    "<s>Hello</s>",
    "Hello <s> world",
    "<unk>",
    "a<s>b</s>c",
]


def random_texts(n, seed):
    """Random strings from a pool of fragments that hit corner cases (fixed seed)."""
    pool = ["the", "The", "king", " ", "  ", "\t", "\n", "\r\n", ",", ".", "'", "'s", "!", "é", "ü",
            "ß", "東", "京", "😀", "👍🏽", "1", "42", "2024", "\u00a0", "\u3000", "x", "Q", "▁", "e▁t", "<0x41>"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training text (tinyshakespeare.txt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vocab-size", type=int, default=800)
    args = p.parse_args()

    # 1. learn merges within words (Metaspace-split), as sentencepiece does; a few accented
    #    lines put é ï ü ö ß in the alphabet, other non-ASCII text falls back to bytes
    lines = open(args.data, encoding="utf-8").read().splitlines()
    lines += ["café naïve façade résumé Ünïcödé Straße größer"] * 20
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size - 256, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    learned = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    # 2. Llama 2's layout: <unk> <s> </s>, the 256 byte pieces, then the learned pieces in order
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))

    def make(variant):
        t = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        t.add_special_tokens(["<unk>", "<s>", "</s>"])
        if variant == "legacy":
            t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        elif variant == "metaspace":
            t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        else:
            t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
        t.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                         special_tokens=[("<s>", 1)])
        return t

    variants = {"ids": make("legacy"), "ids_metaspace": make("metaspace"), "ids_metaspace_split": make("split")}
    os.makedirs(args.out, exist_ok=True)
    variants["ids"].save(os.path.join(args.out, "tokenizer.json"), pretty=False)
    variants["ids_metaspace"].save(os.path.join(args.out, "tokenizer_metaspace.json"), pretty=False)
    variants["ids_metaspace_split"].save(os.path.join(args.out, "tokenizer_metaspace_split.json"), pretty=False)

    reference = []
    for text in TEXTS + SPECIAL_TEXTS + random_texts(40, 1234):
        r = {"text": text, "special": text in SPECIAL_TEXTS}
        for key, t in variants.items():
            r[key] = t.encode(text, add_special_tokens=False).ids
        r["ids_bos"] = variants["ids"].encode(text).ids
        back = variants["ids"].decode(r["ids"])
        if not r["special"] and back != text:
            print("note: does not decode back to its text:", repr(text), "->", repr(back))
        reference.append(r)
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in reference) + "\n]\n")
    print(f"wrote {args.out}: {len(vocab)} tokens, {len(merges)} merges, {len(reference)} reference strings")


if __name__ == "__main__":
    main()
