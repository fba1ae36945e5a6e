#!/usr/bin/env python3
"""Reference outputs for peft.c's HQQ quantizer (tests/fixtures/hqq_reference.json).

An independent transcription of HQQ's default quantizer (mobiusml/hqq: Quantizer.quantize with
optimize=True, axis=1 groups of consecutive weights, and optimize_weights_proximal with its defaults
lp_norm 0.7, beta 10, kappa 1.01, 20 iterations, early stop when the mean |W - W_r| stops falling),
in plain Python with every operation rounded to float32 the way HQQ's CPU path (float32 tensors)
computes it; error sums in double. Scale (1/scale_inv) and zero are then rounded to fp16 (HQQ's meta
dtype) and the codes computed from the rounded values, as peft.c stores them.

Standard library only. Usage: python3 tests/make_hqq_reference.py [-o tests/fixtures/hqq_reference.json]
"""
import json
import struct
import sys


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f16(x):  # round to fp16 (nearest even), back to float; also the bits
    b = struct.pack("<e", x)
    return struct.unpack("<e", b)[0], struct.unpack("<H", b)[0]


def shrink(x, beta, p):  # sign(x) * relu(|x| - |x|^(p-1) / beta)
    a = abs(x)
    if a == 0:
        return 0.0
    v = f32(a - f32(f32(a ** p) / beta))
    return (v if x > 0 else -v) if v > 0 else 0.0


def hqq(w, bs, bits):
    n = len(w)
    qmax = float(2 ** bits - 1)
    groups = [(i, min(i + bs, n)) for i in range(0, n, bs)]
    si, z = [], []
    for i0, i1 in groups:  # min-max fit, inverse scale clamped at 2e4 as HQQ does
        lo, hi = min(w[i0:i1]), max(w[i0:i1])
        r = f32(hi - lo)
        s = f32(qmax / r) if r > 0 else float("inf")
        s = min(s, 2e4)
        si.append(s)
        z.append(f32(-lo * s))
    p = f32(f32(0.7) - 1.0)
    beta, kappa, best, iters = f32(10.0), f32(1.01), 1e4, 0
    for it in range(20):
        err = 0.0
        for g, (i0, i1) in enumerate(groups):
            zsum, e = 0.0, 0.0
            for i in range(i0, i1):
                v = w[i]
                q = float(round(f32(f32(v * si[g]) + z[g])))
                q = min(max(q, 0.0), qmax)
                wr = f32(f32(q - z[g]) / si[g])
                we = shrink(f32(v - wr), beta, p)
                zsum += f32(q - f32(f32(v - we) * si[g]))
                e += abs(f32(v - wr))
            z[g] = f32(zsum / (i1 - i0))
            err += e
        beta = f32(beta * kappa)
        err /= n
        iters = it + 1
        if err < best:
            best = err
        else:
            break
    scales, zeros, codes = [], [], [0] * n
    for g, (i0, i1) in enumerate(groups):
        s, sb = f16(f32(1.0 / si[g]))
        zz, zb = f16(z[g])
        scales.append(sb)
        zeros.append(zb)
        for i in range(i0, i1):
            q = float(round(f32(f32(w[i] / s) + zz)))
            codes[i] = int(min(max(q, 0.0), qmax))
    return {"scale_f16": scales, "zero_f16": zeros, "q": codes, "iterations": iters}


def main():
    out = "tests/fixtures/hqq_reference.json"
    if len(sys.argv) == 3 and sys.argv[1] == "-o":
        out = sys.argv[2]
    rows, cols, bs = 24, 96, 64  # groups of 64 cross rows of 96
    state = 12345
    w = []
    for i in range(rows * cols):  # sums of three uniforms (bell-shaped), LCG
        acc = 0.0
        for _ in range(3):
            state = (state * 6364136223846793005 + 1442695040888963407) % 2 ** 64
            acc += (state >> 40) / 2 ** 24
        w.append(f32((acc - 1.5) * 0.05))
    w[70] = f32(0.9)  # an outlier
    for i in range(640, 704):  # a constant group
        w[i] = f32(0.03)
    ref = {"rows": rows, "cols": cols, "group_size": bs, "w": w, "hqq4": hqq(w, bs, 4), "hqq8": hqq(w, bs, 8),
           "made_by": "tests/make_hqq_reference.py"}
    with open(out, "w") as f:
        json.dump(ref, f)
    print("wrote", out, "iterations: hqq4", ref["hqq4"]["iterations"], "hqq8", ref["hqq8"]["iterations"])


if __name__ == "__main__":
    main()
