#!/usr/bin/env python3
"""Write a llama2.c version-1 .bin (fp32) with random weights, quickly, with the standard library only.
Default shape: stories110M's (dim 768, hidden 2048, 12 layers, 12 heads, vocab 32000, seq_len 1024,
shared classifier), about 110M parameters (440 MB). Used for the memory and speed measurements of
quantized generation (QUANT.md):

    python3 tests/make_random_model.py /tmp/rand110M.bin
    python3 tests/make_random_model.py /tmp/small.bin --dim 64 --hidden 172 --layers 2 --heads 4 --vocab 512
"""
import argparse, array, random, struct, sys

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=0, help="default: --heads")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    kv = a.kv_heads or a.heads
    C, H, L, V = a.dim, a.hidden, a.layers, a.vocab
    hs = C // a.heads
    rng = random.Random(a.seed)
    # a pool of 2^20 gaussian values; every tensor is read from it at random offsets (fast, and
    # random enough for memory and speed measurements)
    pool = array.array("f", [rng.gauss(0.0, a.std) for _ in range(1 << 20)])
    pool_bytes = pool.tobytes() * 2
    def write_random(f, n):
        while n > 0:
            k = min(n, len(pool) - 1)
            off = rng.randrange(len(pool))
            f.write(pool_bytes[4 * off: 4 * (off + k)])
            n -= k
    def write_ones(f, n):
        f.write(array.array("f", [1.0]) .tobytes() * n)
    with open(a.out, "wb") as f:
        hdr = struct.pack("<Ii7iB", 0x616B3432, 1, C, H, L, a.heads, kv, V, a.seq_len, 1)
        f.write(hdr + b"\0" * (256 - len(hdr)))
        write_ones(f, L * C)   # rms_att
        write_ones(f, L * C)   # rms_ffn
        write_ones(f, C)       # rms_final
        write_random(f, V * C) # embed (shared with the classifier)
        for n in (C * a.heads * hs, C * kv * hs, C * kv * hs, a.heads * hs * C, H * C, C * H, H * C):
            write_random(f, L * n)  # wq, wk, wv, wo, w1, w2, w3
    nparams = 2 * L * C + C + V * C + L * (C * a.heads * hs * 2 + 2 * C * kv * hs + 3 * H * C)
    print(f"wrote {a.out}: dim {C}, hidden {H}, {L} layers, {a.heads} heads, vocab {V}: {nparams / 1e6:.1f}M parameters", file=sys.stderr)

if __name__ == "__main__":
    main()
