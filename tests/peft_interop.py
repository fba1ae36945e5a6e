#!/usr/bin/env python3
"""Check that adapters written by peft.c load in Hugging Face transformers + PEFT and give the
same logits as `peft dump`, or (ADAPTER_DIR `-`) that a folder written by `peft merge` loads in
transformers with them.  Run on a machine with torch, transformers and peft:

    python3 tests/peft_interop.py BASE_HF_FOLDER ADAPTER_DIR DUMP.safetensors [--tol 1e-4] [--eager]
    python3 tests/peft_interop.py --cases FILE [--tol 1e-4] [--eager]

DUMP.safetensors is `peft dump MODEL -a ADAPTER_DIR -i IN -o DUMP.safetensors`; its input_ids are
read from IN, which must be given as the `input_ids` tensor inside DUMP or with --ids IN.
--cases FILE: one check a line, `NAME BASE ADAPTER_DIR DUMP IDS` (whitespace-separated; IDS `-`: the
dump's own), all in this one process (one torch start for many checks); an adapter must also move the
logits by more than 10 tol (gaussian-initialised or trained adapters); each prints `PASS NAME: ...`
or `FAIL NAME: ...`, and the last line counts them.
Exits 1 if the max abs difference of the logits exceeds --tol (any case's, with --cases).
"""
import argparse
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from peft import PeftModel


def check(base, adapter, dump_path, ids_path, tol, eager, must_change=False):
    """(ok, message): the logits of BASE (+ ADAPTER unless `-`) on the ids against the dump's (must_change: and the
    adapter moves them by more than 10 tol, so that an adapter that was not applied cannot pass)"""
    dump = load_file(dump_path)
    ids = load_file(ids_path)["input_ids"] if ids_path else dump["input_ids"]
    kw = dict(attn_implementation="eager") if eager else {}
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32, **kw)
    if adapter == "-":  # a merged folder: the model alone
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=ids.long()).logits.float()
        err = (logits - dump["logits"]).abs().max().item()
        return err <= tol, f"{base}: {type(model).__name__} loaded; logits {list(logits.shape)} max abs diff vs peft dump {err:.3e} (tol {tol:g})"
    model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids.long()).logits.float()
    err = (logits - dump["logits"]).abs().max().item()
    cfg = model.peft_config["default"]
    msg = (f"{adapter}: PEFT loaded r={cfg.r} alpha={cfg.lora_alpha} targets={cfg.target_modules if isinstance(cfg.target_modules, str) else sorted(cfg.target_modules)} "
           f"rslora={cfg.use_rslora} dora={cfg.use_dora}; logits {list(logits.shape)} max abs diff vs peft dump {err:.3e} (tol {tol:g})")
    # the adapter must matter: compare with the base model's logits too
    with model.disable_adapter(), torch.no_grad():
        base_logits = model(input_ids=ids.long()).logits.float()
    moved = (logits - base_logits).abs().max().item()
    msg += f" (the adapter changes the logits by up to {moved:.3e})"
    return err <= tol and (moved > 10 * tol or not must_change), msg


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", nargs="?")
    p.add_argument("adapter", nargs="?")
    p.add_argument("dump", nargs="?")
    p.add_argument("--ids", help="safetensors with input_ids (default: the dump file)")
    p.add_argument("--cases", help="a file of checks, one a line: NAME BASE ADAPTER_DIR DUMP IDS")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--eager", action="store_true", help="transformers' eager attention (soft-capping, windows as the model defines them)")
    a = p.parse_args()
    if not a.cases:
        if not a.dump:
            p.error("BASE ADAPTER_DIR DUMP, or --cases FILE")
        ok, msg = check(a.base, a.adapter, a.dump, a.ids, a.tol, a.eager)
        print(msg)
        sys.exit(0 if ok else 1)
    npass = nfail = 0
    for line in open(a.cases):
        f = line.split()
        if not f:
            continue
        if len(f) != 5:
            sys.exit(f"{a.cases}: '{line.strip()}': want NAME BASE ADAPTER_DIR DUMP IDS")
        name, base, adapter, dump, ids = f
        try:
            ok, msg = check(base, adapter, dump, None if ids == "-" else ids, a.tol, a.eager, must_change=True)
        except Exception as e:  # a file transformers or PEFT refuses is this case's failure, not the run's
            ok, msg = False, f"{type(e).__name__}: {str(e)[:400]}"
        npass += ok
        nfail += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {msg}", flush=True)
    print(f"peft_interop: {npass} passed, {nfail} failed")
    sys.exit(1 if nfail else 0)


if __name__ == "__main__":
    main()
