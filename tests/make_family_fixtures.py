#!/usr/bin/env python3
"""Reference fixtures for the model families beyond Llama, written by transformers + PEFT (run on a machine with
torch, transformers and peft; made with torch 2.11, transformers 5.17, peft 0.21 on CPU in fp32):

    python3 tests/make_family_fixtures.py [OUT_DIR] [--only qwen2,gemma2] [--bf16]   # default OUT_DIR tests/reference/families

Cases beyond the families' defaults: phi3_dora (use_dora on the fused qkv_proj and gate_up_proj: one magnitude
over the fused rows; grad.<...>.lora_magnitude_vector.weight too), phi3_longrope (rope_scaling longrope with
T = 32 > original_max_position_embeddings = 16: the long factors at every position) and phi3_longrope_short
(the same factors with original 48 >= T: the short ones).

For each family, OUT_DIR/<name>/ holds:
  model/               a tiny random model of the family, save_pretrained (fp32 safetensors + config.json)
  adapter/             a PEFT LoRA adapter (init_lora_weights=False: A and B random) on the family's module names
  reference.safetensors
      input_ids [B,T] int32, targets [B,T] int32 (random), logits_base [B,T,V], logits_adapter [B,T,V],
      loss (mean cross-entropy of logits_adapter against targets), grad.<PEFT key> for every adapter tensor
      (the key as PEFT saves it, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight),
      adamw_losses (10 AdamW steps, lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0, from the saved adapter, same batch),
      logits_merged (after merge_and_unload)
  README.json          the config, the LoRA config and the settings that matter

With --bf16 (on a CUDA machine), from the folders above and reference.safetensors' input_ids and targets:
  reference_bf16.safetensors
      logits_adapter, loss and grad.<PEFT key> of transformers + PEFT run in bf16 on the GPU (model and adapter
      in bf16, as peft.c's --dtype bf16 holds them), as fp32: what bf16 costs transformers itself, the yardstick
      for peft.c's bf16 run (test_all --cuda families)

The families take the settings that make them what they are (the features are on and shorter than T where they
are windows), at a tiny size; norms, biases and q/k norms are randomised (transformers initialises them to
constants, which would hide a wrong formula), and the soft-caps are small enough to bend the curve at these sizes.
Attention runs eager (transformers' reference path: masks, soft-capping and windows as the model defines them).
"""
import argparse
import json
import os
import sys

import torch

B, T = 2, 32
WINDOW = 8  # sliding windows shorter than T

COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.1, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)

