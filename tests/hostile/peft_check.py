#!/usr/bin/env python3
"""What Hugging Face PEFT does with the hostile adapters of tests/hostile (made by make_hostile.py), next to
what peft.c does (test_all.c: test_hostile_adapters). Needs torch, transformers and peft; run from the
repository root: python3 tests/hostile/peft_check.py [--peft ./peft]. Prints one PASS/FAIL line per case:
  errors in PEFT too:        rank_mismatch, vocab_resized, zero3_empty (size mismatch), gpt2_c_attn (target modules not found)
  PEFT loads nothing:        key_without_model, key_extra_model ("Found missing adapter keys", logits = the base model's)
  PEFT accepts:              unknown_fields (logits = good's); with ./peft built, peft.c's logits for good and unknown_fields
                             are compared with PEFT's (peft dump)
  informational (INFO):      layer_replication, use_qalora: what PEFT does (peft.c refuses both)"""
import json, os, struct, subprocess, sys, tempfile, warnings

import torch
from transformers import LlamaForCausalLM
from peft import PeftModel

H = "tests/hostile"
ids = torch.tensor([[(i * 7 + 3) % 32 for i in range(8)], [(i * 7 + 3) % 32 for i in range(8, 16)]])
fails = 0

def result(ok, name, msg):
    global fails
    print("%s %s: %s" % ("PASS" if ok else "FAIL", name, msg))
    fails += 0 if ok else 1

def base_model():
    return LlamaForCausalLM.from_pretrained(H + "/base", torch_dtype=torch.float32).eval()

with torch.no_grad():
    base_logits = base_model()(ids).logits

def load(case):
    """(logits or None, error text or None, warnings)"""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            m = PeftModel.from_pretrained(base_model(), os.path.join(H, case)).eval()
            with torch.no_grad():
                return m(ids).logits, None, [str(x.message) for x in w]
        except Exception as e:  # what PEFT raises
            return None, "%s: %s" % (type(e).__name__, str(e)), [str(x.message) for x in w]

good, err, _ = load("good")
if good is None:
    result(False, "good", "PEFT does not load the control adapter: %s" % err)
    sys.exit(1)
result((good - base_logits).abs().max().item() > 1e-4, "good", "PEFT loads the control adapter; it changes the logits")
# (PEFT 0.21 on a resized vocabulary: a KeyError for the missing embed_tokens weight of the base)
for case, what in [("rank_mismatch", "size mismatch"), ("vocab_resized", "embed_tokens"), ("zero3_empty", "size mismatch"), ("gpt2_c_attn", "not found")]:
    lg, err, _ = load(case)
    first = (err or "").splitlines()[0][:300] if err else ""
    result(lg is None and what in (err or ""), case, "PEFT refuses it too: %s" % first if lg is None else "PEFT ACCEPTS it (peft.c refuses)")
for case in ["key_without_model", "key_extra_model"]:
    lg, err, w = load(case)
    missing = any("missing adapter keys" in x for x in w)
    same = lg is not None and (lg - base_logits).abs().max().item() == 0
    result(missing and same, case, "PEFT warns \"Found missing adapter keys\" and runs the base model (logits equal: %s); peft.c refuses it with an error" % same if lg is not None else "PEFT raised %s" % err)
lg, err, w = load("unknown_fields")
result(lg is not None and torch.equal(lg, good), "unknown_fields", "PEFT accepts it with the same logits as good" if lg is not None else "PEFT raised %s" % err)
for case in ["layer_replication", "use_qalora"]:
    lg, err, _ = load(case)
    print("INFO %s: PEFT %s; peft.c refuses it" % (case, "raises %s" % err if lg is None else "loads it; logits differ from good by %.3g" % (lg - good).abs().max().item()))
# peft.c's logits for the adapters both accept, against PEFT's
peft_bin = sys.argv[sys.argv.index("--peft") + 1] if "--peft" in sys.argv else "./peft"
if os.path.exists(peft_bin):
    for case, want in [("good", good), ("unknown_fields", good)]:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "o.safetensors")
            r = subprocess.run([peft_bin, "dump", H + "/base", "-a", H + "/" + case, "-i", H + "/input_ids.safetensors", "-o", out], capture_output=True, text=True)
            if r.returncode:
                result(False, case + " (peft.c)", r.stderr.strip())
                continue
            b = open(out, "rb").read()
            n = struct.unpack("<Q", b[:8])[0]
            hdr = json.loads(b[8:8 + n])
            s, e = hdr["logits"]["data_offsets"]
            got = torch.tensor(struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])).reshape(want.shape)
            diff = (got - want).abs().max().item()
            result(diff < 1e-4, case + " (peft.c vs PEFT)", "max abs logit difference %.2e" % diff)
else:
    print("SKIP peft.c comparison: %s not built" % peft_bin)
print("%d failed" % fails)
sys.exit(1 if fails else 0)
