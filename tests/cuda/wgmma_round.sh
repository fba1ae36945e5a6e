#!/usr/bin/env bash
# Round with the wgmma GEMM (PEFT_CUDA_GEMM=wgmma) beside the cp.async one: the standalone kernel test
# (.carry/wgmma/run.sh), the GPU tests both ways, the bench with wgmma when its test passed, profiles,
# and the fuzz targets on the host's other cores throughout.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; echo "cores $(nproc)"
FZ=""
if [ -x tests/fuzz/bin/fuzz_all ] && [ "${FUZZ_S:-0}" -gt 0 ]; then
  TMPDIR=/dev/shm bash tests/fuzz/fuzz_many.sh -j ${FUZZ_J:-33} -s $FUZZ_S -w /dev/shm/fw -n 19 > "$OUT/fuzz.log" 2>&1 & FZ=$!
fi
echo "== wgmma standalone"; ( cd bench/gemm_wgmma && timeout 200 bash run.sh ) > "$OUT/wgmma.log" 2>&1; echo "rc $?"; grep -E 'SASS|correctness|^[0-9]+x' "$OUT/wgmma.log" | tail -12
for g in mma wgmma; do
  PEFT_CUDA_GEMM=$g timeout 150 ./test_all --cuda > "$OUT/test_$g.log" 2>&1; echo "== test_all --cuda, PEFT_CUDA_GEMM=$g: $(tail -1 $OUT/test_$g.log)"; grep -v "^PASS" "$OUT/test_$g.log" | grep -v "^==" | cut -c1-400 | head -8; grep -E "cuda matmul" "$OUT/test_$g.log" | cut -c1-300
done
G=mma; grep -q " 0 failed" "$OUT/test_wgmma.log" && G=wgmma
echo "== bench (PEFT_CUDA_GEMM=$G)"; PEFT_CUDA_GEMM=$G PYTHONUNBUFFERED=1 timeout 300 python3 bench/bench_cuda.py > "$OUT/bench.log" 2>&1; grep -v "it/s\]" "$OUT/bench.log" | tail -4
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
echo "== profile TinyLlama ($G)"
PEFT_CUDA_GEMM=$G PEFT_CUDA_PROFILE=1 timeout 60 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_tl 2>&1 | grep -A30 "GPU profile" | head -22
if [ -n "$FZ" ]; then wait $FZ; echo "== fuzz (rc $?)"; tail -14 "$OUT/fuzz.log"; ls /dev/shm/fw/artifacts | wc -l; tar czf "$OUT/fuzz.tgz" -C /dev/shm/fw artifacts $(cd /dev/shm/fw && ls *.log) 2>/dev/null; fi
