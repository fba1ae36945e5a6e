#!/usr/bin/env bash
# One GPU round for speed work: build, the GPU tests, make bench-cuda's rows, and a kernel profile
# (PEFT_CUDA_PROFILE=1: CUDA events between kernels) of a few steps of each row's peft.c run.
set -u
OUT=${OUT:-/tmp/peft_speed}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
( make CUDA=1 -j16 peft test_all ) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
grep -i warning "$OUT/build.log" | head -3
./test_all --cuda > "$OUT/test_cuda.log" 2>&1; grep -v "^PASS" "$OUT/test_cuda.log" | cut -c1-300 | tail -4; grep -E "cuda matmul|attention bf16|Shakespeare" "$OUT/test_cuda.log" | cut -c1-250
echo "== bench"; timeout 300 python3 bench/bench_cuda.py ${BENCH_ARGS:-} 2>&1 | grep -v "it/s\]" | tail -6
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
for row in "TinyLlama-1.1B 8 q_proj,v_proj" "stories110M 16 all-linear"; do set -- $row
  echo "== profile $1"
  PEFT_CUDA_PROFILE=1 ./peft train bench/cache/$1-hf-bf16 $D -z $TOK -b $2 -T 1024 --targets $3 -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_$1 2>&1 | grep -A40 "GPU profile" | head -24
done
