#!/usr/bin/env bash
# Checks of issue 11 that need transformers + PEFT (the GPU machine): run from the repository root after `make`.
#  1. the chat-template fixtures equal transformers' own renders (tests/chat/renders.json was made with jinja2
#     when transformers was missing);
#  2. an adapter trained by peft.c with a regex target_modules and modules_to_save (embed_tokens, lm_head)
#     loads in PEFT and gives peft dump's logits (tests/peft_interop.py).
# Prints PASS/FAIL lines; exits non-zero on a failure.
set -u
fail=0
python3 tests/make_chat_fixtures.py --check --require-transformers | tail -1 | grep -q '^PASS' && echo "PASS chat templates == transformers' apply_chat_template renders" || { echo "FAIL chat templates (python3 tests/make_chat_fixtures.py --check)"; fail=1; }
tmp=$(mktemp -d)
./peft train models/stories260K/stories260K.bin data/tinyshakespeare.txt -o "$tmp/ad" --steps 3 -b 2 -T 32 --val-frac 0 --lr 1e-2 \
    --targets 'model\.layers\.[13]\.(self_attn\.(q|v)|mlp\.down)_proj' --modules-to-save embed_tokens,lm_head 2>/dev/null || { echo "FAIL train"; exit 1; }
python3 tests/make_hf_folders.py models/stories260K/stories260K.bin "$tmp/hf" >/dev/null
./peft dump models/stories260K/stories260K.bin -a "$tmp/ad" -i tests/reference/peft/qv_r4/reference.safetensors -o "$tmp/dump.safetensors" 2>/dev/null
if python3 tests/peft_interop.py "$tmp/hf/stories260K-hf-f32" "$tmp/ad" "$tmp/dump.safetensors" --ids tests/reference/peft/qv_r4/reference.safetensors; then
  echo "PASS regex target_modules + modules_to_save adapter loads in PEFT with peft dump's logits"
else echo "FAIL regex target_modules + modules_to_save adapter in PEFT"; fail=1; fi
rm -rf "$tmp"
exit $fail
