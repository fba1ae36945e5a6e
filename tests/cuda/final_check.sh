#!/usr/bin/env bash
# The last GPU round of a session (prebuilt ./peft and ./test_all, make CUDA=1 here): the GPU tests, and
# greedy generation on the GPU beside the CPU (fp32, int8 and nf4 bases; the CPU's int8 path multiplies
# int8 activations, the GPU's fp32 ones, so their int8 texts may part after a while).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
OMP_NUM_THREADS=8 timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -6
S=../shared
for q in none int8 nf4; do for dev in cuda cpu; do printf "%-5s %-4s " $q $dev; ./peft generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin --quant $q -n 80 -t 0 -p "Once upon" --device $dev 2>/dev/null | tr '\n' ' ' | cut -c1-200; echo; done; done
