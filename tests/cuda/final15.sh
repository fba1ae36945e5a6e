#!/usr/bin/env bash
# The closing GPU round of version 15: compute-sanitizer (memcheck and racecheck) on the attention kernels at
# T = 200 (no multiple of the tiles; GQA at HS 64, HS 128; both forwards), then make bench-cuda's run
# (tests/cuda/bench_one.sh); SAN=0 or BENCH=0 leave a part out. Prebuilt ./peft, ./test_all (make CUDA=1 here).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B', layers=2); b.model_folder('Llama-2-7B', layers=2)" > /dev/null 2>&1
for m in $([ "${SAN:-1}" = 1 ] && echo TinyLlama-1.1B-2L Llama-2-7B-2L); do
  for a in 128 64; do
    PEFT_CUDA_ATTN=$a timeout 120 compute-sanitizer --tool memcheck --kernel-name kns=attention --print-limit 5 ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b 2 -T 200 \
      --targets q_proj,v_proj -r 8 --steps 1 --val-frac 0 --device cuda -o /tmp/san > "$OUT/san_${m}_$a.log" 2>&1
    echo "memcheck $m attn $a (rc $?): $(grep -E 'ERROR SUMMARY' "$OUT/san_${m}_$a.log")"
  done
  timeout 150 compute-sanitizer --tool racecheck --kernel-name kns=attention --print-limit 5 ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b 1 -T 200 \
    --targets q_proj,v_proj -r 8 --steps 1 --val-frac 0 --device cuda -o /tmp/san > "$OUT/race_$m.log" 2>&1
  echo "racecheck $m (rc $?): $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/race_$m.log" | tail -1)"
done
[ "${BENCH:-1}" = 1 ] && TESTS=${TESTS:-0} bash tests/cuda/bench_one.sh
