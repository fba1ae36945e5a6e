#!/usr/bin/env bash
# round 2 on the GPU machine: tests, sanitizer, profile and the benchmark
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
S=../shared
( make CUDA=1 -j16 peft test_all ) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
./test_all --cuda > "$OUT/test_cuda.log" 2>&1; grep -v "^PASS" "$OUT/test_cuda.log" | cut -c1-300 | tail -8; grep "matmul\|greedy" "$OUT/test_cuda.log" | cut -c1-300
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
$CS ./peft train $S/models/stories260K/stories260K.bin $S/data/tinyshakespeare.txt -z $S/models/stories260K/tok512.bin --steps 3 -b 2 -T 40 --targets all-linear --dropout 0.1 --dora -o /tmp/san --device cuda > "$OUT/san_train.log" 2>&1; echo "train memcheck rc=$?"; tail -1 "$OUT/san_train.log"
$CS ./peft generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin -a /tmp/san -n 20 -t 0 --device cuda > "$OUT/san_gen.log" 2>&1; echo "generate memcheck rc=$?"; tail -1 "$OUT/san_gen.log"
$CS ./peft train $S/models/stories260K/stories260K.bin $S/data/tinyshakespeare.txt -z $S/models/stories260K/tok512.bin --steps 2 -b 2 -T 40 --quant nf4 --double-quant -o /tmp/san_q --device cuda > "$OUT/san_qlora.log" 2>&1; echo "QLoRA memcheck rc=$?"; tail -1 "$OUT/san_qlora.log"
$CS --tool racecheck ./peft train $S/models/stories260K/stories260K.bin $S/data/tinyshakespeare.txt -z $S/models/stories260K/tok512.bin --steps 1 -b 2 -T 40 -o /tmp/san_r --device cuda > "$OUT/san_race.log" 2>&1; echo "racecheck rc=$?"; tail -1 "$OUT/san_race.log"
timeout 900 python3 bench/bench_cuda.py --compile > "$OUT/bench.log" 2>&1; tail -8 "$OUT/bench.log"
M=bench/cache/stories110M-hf-bf16
PEFT_CUDA_PROFILE=1 ./peft train $M $S/data/tinyshakespeare.txt -z $S/tokenizers/llama2/tokenizer.bin -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 3 --val-frac 0 --device cuda -o /tmp/prof > "$OUT/profile.log" 2>&1; grep -A40 "GPU profile" "$OUT/profile.log" | head -40
PEFT_CUDA_GEMM=small ./peft train $M $S/data/tinyshakespeare.txt -z $S/tokenizers/llama2/tokenizer.bin -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 6 --val-frac 0 --bench --device cuda -o /tmp/small 2>&1 | grep "^bench"
