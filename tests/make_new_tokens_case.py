#!/usr/bin/env python3
"""Make the cases that tests/check_new_tokens_peft.py checks on a machine with transformers + PEFT:
for an untied and a tied random Llama (Hugging Face folder, the 800-piece tests/spbpe tokenizer),
`peft train --new-special-tokens "<|im_start|>,<|im_end|>"` writes an adapter (LoRA + the grown
embed_tokens/lm_head as modules_to_save + tokenizer.json beside it), and `peft dump` writes the logits
of the base + adapter for ids that include the two new tokens.

Standard library only; needs ./peft (make). Usage: python3 tests/make_new_tokens_case.py [-o tests/new_tokens]
Writes OUT/<untied|tied>/{base/, adapter/, ids.safetensors, dump.safetensors}.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys


def write_safetensors(path, tensors):  # tensors: name -> (dtype, shape, bytes)
    header, off, blobs = {}, 0, []
    for name, (dt, shape, data) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def make_base(d, tied, seed):
    os.makedirs(d, exist_ok=True)
    C, H, L, NH, KV, V = 32, 64, 2, 4, 2, 800
    HS = C // NH
    rng = random.Random(seed)
    rnd = lambda n: f32([rng.uniform(-0.1, 0.1) for _ in range(n)])
    t = {"model.embed_tokens.weight": ("F32", [V, C], rnd(V * C)), "model.norm.weight": ("F32", [C], f32([1.0] * C))}
    for l in range(L):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = ("F32", [C], f32([1.0] * C))
        t[p + "post_attention_layernorm.weight"] = ("F32", [C], f32([1.0] * C))
        t[p + "self_attn.q_proj.weight"] = ("F32", [NH * HS, C], rnd(NH * HS * C))
        t[p + "self_attn.k_proj.weight"] = ("F32", [KV * HS, C], rnd(KV * HS * C))
        t[p + "self_attn.v_proj.weight"] = ("F32", [KV * HS, C], rnd(KV * HS * C))
        t[p + "self_attn.o_proj.weight"] = ("F32", [C, NH * HS], rnd(C * NH * HS))
        t[p + "mlp.gate_proj.weight"] = ("F32", [H, C], rnd(H * C))
        t[p + "mlp.up_proj.weight"] = ("F32", [H, C], rnd(H * C))
        t[p + "mlp.down_proj.weight"] = ("F32", [C, H], rnd(C * H))
    if not tied:
        t["lm_head.weight"] = ("F32", [V, C], rnd(V * C))
    write_safetensors(os.path.join(d, "model.safetensors"), t)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": C,
           "intermediate_size": H, "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV,
           "head_dim": HS, "vocab_size": V, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": tied, "attention_bias": False, "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "float32"}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copy("tests/spbpe/tokenizer.json", os.path.join(d, "tokenizer.json"))


def main():
    out = "tests/new_tokens"
    if len(sys.argv) == 3 and sys.argv[1] == "-o":
        out = sys.argv[2]
    text = os.path.join(out, "train.txt")
    os.makedirs(out, exist_ok=True)
    with open(text, "w") as f:
        for i in range(20):
            f.write("<|im_start|>user\nthe quick brown fox %d<|im_end|>\n<|im_start|>assistant\njumps over the lazy dog<|im_end|>\n\n" % i)
    for case, tied in (("untied", False), ("tied", True)):
        d = os.path.join(out, case)
        shutil.rmtree(d, ignore_errors=True)
        make_base(os.path.join(d, "base"), tied, 7 if tied else 5)
        subprocess.run(["./peft", "train", os.path.join(d, "base"), text, "-o", os.path.join(d, "adapter"),
                        "--new-special-tokens", "<|im_start|>,<|im_end|>", "--targets", "all-linear", "-r", "4",
                        "--steps", "20", "-b", "4", "-T", "24", "--val-frac", "0", "--lr", "0.02", "-s", "3"], check=True)
        for junk in ("optimizer.safetensors", "trainer_state.json", "log.jsonl"):
            p = os.path.join(d, "adapter", junk)
            if os.path.exists(p):
                os.remove(p)
        rng = random.Random(11)
        ids = [rng.randrange(800) for _ in range(32)]
        ids[0], ids[5], ids[9], ids[20], ids[31] = 800, 801, 800, 801, 800  # the new tokens
        write_safetensors(os.path.join(d, "ids.safetensors"), {"input_ids": ("I32", [2, 16], struct.pack("<32i", *ids))})
        subprocess.run(["./peft", "dump", os.path.join(d, "base"), "-a", os.path.join(d, "adapter"),
                        "-i", os.path.join(d, "ids.safetensors"), "-o", os.path.join(d, "dump.safetensors")], check=True)
    os.remove(text)
    print("wrote", out)


if __name__ == "__main__":
    main()
