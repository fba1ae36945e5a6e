#!/usr/bin/env python3
"""Hostile PEFT adapters from real reports, as fixtures: python3 tests/hostile/make_hostile.py
(standard library only; deterministic). Writes tests/hostile/base/ (a tiny random LlamaForCausalLM
folder: dim 16, 2 layers, 2 heads / 1 kv head, vocab 32) and one adapter folder per case. test_all.c
loads each (test_hostile_adapters); tests/hostile/peft_check.py checks what Hugging Face PEFT does
with the same folders (see README.md there)."""
import json, os, random, shutil, struct

HERE = os.path.dirname(os.path.abspath(__file__))
C, H, L, NH, KVH, V, S = 16, 32, 2, 2, 1, 32, 64
HS = C // NH
rng = random.Random(12)

def floats(n, scale=0.2):
    return [(rng.random() - 0.5) * 2 * scale for _ in range(n)]

def write_st(path, tensors):
    """tensors: {name: (shape, list of floats)} -> F32 safetensors, keys sorted as PEFT's writer does"""
    hdr, off, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for k in sorted(tensors):
        shape, vals = tensors[k]
        raw = struct.pack("<%df" % len(vals), *vals)
        hdr[k] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)

def folder(name):
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d

# the base model
base = folder("base")
t = {"model.embed_tokens.weight": ([V, C], floats(V * C)), "model.norm.weight": ([C], [1.0] * C)}
for l in range(L):
    p = "model.layers.%d." % l
    t[p + "input_layernorm.weight"] = ([C], [1.0] * C)
    t[p + "post_attention_layernorm.weight"] = ([C], [1.0] * C)
    for n, (o, i) in {"self_attn.q_proj": (NH * HS, C), "self_attn.k_proj": (KVH * HS, C), "self_attn.v_proj": (KVH * HS, C), "self_attn.o_proj": (C, NH * HS),
                      "mlp.gate_proj": (H, C), "mlp.up_proj": (H, C), "mlp.down_proj": (C, H)}.items():
        t[p + n + ".weight"] = ([o, i], floats(o * i))
write_st(os.path.join(base, "model.safetensors"), t)
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C, "intermediate_size": H, "num_hidden_layers": L,
       "num_attention_heads": NH, "num_key_value_heads": KVH, "head_dim": HS, "vocab_size": V, "max_position_embeddings": S, "rms_norm_eps": 1e-5,
       "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
       "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
with open(os.path.join(base, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)

# a plain q_proj + v_proj adapter, rank 2, as PEFT 0.21 writes it
R = 2
def lora_tensors(prefix="base_model.model.model.", r=R, a_shape=None):
    out = {}
    for l in range(L):
        for blk, mod, o in [("self_attn", "q_proj", NH * HS), ("self_attn", "v_proj", KVH * HS)]:
            k = "%slayers.%d.%s.%s." % (prefix, l, blk, mod)
            out[k + "lora_A.weight"] = ([r, C], floats(r * C))
            out[k + "lora_B.weight"] = ([o, r], floats(o * r))
    return out
good_t = lora_tensors()
good_cfg = {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "tests/hostile/base", "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "init_lora_weights": True, "layers_pattern": None, "layers_to_transform": None, "lora_alpha": 4, "lora_dropout": 0.0,
            "modules_to_save": None, "peft_type": "LORA", "r": R, "rank_pattern": {}, "revision": None, "target_modules": ["q_proj", "v_proj"],
            "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False}

def adapter(name, cfg, tensors, note):
    d = folder(name)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_st(os.path.join(d, "adapter_model.safetensors"), tensors)
    cases.append((name, note))

cases = []
adapter("good", good_cfg, good_t, "control: a plain PEFT 0.21 adapter (q_proj, v_proj, r=2)")
# rank changed between config and tensors (config says 4, the tensors are rank 2)
adapter("rank_mismatch", dict(good_cfg, r=4), good_t, "config r=4, tensors rank 2")
# an adapter for a base whose vocabulary was resized: modules_to_save embed_tokens/lm_head of V+8 rows (PEFT issues 276, 460, 1710)
t = dict(good_t)
t["base_model.model.model.embed_tokens.modules_to_save.default.weight"] = ([V + 8, C], floats((V + 8) * C))
t["base_model.model.lm_head.modules_to_save.default.weight"] = ([V + 8, C], floats((V + 8) * C))
adapter("vocab_resized", dict(good_cfg, modules_to_save=["embed_tokens", "lm_head"]), t, "modules_to_save of a vocabulary resized to 40 (base has 32)")
# ZeRO-3 saved without gathering: every tensor shape [0] (PEFT issue 1443)
adapter("zero3_empty", good_cfg, {k: ([0], []) for k in good_t}, "every tensor saved with shape [0]")
# keys without the 'model.' segment, and with an extra one (PEFT issue 1579)
adapter("key_without_model", good_cfg, lora_tensors("base_model.model."), "keys base_model.model.layers.N... (no 'model.')")
adapter("key_extra_model", good_cfg, lora_tensors("base_model.model.model.model."), "keys base_model.model.model.model.layers.N... (one 'model.' too many)")
# configs from older and newer PEFT versions: unknown fields (PEFT issue 1337 and later), known ones at their defaults
old = dict(good_cfg, enable_lora=None, merge_weights=False, megatron_config=None, megatron_core="megatron.core", layer_replication=None,
           use_qalora=False, qalora_group_size=16, loftq_config={}, lora_bias=False, exclude_modules=None, trainable_token_indices=None,
           target_parameters=None, alora_invocation_tokens=None, some_field_of_peft_0_99={"x": 1}, peft_version="0.99.0")
adapter("unknown_fields", old, good_t, "old (enable_lora, merge_weights) and future fields; layer_replication/use_qalora/megatron at defaults")
# fields that change the model
adapter("layer_replication", dict(good_cfg, layer_replication=[[0, 2], [1, 2]]), good_t, "layer_replication [[0,2],[1,2]] (PEFT builds 3 layers)")
adapter("use_qalora", dict(good_cfg, use_qalora=True, qalora_group_size=16), good_t, "use_qalora true (QALoRA, for GPTQ bases)")
# an adapter for another architecture: GPT-2's c_attn (the config is a real one, ../shared/reference/configs/peft_gpt2_adapter_config.json)
gcfg = {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "gpt2", "bias": "none", "fan_in_fan_out": True, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_alpha": 8,
        "lora_dropout": 0.0, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA", "r": 8,
        "rank_pattern": {}, "revision": None, "target_modules": ["c_attn"], "task_type": "SEQ_CLS", "use_dora": False, "use_rslora": False}
gt = {}
for l in range(L):
    k = "base_model.model.transformer.h.%d.attn.c_attn." % l
    gt[k + "lora_A.weight"] = ([8, C], floats(8 * C))
    gt[k + "lora_B.weight"] = ([3 * C, 8], floats(3 * C * 8))
adapter("gpt2_c_attn", gcfg, gt, "GPT-2 adapter (c_attn, fan_in_fan_out) on a Llama base")
with open(os.path.join(HERE, "cases.json"), "w") as f:
    json.dump({n: note for n, note in cases}, f, indent=2)
print("wrote tests/hostile/base and %d adapters: %s" % (len(cases), " ".join(n for n, _ in cases)))
# token ids for peft dump and peft_check.py: input_ids [2, 8] int32
ids = [(i * 7 + 3) % V for i in range(16)]
raw = struct.pack("<16i", *ids)
h = json.dumps({"input_ids": {"dtype": "I32", "shape": [2, 8], "data_offsets": [0, len(raw)]}}, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(HERE, "input_ids.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + raw)
