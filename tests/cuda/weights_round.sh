#!/usr/bin/env bash
# Frozen weights in bf16 only (default) against fp32 mirrors (PEFT_CUDA_WEIGHTS=fp32): speed and memory of
# the stories110M and TinyLlama bench rows, then the GPU tests.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('stories110M'); b.model_folder('TinyLlama-1.1B')" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
run() { local tag=$1 m=$2 b=$3 tg=$4; shift 4; local f="$OUT/$(echo $tag | tr -c 'A-Za-z0-9\n' _).log"; printf "%-40s " "$tag"; env "$@" ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk > "$f" 2>&1; grep -oE "median step.*|GPU memory peak.*|peft: .*" "$f" | tr '\n' ' '; echo; }
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -8
grep -E "bf16-only|bf16 activations|copies follow|matmul bf16" "$OUT/test_cuda.log" | cut -c1-400
variant() { run "110M $*" stories110M 16 all-linear "$@"; run "Tiny $*" TinyLlama-1.1B 8 q_proj,v_proj "$@"; }
variant X=1
variant PEFT_CUDA_ACTS=fp32
variant PEFT_CUDA_WEIGHTS=fp32 PEFT_CUDA_TB=0 PEFT_CUDA_ACTS=fp32
[ -n "${SAN:-}" ] || exit 0
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B', layers=2)" > /dev/null 2>&1
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
san() { local name=$1; shift; timeout 120 $CS ./peft "$@" > "$OUT/san_$name.log" 2>&1; echo "memcheck $name rc=$?: $(grep -E 'ERROR SUMMARY' $OUT/san_$name.log | tail -1) | $(grep -vE '^=|^$' $OUT/san_$name.log | tail -1 | cut -c1-100)"; }
san gqa_bf16 train bench/cache/TinyLlama-1.1B-2L-hf-bf16 $D -z $TOK -b 1 -T 200 --targets q_proj,v_proj --steps 1 --val-frac 0 --device cuda --dtype bf16 -o /tmp/san_g
san dora_bf16 train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 --steps 1 --val-frac 0 --device cuda --dtype bf16 -o /tmp/san_l
san ckpt_bf16 train bench/cache/TinyLlama-1.1B-2L-hf-bf16 $D -z $TOK -b 2 -T 130 --targets all-linear --checkpoint-activations --steps 1 --val-frac 0 --device cuda --dtype bf16 -o /tmp/san_c