FAMILIES = {
    # Qwen2.5-0.5B: bias on q/k/v, tied embeddings, rope_theta 1e6, no window in use
    "qwen2": dict(model_type="qwen2", num_hidden_layers=3, rope_theta=1e6, tie_word_embeddings=True,
                  use_sliding_window=False,
                  targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    # Qwen3-0.6B: q_norm/k_norm per head before RoPE, head_dim 32 with hidden 64 and 4 heads (decoupled), tied
    "qwen3": dict(model_type="qwen3", num_hidden_layers=3, head_dim=32, rope_theta=1e6, tie_word_embeddings=True,
                  attention_bias=False, use_sliding_window=False,
                  targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    # Gemma 2: (1+w) norms, four a layer, GeGLU tanh, embed * sqrt(C), query_pre_attn_scalar, both soft-caps,
    # sliding window on alternating layers (transformers' default layer_types), tied
    "gemma2": dict(model_type="gemma2", num_hidden_layers=4, head_dim=16, query_pre_attn_scalar=24,
                   hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=4.0, final_logit_softcapping=3.0,
                   sliding_window=WINDOW, tie_word_embeddings=True,
                   targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    # Gemma 3 text: as Gemma 2 with q/k norms, local (sliding) and global RoPE bases, its sliding pattern, no caps
    "gemma3": dict(model_type="gemma3_text", num_hidden_layers=4, head_dim=16, query_pre_attn_scalar=16,
                   hidden_activation="gelu_pytorch_tanh", sliding_window=WINDOW, rope_theta=1e6,
                   rope_local_base_freq=1e4, tie_word_embeddings=True,
                   layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                   targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    # Phi-3: fused qkv_proj and gate_up_proj, PEFT on the fused names, untied
    "phi3": dict(model_type="phi3", num_hidden_layers=3, tie_word_embeddings=False, rope_scaling=None,
                 original_max_position_embeddings=128, sliding_window=None,
                 targets=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
    # Mistral with a window shorter than T
    "mistral_swa": dict(model_type="mistral", num_hidden_layers=3, sliding_window=WINDOW, tie_word_embeddings=False,
                        targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    # (cases added after the families keep the families' seeds: seed = 100 + the case's index)
    # Phi-3 with DoRA on every module (PEFT's use_dora on the fused qkv_proj / gate_up_proj)
    "phi3_dora": dict(model_type="phi3", num_hidden_layers=3, tie_word_embeddings=False, rope_scaling=None,
                      original_max_position_embeddings=128, sliding_window=None, use_dora=True,
                      targets=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
    # Phi-3 128k / 3.5's longrope at a tiny size: head_dim 16 (8 factors each), max_position_embeddings 128 over
    # original 16 (factor 8: attention factor sqrt(1 + ln 8 / ln 16)); T = 32 > 16 takes the long factors
    "phi3_longrope": dict(model_type="phi3", num_hidden_layers=3, tie_word_embeddings=False, sliding_window=None,
                          original_max_position_embeddings=16, longrope=True,
                          targets=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
    # the same factors with original 48 >= T = 32: the short factors (factor 128/48, its attention factor)
    "phi3_longrope_short": dict(model_type="phi3", num_hidden_layers=3, tie_word_embeddings=False, sliding_window=None,
                                original_max_position_embeddings=48, longrope=True,
                                targets=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
}


def randomise_constants(model, gen):
    """norm weights, biases and q/k norms get random values around what transformers sets them to"""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms (ones, or zeros for Gemma's (1 + w)), biases (zeros)
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def peft_key(name):
    return name.replace(".default", "")


def make(name, spec, out_root, seed):
    from transformers import AutoConfig, AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model, PeftModel
    from safetensors.torch import save_file

    spec = dict(spec)
    targets = spec.pop("targets")
    model_type = spec.pop("model_type")
    use_dora = spec.pop("use_dora", False)
    longrope = spec.pop("longrope", False)
    kw = dict(COMMON)
    kw.update(spec)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if longrope:  # factors far from 1 and from each other, so that the wrong table (or none) shows in the logits
        half = kw["hidden_size"] // kw["num_attention_heads"] // 2
        short = [round(1.0 + 0.15 * i, 4) for i in range(half)]
        long = [round(1.0 + 1.7 * i + 0.3 * i * i, 4) for i in range(half)]
        rs = {"rope_type": "longrope", "short_factor": short, "long_factor": long,
              "original_max_position_embeddings": kw["original_max_position_embeddings"]}
        if int(__import__("transformers").__version__.split(".")[0]) >= 5:
            kw["rope_parameters"] = dict(rs, rope_theta=10000.0)  # transformers 5's spelling
            kw.pop("rope_scaling", None)
        else:
            kw["rope_scaling"] = {"type": "longrope", "short_factor": short, "long_factor": long}
    cfg = AutoConfig.for_model(model_type, **kw)
    if longrope:  # the config must carry longrope, not silently drop it
        rp = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None)
        assert rp and rp.get("rope_type", rp.get("type")) == "longrope", rp
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32).float()
    randomise_constants(model, gen)
    model.eval()
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
    V = cfg.vocab_size
    ids = torch.randint(0, V, (B, T), generator=gen)
    tg = torch.randint(0, V, (B, T), generator=gen)
    with torch.no_grad():
        logits_base = model(input_ids=ids).logits.float()

    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, init_lora_weights=False,
                      use_dora=use_dora, task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # B random too (init_lora_weights=False does that; make sure it is not zero)
        for n, p in pm.named_parameters():
            if "lora_B" in n and float(p.abs().max()) == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            if "lora_magnitude_vector" in n:  # DoRA: magnitude away from ||W + s B A|| so that g != 1 per row
                p.mul_(1 + 0.2 * torch.rand(p.shape, generator=gen))
    pm.save_pretrained(os.path.join(out, "adapter"))
    pm.train()  # dropout is 0: train() only turns autograd bookkeeping on, the maths is eval's
    logits = pm(input_ids=ids).logits.float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tg.reshape(-1))
    loss.backward()
    ref = {"input_ids": ids.to(torch.int32), "targets": tg.to(torch.int32), "logits_base": logits_base.contiguous(),
           "logits_adapter": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for n, p in pm.named_parameters():
        if p.requires_grad:
            ref["grad." + peft_key(n)] = p.grad.detach().clone().contiguous()
    n_grads = sum(1 for k in ref if k.startswith("grad."))

    # 10 AdamW steps from the saved adapter on the same batch
    base2 = AutoModelForCausalLM.from_pretrained(os.path.join(out, "model"), attn_implementation="eager", dtype=torch.float32)
    pm2 = PeftModel.from_pretrained(base2, os.path.join(out, "adapter"), is_trainable=True)
    opt = torch.optim.AdamW([p for p in pm2.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        l = torch.nn.functional.cross_entropy(pm2(input_ids=ids).logits.float().reshape(-1, V), tg.reshape(-1))
        l.backward()
        opt.step()
        losses.append(float(l))
    ref["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)

    # merged
    base3 = AutoModelForCausalLM.from_pretrained(os.path.join(out, "model"), attn_implementation="eager", dtype=torch.float32)
    merged = PeftModel.from_pretrained(base3, os.path.join(out, "adapter")).merge_and_unload()
    merged.eval()
    with torch.no_grad():
        ref["logits_merged"] = merged(input_ids=ids).logits.float().contiguous()
    save_file(ref, os.path.join(out, "reference.safetensors"))

    # how much the caps bend, so a reader can see the soft-cap is exercised
    notes = {}
    if getattr(cfg, "final_logit_softcapping", None):
        c = cfg.final_logit_softcapping
        notes["final_softcap_share_above_half_cap"] = float((logits_base.abs() > 0.5 * c).float().mean())
    with torch.no_grad():
        d = (logits - logits_base).abs().max().item()
    if longrope:  # which table this T takes (transformers: long when max(position_ids) + 1 > original)
        notes["longrope_table"] = "long" if T > kw["original_max_position_embeddings"] else "short"
        rot = model.model.rotary_emb
        notes["attention_scaling"] = float(getattr(rot, "attention_scaling", float("nan")))
    readme = {"family": name, "transformers_config": json.loads(cfg.to_json_string()), "lora": {"r": 4, "lora_alpha": 8,
              "target_modules": targets, "init_lora_weights": False, "use_dora": use_dora}, "B": B, "T": T, "seed": seed,
              "n_grads": n_grads, "max_abs_adapter_minus_base_logits": d, **notes,
              "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                           "peft": __import__("peft").__version__}}
    with open(os.path.join(out, "README.json"), "w") as f:
        json.dump(readme, f, indent=1, sort_keys=True)
    rope = {k: v for k, v in cfg.to_dict().items() if "rope" in k or "window" in k or "layer_types" in k or "softcap" in k}
    print(f"{name}: {rope}")
    print(f"{name}: {type(model).__name__} V={V} loss {float(loss):.6f} grads {n_grads} "
          f"adapter-vs-base max {d:.3e} adamw {losses[0]:.5f}->{losses[-1]:.5f} {notes}")


def make_bf16(name, out_root):
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    from safetensors.torch import load_file, save_file

    out = os.path.join(out_root, name)
    ref = load_file(os.path.join(out, "reference.safetensors"))
    ids, tg = ref["input_ids"].long().cuda(), ref["targets"].long().cuda()
    base = AutoModelForCausalLM.from_pretrained(os.path.join(out, "model"), attn_implementation="eager", dtype=torch.bfloat16).cuda()
    pm = PeftModel.from_pretrained(base, os.path.join(out, "adapter"), is_trainable=True).to(torch.bfloat16)
    pm.train()
    logits = pm(input_ids=ids).logits
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, V), tg.reshape(-1))
    loss.backward()
    r = {"logits_adapter": logits.detach().float().cpu().contiguous(), "loss": loss.detach().float().cpu().reshape(1)}
    for n, p in pm.named_parameters():
        if p.requires_grad:
            r["grad." + peft_key(n)] = p.grad.detach().float().cpu().contiguous()
    save_file(r, os.path.join(out, "reference_bf16.safetensors"))
    def rel(a, b):
        return float((a - b).norm() / b.norm())
    worst = max((rel(v, ref[k]), k) for k, v in r.items() if k.startswith("grad."))
    print(f"{name}: bf16 logits rel L2 {rel(r['logits_adapter'], ref['logits_adapter']):.2e}, loss {float(loss):.6f} "
          f"(fp32 {float(ref['loss']):.6f}), worst grad rel L2 {worst[0]:.2e} ({worst[1]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="tests/reference/families")
    ap.add_argument("--only", default="")
    ap.add_argument("--bf16", action="store_true", help="write reference_bf16.safetensors beside each existing reference (CUDA)")
    a = ap.parse_args()
    names = [n for n in FAMILIES if not a.only or n in a.only.split(",")]
    failed = 0
    for n in names:
        try:
            if a.bf16:
                make_bf16(n, a.out)
            else:
                make(n, FAMILIES[n], a.out, seed=100 + list(FAMILIES).index(n))
        except Exception as e:  # one family's failure must not hide the others'
            import traceback
            traceback.print_exc()
            print(f"{n}: FAILED: {e}")
            failed += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
