#!/usr/bin/env bash
# GPU round for generation (prebuilt ./peft and ./test_all): the GPU tests (greedy fp32 generation equals
# the CPU's; the GEMMs at M = 1 and 5 run on gemv_kernel), memcheck over a bf16 and an fp32 generation,
# and make bench-cuda's generation rows (peft generate against transformers' generate).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
export OMP_NUM_THREADS=8
timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -6; grep -E "cuda matmul|greedy|generat" "$OUT/test_cuda.log" | cut -c1-330
S=../shared; CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
for dt in bf16 fp32; do timeout 60 $CS ./peft generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin -n 40 -t 0 --device cuda --dtype $dt > "$OUT/san_gen_$dt.log" 2>&1; echo "memcheck generate $dt rc=$?: $(grep 'ERROR SUMMARY' $OUT/san_gen_$dt.log)"; done
for dev in "cuda --dtype fp32" "cuda --dtype bf16" "cpu"; do ./peft generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin -n 60 -t 0 -p "Once upon" --device $dev 2>&1 | tr '\n' ' ' | cut -c1-230; echo; done
unset OMP_NUM_THREADS
echo "== generation rows"; PYTHONUNBUFFERED=1 timeout 200 python3 bench/bench_cuda.py --rows "" 2>&1 | grep -v "it/s\]" | tail -6
