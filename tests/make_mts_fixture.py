#!/usr/bin/env python3
"""Fixture for modules_to_save: a PEFT 0.21 LoRA adapter on an untied copy of stories260K that also
saves full replacements of embed_tokens and lm_head, plus reference logits from transformers+PEFT.

    python3 tests/make_mts_fixture.py BASE_HF_FOLDER OUT_DIR

Writes OUT_DIR/adapter/{adapter_config.json,adapter_model.safetensors} and OUT_DIR/reference.safetensors
(input_ids [1,16], logits [1,16,V]). The untied base is made from BASE by copying the embedding into
lm_head; peft.c's test builds the same untied model itself.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

base, out = sys.argv[1], sys.argv[2]
torch.manual_seed(4)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
model.config.tie_word_embeddings = False
model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens", "lm_head"])
pm = get_peft_model(model, cfg)
with torch.no_grad():
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.05)
        if "modules_to_save" in name:
            p.add_(torch.randn_like(p) * 0.05)
pm.eval()
ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    logits = pm(input_ids=ids).logits.float()
pm.save_pretrained(os.path.join(out, "adapter"))
save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous()}, os.path.join(out, "reference.safetensors"))
print("saved keys:", sorted(__import__("safetensors").safe_open(os.path.join(out, "adapter", "adapter_model.safetensors"), "pt").keys()))
