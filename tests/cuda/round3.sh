#!/usr/bin/env bash
# round 3: GPU tests, racecheck, the benchmark (eager only) and a profile
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
S=../shared
( make CUDA=1 -j16 peft test_all ) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
./test_all --cuda > "$OUT/test_cuda.log" 2>&1; grep -v "^PASS" "$OUT/test_cuda.log" | cut -c1-300 | tail -6; grep "matmul\|attention\|Shakespeare\|resume" "$OUT/test_cuda.log" | cut -c1-330
compute-sanitizer --tool racecheck --error-exitcode 9 ./peft train $S/models/stories260K/stories260K.bin $S/data/tinyshakespeare.txt -z $S/models/stories260K/tok512.bin --steps 1 -b 2 -T 40 -o /tmp/san_r --device cuda > "$OUT/san_race.log" 2>&1; echo "racecheck rc=$?"; tail -1 "$OUT/san_race.log"
timeout 600 python3 bench/bench_cuda.py > "$OUT/bench.log" 2>&1; tail -4 "$OUT/bench.log"
M=bench/cache/stories110M-hf-bf16
PEFT_CUDA_PROFILE=1 ./peft train $M $S/data/tinyshakespeare.txt -z $S/tokenizers/llama2/tokenizer.bin -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 3 --val-frac 0 --device cuda -o /tmp/prof > "$OUT/profile.log" 2>&1; grep -A30 "GPU profile" "$OUT/profile.log" | sort -k4 -n -r | head -12
