#!/usr/bin/env bash
# The Hopper GEMM's epilogue through shared memory and TMA stores (PEFT_CUDA_EPI=1, 2) against stores straight
# from registers (=0): the standalone GEMM test and its speed beside cuBLAS (bench/gemm_wgmma, built before),
# the GPU tests, the stories110M and TinyLlama bench rows with each epilogue, and a profile of the Llama-2-7B
# shape cut to 4 layers. Prebuilt ./peft and ./test_all (make CUDA=1).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
if [ -x bench/gemm_wgmma/gemm_wgmma_cublas ]; then
  (cd bench/gemm_wgmma && timeout 200 ./gemm_wgmma_cublas all > "$OUT/gemm.log" 2>&1; echo "== gemm_wgmma (rc $?)")
  grep -E "^FAIL|correctness:|mismatches|RESULT" "$OUT/gemm.log" | head -12; sed -n '/== summary/,$p' "$OUT/gemm.log"
fi
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('stories110M'); b.model_folder('TinyLlama-1.1B'); b.model_folder('Llama-2-7B', layers=4)" > /dev/null 2>&1
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -8
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
run() { local tag=$1 m=$2 b=$3 tg=$4; shift 4; local f="$OUT/$(echo $tag | tr -c 'A-Za-z0-9\n' _).log"; printf "%-28s " "$tag"; env "$@" ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk > "$f" 2>&1; grep -oE "median step.*|GPU memory peak.*|peft: .*" "$f" | tr '\n' ' '; echo; }
for e in 1 0 2; do run "Tiny EPI=$e" TinyLlama-1.1B 8 q_proj,v_proj PEFT_CUDA_EPI=$e; done
for e in 1 0; do run "110M EPI=$e" stories110M 16 all-linear PEFT_CUDA_EPI=$e; done
for e in 1 0; do run "7B-4L EPI=$e" Llama-2-7B-4L 4 q_proj,v_proj PEFT_CUDA_EPI=$e; done
echo "== profile Llama-2-7B shape, 4 layers, B4 T1024 q,v (EPI=1)"
PEFT_CUDA_PROFILE=1 ./peft train bench/cache/Llama-2-7B-4L-hf-bf16 $D -z $TOK -b 4 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_7b > "$OUT/prof_7b.log" 2>&1
grep -A60 "GPU profile" "$OUT/prof_7b.log" | head -50
