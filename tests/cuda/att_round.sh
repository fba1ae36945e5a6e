#!/usr/bin/env bash
# A GPU round with prebuilt binaries (make CUDA=1 peft test_all here; carry peft, test_all): the GPU
# tests, make bench-cuda's rows (eager; BENCH_ARGS=--compile for torch.compile too), a kernel profile of
# TinyLlama, and the fuzz targets on the host's other cores for the whole round (FUZZ_S seconds,
# FUZZ_J cores, tests/fuzz/bin/fuzz_all built here by make fuzz-build). Optional: WGMMA=dir runs dir/run.sh.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader; echo "cores $(nproc)"
FZ=""
if [ -x tests/fuzz/bin/fuzz_all ] && [ "${FUZZ_S:-0}" -gt 0 ]; then
  bash tests/fuzz/fuzz_many.sh -j ${FUZZ_J:-$(( $(nproc) - 3 ))} -s $FUZZ_S -w /tmp/fw -n 19 > "$OUT/fuzz.log" 2>&1 & FZ=$!
fi
./test_all --cuda > "$OUT/test_cuda.log" 2>&1; grep -v "^PASS" "$OUT/test_cuda.log" | cut -c1-300 | tail -4; grep -E "attention" "$OUT/test_cuda.log" | cut -c1-300
if [ -n "${WGMMA:-}" ] && [ -x "$WGMMA/run.sh" ]; then echo "== wgmma"; ( cd "$WGMMA" && timeout ${WGMMA_T:-150} bash run.sh ) > "$OUT/wgmma.log" 2>&1; echo "rc $?"; grep -E "FAIL|correctness|TFLOP|timed out|error|Error" "$OUT/wgmma.log" | head -40; fi
echo "== bench"; PYTHONUNBUFFERED=1 timeout ${BENCH_T:-300} python3 bench/bench_cuda.py ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1; grep -v "it/s\]" "$OUT/bench.log" | tail -6
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
echo "== profile TinyLlama"
PEFT_CUDA_PROFILE=1 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_tl 2>&1 | grep -A30 "GPU profile" | head -20
if [ -n "$FZ" ]; then wait $FZ; echo "== fuzz (rc $?)"; tail -14 "$OUT/fuzz.log"; ls /tmp/fw/artifacts | wc -l; tar czf "$OUT/fuzz.tgz" -C /tmp/fw artifacts $(cd /tmp/fw && ls *.log) 2>/dev/null; fi
