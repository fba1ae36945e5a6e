#!/usr/bin/env bash
# A GPU round for attention work (prebuilt ./peft and ./test_all, make CUDA=1 here): the GPU tests, the
# attention rows of make bench-cuda (peft.c's kernels against sdpa), and ncu on the attention kernels of one
# TinyLlama-shaped step (2 layers). NCU=0 skips ncu.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
OMP_NUM_THREADS=8 timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -6
grep "attention" "$OUT/test_cuda.log" | cut -c1-300
echo "== attention rows"; PYTHONUNBUFFERED=1 timeout 240 python3 bench/bench_cuda.py --rows "" --gen-rows "" ${ATT_ARGS:-} > "$OUT/att.log" 2>&1; echo "rc $?"; grep -v "it/s\]" "$OUT/att.log" | tail -8
if [ "${NCU:-1}" = 1 ]; then
  echo "== ncu attention kernels, TinyLlama shape"
  TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
  timeout 200 ncu -k regex:attention_ --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats --section InstructionStats --section SchedulerStats \
    ./peft train bench/cache/TinyLlama-1.1B-2L-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/ncu_out > "$OUT/ncu_att.txt" 2>&1
  echo "rc $?"; grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Stall|L1/TEX Hit|Shared Memory" "$OUT/ncu_att.txt" | head -120
fi
