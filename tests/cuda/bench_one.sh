#!/usr/bin/env bash
# make bench-cuda's run with a prebuilt ./peft (make CUDA=1 here): the three training rows with torch.compile,
# MFU, attention against sdpa, QLoRA NF4 7B and generation, in one run of bench/bench_cuda.py; the GPU tests first.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
if [ "${TESTS:-1}" = 1 ]; then OMP_NUM_THREADS=8 timeout 150 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -6; fi
ARGS=$(sed -n 's/^BENCH_CUDA_ARGS ?= //p' Makefile)
echo "== bench_cuda.py $ARGS"; PYTHONUNBUFFERED=1 timeout ${BENCH_T:-480} python3 bench/bench_cuda.py $ARGS > "$OUT/bench.log" 2>&1; echo "rc $?"; grep -v "it/s\]" "$OUT/bench.log" | grep -vE "^\s*$|Warning|warn" | tail -40
