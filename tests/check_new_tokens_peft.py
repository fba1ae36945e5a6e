#!/usr/bin/env python3
"""Check (on a machine with torch, transformers and peft; made for transformers 5.17 + peft 0.21) that
an adapter trained by `peft train --new-special-tokens "<|im_start|>,<|im_end|>"` loads in PEFT onto the
base resized with transformers' resize_token_embeddings, with the logits of `peft dump`.

    python3 tests/check_new_tokens_peft.py [CASES_DIR] [--tol 1e-4]

CASES_DIR (default tests/new_tokens, made by tests/make_new_tokens_case.py) holds <case>/base (HF
folder), <case>/adapter (adapter + tokenizer.json beside it), <case>/ids.safetensors and
<case>/dump.safetensors for the cases "untied" and "tied". For each case this prints one line
    PASS|FAIL <case>: ... max logit diff <d> (tol <tol>)
and exits 1 if any case fails.
"""
import argparse
import os
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM
from peft import PeftModel

NEW = ["<|im_start|>", "<|im_end|>"]


def check(case_dir, tol):
    name = os.path.basename(case_dir.rstrip("/"))
    adapter = os.path.join(case_dir, "adapter")
    tok = Tokenizer.from_file(os.path.join(adapter, "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    new_ids = [tok.token_to_id(t) for t in NEW]
    enc = tok.encode("<|im_start|>user\nthe quick brown fox<|im_end|>", add_special_tokens=False).ids
    tok_ok = new_ids == [vocab - 2, vocab - 1] and enc[0] == new_ids[0] and enc[-1] == new_ids[1]
    model = AutoModelForCausalLM.from_pretrained(os.path.join(case_dir, "base"), dtype=torch.float32)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(vocab)
    model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    ids = load_file(os.path.join(case_dir, "ids.safetensors"))["input_ids"].long()
    dump = load_file(os.path.join(case_dir, "dump.safetensors"))
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    diff = (logits - dump["logits"].float()).abs().max().item() if logits.shape == dump["logits"].shape else float("inf")
    with model.disable_adapter(), torch.no_grad():
        base = model(input_ids=ids).logits.float()
    effect = (logits - base).abs().max().item()
    ok = tok_ok and diff <= tol and effect > 10 * tol
    print(f"{'PASS' if ok else 'FAIL'} {name}: vocabulary {old} -> {vocab} (resize_token_embeddings), new ids {new_ids} "
          f"({'tokenized as single tokens' if tok_ok else 'TOKENIZER MISMATCH: ' + str(enc)}); PEFT loaded "
          f"modules_to_save {sorted(model.peft_config['default'].modules_to_save or [])}; logits {list(logits.shape)} "
          f"max logit diff vs peft dump {diff:.3e} (tol {tol:g}); the adapter changes the logits by {effect:.3e}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="?", default="tests/new_tokens")
    p.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    results = [check(os.path.join(a.cases, c), a.tol) for c in ("untied", "tied")]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
