#!/usr/bin/env python3
"""Write a Hugging Face LlamaForCausalLM folder of a given shape with random bf16 weights, quickly,
with the standard library only (for load-time and memory measurements; the model knows nothing).
Default shape: Llama-2-7B (dim 4096, hidden 11008, 32 layers, 32 heads, vocab 32000, untied):
6.74B parameters, 13.5 GB in 4 shards + model.safetensors.index.json.

    python3 tests/make_random_hf.py /tmp/rand7b          # then: python3 tests/measure_hf_load.py /tmp/rand7b

Values: bf16 with random sign and mantissa and an exponent of 2^-7..2^-5 (|w| about 0.01), taken from a
64 MB pool at random offsets (random enough for loading; finite, so every value is accepted).
"""
import argparse
import array
import json
import os
import random
import struct


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=11008)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    C, H, L, NH, V = a.dim, a.hidden, a.layers, a.heads, a.vocab
    KV = a.kv_heads or NH
    HS = C // NH
    rng = random.Random(a.seed)
    n_pool = 1 << 25  # 32M bf16 values = 64 MB
    raw = array.array("H")
    raw.frombytes(rng.randbytes(2 * n_pool))
    for i in range(n_pool):  # sign + mantissa random, exponent 120..122 (2^-7 .. 2^-5)
        u = raw[i]
        raw[i] = (u & 0x807F) | ((120 + u % 3) << 7)
    pool = raw.tobytes()
    pool = pool + pool
    ones = struct.pack("<H", 0x3F80)  # bf16 1.0

    tensors = [("model.embed_tokens.weight", [V, C], None)]
    for l in range(L):
        p = "model.layers.%d." % l
        tensors += [(p + "input_layernorm.weight", [C], "ones"), (p + "post_attention_layernorm.weight", [C], "ones"),
                    (p + "self_attn.q_proj.weight", [NH * HS, C], None), (p + "self_attn.k_proj.weight", [KV * HS, C], None),
                    (p + "self_attn.v_proj.weight", [KV * HS, C], None), (p + "self_attn.o_proj.weight", [C, NH * HS], None),
                    (p + "mlp.gate_proj.weight", [H, C], None), (p + "mlp.up_proj.weight", [H, C], None),
                    (p + "mlp.down_proj.weight", [C, H], None)]
    tensors += [("model.norm.weight", [C], "ones"), ("lm_head.weight", [V, C], None)]
    numel = lambda s: s[0] * (s[1] if len(s) > 1 else 1)
    total = sum(2 * numel(s) for _, s, _ in tensors)
    per_shard = total / a.shards
    shards, cur, size = [], [], 0
    for t in tensors:
        cur.append(t)
        size += 2 * numel(t[1])
        if size >= per_shard and len(shards) < a.shards - 1:
            shards.append(cur)
            cur, size = [], 0
    if cur:
        shards.append(cur)
    os.makedirs(a.out, exist_ok=True)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        header, off = {}, 0
        for name, shape, _ in shard:
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + 2 * numel(shape)]}
            off += 2 * numel(shape)
            weight_map[name] = fname
        header["__metadata__"] = {"format": "pt"}
        h = json.dumps(header).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for name, shape, kind in shard:
                n = 2 * numel(shape)
                if kind == "ones":
                    f.write(ones * numel(shape))
                    continue
                while n > 0:
                    k2 = min(n, len(pool) // 2)
                    o = 2 * rng.randrange(n_pool)
                    f.write(pool[o:o + k2])
                    n -= k2
        print("wrote", fname, "%.2f GB" % (os.path.getsize(os.path.join(a.out, fname)) / 1e9), flush=True)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": C,
           "intermediate_size": H, "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV,
           "vocab_size": V, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print("wrote %s: %.2fB parameters, %.2f GB" % (a.out, total / 2 / 1e9, total / 1e9))


if __name__ == "__main__":
    main()
