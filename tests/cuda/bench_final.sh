#!/usr/bin/env bash
# The session's bench round (prebuilt ./peft): make bench-cuda with torch.compile (stories110M and TinyLlama rows,
# MFU, attention against sdpa, generation), then the Llama-2-7B row with QLoRA NF4 7B. B7=0 skips the second.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
echo "== bench-cuda --compile"; PYTHONUNBUFFERED=1 timeout ${BENCH_T:-300} python3 bench/bench_cuda.py --compile > "$OUT/bench.log" 2>&1; echo "rc $?"; grep -v "it/s\]" "$OUT/bench.log" | grep -vE "^\s*$|Warning|warn" | tail -34
[ "${B7:-1}" = 1 ] || exit 0
echo "== bench-cuda Llama-2-7B --compile --qlora-7b"; PYTHONUNBUFFERED=1 timeout ${BENCH7_T:-270} python3 bench/bench_cuda.py --rows Llama-2-7B --compile --qlora-7b --gen-rows "" --att-rows "" > "$OUT/bench7b.log" 2>&1; echo "rc $?"; grep -v "it/s\]" "$OUT/bench7b.log" | grep -vE "^\s*$|Warning|warn" | tail -16
