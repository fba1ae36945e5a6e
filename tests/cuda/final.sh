#!/usr/bin/env bash
# The session's last GPU-machine round: GPU tests, the transformers/PEFT checks of the other issues
# (chat templates, regex/modules_to_save interop, hostile adapters, new special tokens), memcheck on
# QDoRA with an HQQ base, and the benchmark.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
S=../shared
( make CUDA=1 -j16 peft test_all ) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
grep -i warning "$OUT/build.log" | head -3
./test_all --cuda > "$OUT/test_cuda.log" 2>&1; grep -v "^PASS" "$OUT/test_cuda.log" | cut -c1-300 | tail -5; grep "^PASS" "$OUT/test_cuda.log" | cut -c1-160
echo "== ecosystem (transformers, PEFT)"; PEFT_DEVICE=cpu bash tests/ecosystem_gpu_check.sh 2>&1 | grep -v Warning | tail -6
echo "== hostile adapters in PEFT"; PEFT_DEVICE=cpu python3 tests/hostile/peft_check.py > "$OUT/hostile.log" 2>&1; echo "rc=$?"; grep -v Warning "$OUT/hostile.log" | tail -14
echo "== new special tokens in PEFT"; PEFT_DEVICE=cpu python3 tests/check_new_tokens_peft.py > "$OUT/newtok.log" 2>&1; echo "rc=$?"; grep -v Warning "$OUT/newtok.log" | tail -4
echo "== memcheck: QDoRA on an hqq4 base, and generation with it"
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
$CS ./peft train models/stories260K/stories260K.bin data/tinyshakespeare.txt --steps 2 -b 2 -T 40 --quant hqq4 --dora -o /tmp/san_hqq --device cuda > "$OUT/san_hqq.log" 2>&1; echo "rc=$?"; tail -1 "$OUT/san_hqq.log"
$CS ./peft generate models/stories260K/stories260K.bin --quant hqq4 -a /tmp/san_hqq -n 16 -t 0 --device cuda > "$OUT/san_hqq_gen.log" 2>&1; echo "rc=$?"; tail -1 "$OUT/san_hqq_gen.log"
./peft eval models/stories260K/stories260K.bin data/tinyshakespeare.txt --quant hqq4 -a /tmp/san_hqq -b 8 --device cuda --dtype fp32 2>&1 | tail -1
./peft eval models/stories260K/stories260K.bin data/tinyshakespeare.txt --quant hqq4 -a /tmp/san_hqq -b 8 --device cpu 2>&1 | tail -1
echo "== bench"; timeout 420 python3 bench/bench_cuda.py > "$OUT/bench.log" 2>&1; tail -4 "$OUT/bench.log"
