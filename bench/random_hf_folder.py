#!/usr/bin/env python3
"""Write a Hugging Face Llama folder of random weights (config.json, model-0000N-of-0000M.safetensors shards
and their model.safetensors.index.json) for timing model loading; standard library only.

    python3 bench/random_hf_folder.py OUT [--shape llama2-7b | dim=D,hidden=H,layers=L,heads=NH[,kv_heads=KVH][,vocab=V]]
                                          [--dtype bf16|f32] [--shard-gb 5]

The values are a pool of 1M uniform values (std 0.02) repeated, norms 1: loading reads every byte, as it
would a real checkpoint's. transformers and peft.c load the folder alike (LlamaForCausalLM, untied)."""
import json
import os
import random
import struct
import sys

SHAPES = {
    "llama2-7b": dict(dim=4096, hidden=11008, layers=32, heads=32, kv_heads=32, vocab=32000),
    "llama2-13b": dict(dim=5120, hidden=13824, layers=40, heads=40, kv_heads=40, vocab=32000),
    "tinyllama": dict(dim=2048, hidden=5632, layers=22, heads=32, kv_heads=4, vocab=32000),
}


def parse_shape(s):
    if s in SHAPES:
        return dict(SHAPES[s])
    d = dict(kv_heads=None, vocab=32000)
    for kv in s.split(","):
        k, v = kv.split("=")
        d[k] = int(v)
    d["kv_heads"] = d["kv_heads"] or d["heads"]
    return d


def tensors(c):
    C, H, hd = c["dim"], c["hidden"], c["dim"] // c["heads"]
    KD = c["kv_heads"] * hd
    yield "model.embed_tokens.weight", [c["vocab"], C]
    for l in range(c["layers"]):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", [C]
        yield p + "self_attn.q_proj.weight", [C, C]
        yield p + "self_attn.k_proj.weight", [KD, C]
        yield p + "self_attn.v_proj.weight", [KD, C]
        yield p + "self_attn.o_proj.weight", [C, C]
        yield p + "post_attention_layernorm.weight", [C]
        yield p + "mlp.gate_proj.weight", [H, C]
        yield p + "mlp.up_proj.weight", [H, C]
        yield p + "mlp.down_proj.weight", [C, H]
    yield "model.norm.weight", [C]
    yield "lm_head.weight", [c["vocab"], C]


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    out, shape, dtype, shard_gb = args[0], "llama2-7b", "bf16", 5.0
    i = 1
    while i < len(args):
        if args[i] == "--shape": shape = args[i + 1]
        elif args[i] == "--dtype": dtype = args[i + 1]
        elif args[i] == "--shard-gb": shard_gb = float(args[i + 1])
        else: sys.exit(f"unknown argument {args[i]}")
        i += 2
    c = parse_shape(shape)
    es, st = (2, "BF16") if dtype == "bf16" else (4, "F32")
    rng = random.Random(0)
    vals = [(rng.random() * 2 - 1) * 0.034641016151377546 for _ in range(1 << 20)]
    raw = struct.pack("<%df" % len(vals), *vals)
    pool = raw if es == 4 else b"".join(raw[4 * k + 2:4 * k + 4] for k in range(len(vals)))  # bf16: the high halves
    one = struct.pack("<f", 1.0)
    one = one if es == 4 else one[2:]
    # shards of at most shard_gb, in order
    shards, cur, size = [], [], 0
    for name, shp in tensors(c):
        n = 1
        for d in shp: n *= d
        if cur and size + n * es > shard_gb * 1e9:
            shards.append(cur); cur, size = [], 0
        cur.append((name, shp, n)); size += n * es
    shards.append(cur)
    os.makedirs(out, exist_ok=True)
    weight_map, total = {}, 0
    for si, sh in enumerate(shards):
        fn = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        hdr, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shp, n in sh:
            hdr[name] = {"dtype": st, "shape": shp, "data_offsets": [off, off + n * es]}
            off += n * es
            weight_map[name] = fn
        h = json.dumps(hdr, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(out, fn + ".tmp"), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for name, shp, n in sh:
                if len(shp) == 1:
                    f.write(one * n)
                    continue
                left = n * es
                while left:
                    k = min(left, len(pool))
                    f.write(pool[:k]); left -= k
        os.replace(os.path.join(out, fn + ".tmp"), os.path.join(out, fn))
        total += off
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    hd = c["dim"] // c["heads"]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c["dim"], "intermediate_size": c["hidden"],
           "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"], "num_key_value_heads": c["kv_heads"], "head_dim": hd,
           "vocab_size": c["vocab"], "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16" if es == 2 else "float32",
           "bos_token_id": 1, "eos_token_id": 2}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    print(f"{out}: {len(shards)} shards, {total / 1e9:.2f} GB ({dtype})")


if __name__ == "__main__":
    main()
