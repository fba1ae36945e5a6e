#!/usr/bin/env bash
# A GPU round for the attention backward that stores dS' (prebuilt ./peft and ./test_all, make CUDA=1 here):
# the GPU tests, then the attention kernels' times per layer, forward + backward, on the TinyLlama (D64, GQA 8)
# and Llama-2-7B (D128) shapes, as make bench-cuda's attention rows time them (bench_cuda.py attention_peft:
# PEFT_CUDA_PROFILE in a 2-layer model of the shape; no sdpa here). SAN=1 adds compute-sanitizer memcheck on
# one step of each model at T 200 (a partial last tile).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
OMP_NUM_THREADS=8 timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"
grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -8; grep "attention" "$OUT/test_cuda.log" | cut -c1-500
echo "== attention forward + backward, ms per layer (PEFT_CUDA_PROFILE, 2-layer model, 6 steps)"
PYTHONUNBUFFERED=1 timeout 200 python3 - "$D" "$TOK" > "$OUT/att_times.log" 2>&1 <<'EOF'
import sys
sys.path.insert(0, "bench")
import bench_cuda as b
for name in ("TinyLlama-1.1B", "Llama-2-7B"):
    cfg, B, T, _ = b.ROWS[name]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    ms, parts = b.attention_peft(name, sys.argv[1], sys.argv[2])
    print(f"{name} B{B} H{H} KV{KV} T{T} D{cfg['hidden_size'] // H}: {ms:.3f} ms | " + ", ".join(f"{k.replace('attention_', '').replace('_kernel', '')} {v:.3f}" for k, v in parts.items()))
EOF
echo "rc $?"; tail -4 "$OUT/att_times.log"
if [ "${SAN:-0}" = 1 ]; then
  for m in TinyLlama-1.1B-2L Llama-2-7B-2L; do
    timeout 300 compute-sanitizer --tool memcheck --kernel-name kns=attention --print-limit 5 ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b 2 -T 200 --targets q_proj,v_proj \
      -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/att5_san > "$OUT/san_$m.log" 2>&1
    echo "== memcheck $m (rc $?): $(grep -E "ERROR SUMMARY" "$OUT/san_$m.log")"; grep -E "Invalid|Error|error" "$OUT/san_$m.log" | head -5
  done
fi
