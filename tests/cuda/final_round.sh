#!/usr/bin/env bash
# The session's last GPU round (2 GPUs): build with NCCL, the GPU tests, memcheck over the new GEMM
# kernels (bf16 operands by cp.async, the narrow LoRA products), the multi-GPU checks (sections 1, 1b),
# make bench-cuda with torch.compile, and the TinyLlama scaling row.
set -u
OUT=${OUT:-/tmp/peft_final}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
( make CUDA=1 NCCL=1 -j16 peft test_all ) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
grep -i warning "$OUT/build.log" | head -3
# the fuzz targets on the host's idle cores meanwhile (a binary built elsewhere: make fuzz-build), stopped before the bench
FZ=""
if [ -x tests/fuzz/bin/fuzz_all ]; then bash tests/fuzz/fuzz_many.sh -j 11 -s ${FUZZ_S:-170} -w /tmp/fw -n 5 > "$OUT/fuzz.log" 2>&1 & FZ=$!; fi
./test_all --cuda > "$OUT/test_cuda.log" 2>&1; grep -v "^PASS" "$OUT/test_cuda.log" | cut -c1-300 | tail -3
python3 -c "
import sys; sys.path.insert(0,'bench'); from bench_cuda import model_folder; model_folder('TinyLlama-1.1B'); model_folder('stories110M')" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
echo "== memcheck: stories110M shape, all-linear, bf16 (the cp.async GEMM, the narrow products), then fp32"
for dt in bf16 fp32; do
  compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 ./peft train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 --steps 1 --val-frac 0 --device cuda --dtype $dt -o /tmp/san_$dt > "$OUT/san_$dt.log" 2>&1; echo "$dt rc=$?"; tail -1 "$OUT/san_$dt.log"
done
echo "== multi-GPU"; SECTIONS="1 1b" OUT=$OUT timeout 150 bash tests/cuda/multi_gpu.sh 2>&1 | grep -E "^PASS|^FAIL|^adapter|^held-out|multi-GPU"
if [ -n "$FZ" ]; then wait $FZ; echo "== fuzz (rc $?)"; tail -13 "$OUT/fuzz.log"; mkdir -p "$OUT/fuzz_artifacts"; cp /tmp/fw/artifacts/* "$OUT/fuzz_artifacts/" 2>/dev/null; fi
echo "== bench-cuda (compile)"; timeout 270 python3 bench/bench_cuda.py --compile 2>&1 | grep -v "it/s\]" | tail -5
echo "== scaling"; timeout 120 python3 bench/bench_multi_gpu.py --rows TinyLlama-1.1B --gpus 2 2>&1 | tail -1
