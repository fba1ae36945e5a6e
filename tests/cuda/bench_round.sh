#!/usr/bin/env bash
# The session's bench round (prebuilt ./peft, ./test_all): the GPU tests, then make bench-cuda with
# torch.compile (training rows, MFU, attention against sdpa, generation), BENCH_ARGS for other options.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
OMP_NUM_THREADS=8 timeout 150 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -6
grep -E "cross-entropy" "$OUT/test_cuda.log" | cut -c1-200
echo "== bench-cuda ${BENCH_ARGS:---compile}"; PYTHONUNBUFFERED=1 timeout ${BENCH_T:-420} python3 bench/bench_cuda.py ${BENCH_ARGS:---compile} > "$OUT/bench.log" 2>&1; echo "rc $?"; grep -v "it/s\]" "$OUT/bench.log" | grep -vE "^\s*$" | tail -32
