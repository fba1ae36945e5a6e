#!/usr/bin/env python3
"""Check that adapters written by peft.c load in Hugging Face transformers + PEFT and give the
same logits as `peft dump`, or (ADAPTER_DIR `-`) that a folder written by `peft merge` loads in
transformers with them.  Run on a machine with torch, transformers and peft:

    python3 tests/peft_interop.py BASE_HF_FOLDER ADAPTER_DIR DUMP.safetensors [--tol 1e-4] [--eager]

DUMP.safetensors is `peft dump MODEL -a ADAPTER_DIR -i IN -o DUMP.safetensors`; its input_ids are
read from IN, which must be given as the `input_ids` tensor inside DUMP or with --ids IN.
Exits 1 if the max abs difference of the logits exceeds --tol.
"""
import argparse
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from peft import PeftModel


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("adapter")
    p.add_argument("dump")
    p.add_argument("--ids", help="safetensors with input_ids (default: the dump file)")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--eager", action="store_true", help="transformers' eager attention (soft-capping, windows as the model defines them)")
    a = p.parse_args()
    dump = load_file(a.dump)
    ids = load_file(a.ids)["input_ids"] if a.ids else dump["input_ids"]
    kw = dict(attn_implementation="eager") if a.eager else {}
    model = AutoModelForCausalLM.from_pretrained(a.base, torch_dtype=torch.float32, **kw)
    if a.adapter == "-":  # a merged folder: the model alone
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=ids.long()).logits.float()
        err = (logits - dump["logits"]).abs().max().item()
        print(f"{a.base}: {type(model).__name__} loaded; logits {list(logits.shape)} max abs diff vs peft dump {err:.3e} (tol {a.tol:g})")
        sys.exit(0 if err <= a.tol else 1)
    model = PeftModel.from_pretrained(model, a.adapter)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids.long()).logits.float()
    err = (logits - dump["logits"]).abs().max().item()
    cfg = model.peft_config["default"]
    print(f"{a.adapter}: PEFT loaded r={cfg.r} alpha={cfg.lora_alpha} targets={cfg.target_modules if isinstance(cfg.target_modules, str) else sorted(cfg.target_modules)} "
          f"rslora={cfg.use_rslora}; logits {list(logits.shape)} max abs diff vs peft dump {err:.3e} (tol {a.tol:g})")
    # the adapter must matter: compare with the base model's logits too
    with model.disable_adapter(), torch.no_grad():
        base = model(input_ids=ids.long()).logits.float()
    print(f"  (adapter changes the logits by up to {(logits - base).abs().max().item():.3e})")
    sys.exit(0 if err <= a.tol else 1)


if __name__ == "__main__":
    main()
