#!/usr/bin/env bash
# LoRA's rank-r products in the Hopper GEMM (PEFT_CUDA_LORA, default fused; =apart the old passes) and the
# attention backward that stores dS': the GEMM's correctness with a second product (bench/gemm_wgmma, built
# before), the GPU tests, the attention times per layer, and the bench rows both ways. Prebuilt ./peft, ./test_all.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
if [ -x bench/gemm_wgmma/gemm_wgmma_cublas ]; then
  (cd bench/gemm_wgmma && timeout 200 ./gemm_wgmma_cublas ${GEMM_MODE:-correct} > "$OUT/gemm.log" 2>&1; echo "== gemm_wgmma (rc $?)")
  grep -E "^FAIL|correctness:|mismatches|RESULT" "$OUT/gemm.log" | head -12; sed -n '/== summary/,$p' "$OUT/gemm.log"
fi
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('stories110M'); b.model_folder('TinyLlama-1.1B'); b.model_folder('Llama-2-7B', layers=4)" > /dev/null 2>&1
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"
grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -8; grep -E "attention|LoRA|matmul" "$OUT/test_cuda.log" | cut -c1-420
echo "== attention forward + backward, ms per layer (PEFT_CUDA_PROFILE, 2-layer model)"
PYTHONUNBUFFERED=1 timeout 200 python3 - "$D" "$TOK" > "$OUT/att_times.log" 2>&1 <<'PY'
import sys
sys.path.insert(0, "bench")
import bench_cuda as b
for name in ("TinyLlama-1.1B", "Llama-2-7B"):
    cfg, B, T, _ = b.ROWS[name]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    ms, parts = b.attention_peft(name, sys.argv[1], sys.argv[2])
    print(f"{name} B{B} H{H} KV{KV} T{T} D{cfg['hidden_size'] // H}: {ms:.3f} ms | " + ", ".join(f"{k.replace('attention_', '').replace('_kernel', '')} {v:.3f}" for k, v in parts.items()))
PY
echo "rc $?"; tail -3 "$OUT/att_times.log"
run() { local tag=$1 m=$2 b=$3 tg=$4; shift 4; local f="$OUT/$(echo $tag | tr -c 'A-Za-z0-9\n' _).log"; printf "%-28s " "$tag"; env "$@" ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk > "$f" 2>&1; grep -oE "median step.*|GPU memory peak.*|peft: .*" "$f" | tr '\n' ' '; echo; }
for l in fused apart; do run "Tiny LORA=$l" TinyLlama-1.1B 8 q_proj,v_proj PEFT_CUDA_LORA=$l; done
for l in fused apart; do run "110M LORA=$l" stories110M 16 all-linear PEFT_CUDA_LORA=$l; done
for l in fused apart; do run "7B-4L LORA=$l" Llama-2-7B-4L 4 q_proj,v_proj PEFT_CUDA_LORA=$l; done
[ -n "${PROF:-}" ] || exit 0
echo "== profile stories110M B16 T1024 all-linear"
PEFT_CUDA_PROFILE=1 ./peft train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_110 > "$OUT/prof_110.log" 2>&1
grep -A60 "GPU profile" "$OUT/prof_110.log" | head -40
