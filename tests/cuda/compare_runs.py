#!/usr/bin/env python3
"""Compare two peft.c training outputs (tests/cuda/multi_gpu.sh).
  compare_runs.py adapter DIR_A DIR_B TOL   adapter_model.safetensors: ||a-b||/||b|| over the whole
                                            adapter (exit 1 above TOL), and per tensor, and max|a-b|/max|b|
  compare_runs.py val DIR_A DIR_B TOL       the held-out losses of log.jsonl, step by step: max relative
                                            difference; exit 1 above TOL
Standard library only (the safetensors header is JSON, the tensors F32)."""
import json, math, struct, sys


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v["dtype"]
        a, b = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((b - a) // 4), data[a:b])
    return out


def main():
    kind, a, b, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if kind == "adapter":
        ta, tb = read_st(a + "/adapter_model.safetensors"), read_st(b + "/adapter_model.safetensors")
        assert ta.keys() == tb.keys(), "different tensors"
        worst_norm = worst_max = 0.0
        per = []
        for k in ta:
            x, y = ta[k], tb[k]
            num = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y)))
            den = math.sqrt(sum(q * q for q in y)) or 1.0
            mx = max(abs(p - q) for p, q in zip(x, y)) / (max(abs(q) for q in y) or 1.0)
            worst_norm, worst_max = max(worst_norm, num / den), max(worst_max, mx)
            per.append((num / den, k))
        whole = math.sqrt(sum(sum((p - q) ** 2 for p, q in zip(ta[k], tb[k])) for k in ta) / (sum(sum(q * q for q in tb[k]) for k in ta) or 1.0))
        per.sort(reverse=True)
        print(f"adapter {a} vs {b}: {len(ta)} tensors, whole adapter ||a-b||/||b|| {whole:.2e}; largest per tensor ||a-b||/||b|| {worst_norm:.2e}, "
              f"max|a-b|/max|b| {worst_max:.2e} (bar {tol:g}); worst: " + ", ".join(f"{k.replace('base_model.model.model.', '')} {e:.1e}" for e, k in per[:3]))
        sys.exit(0 if whole <= tol else 1)  # the bar: the whole adapter, ||a-b|| / ||b||
    def vals(d):
        out = {}
        for line in open(d + "/log.jsonl"):
            r = json.loads(line)
            if r.get("val_loss") is not None:
                out[r["step"]] = r["val_loss"]
        return out
    va, vb = vals(a), vals(b)
    steps = sorted(set(va) & set(vb))
    worst = max(abs(va[s] - vb[s]) / abs(vb[s]) for s in steps)
    print(f"held-out loss {a} vs {b}: {len(steps)} evaluations (steps {steps[0]}..{steps[-1]}), "
          f"{vb[steps[0]]:.4f} -> {vb[steps[-1]]:.4f} vs {va[steps[0]]:.4f} -> {va[steps[-1]]:.4f}; largest relative difference {worst:.2e} (bar {tol:g})")
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
