#!/usr/bin/env bash
# LoRA's narrow products, A/B (prebuilt ./peft, ./test_all; variants/peft_* other builds): the GPU tests, then
# the profile's narrow-product lines on the stories110M all-linear and TinyLlama shapes for each binary.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
OMP_NUM_THREADS=8 timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -6
grep "cuda matmul" "$OUT/test_cuda.log" | cut -c1-250
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; [b.model_folder(n) for n in ('TinyLlama-1.1B', 'stories110M')]" 2>/dev/null
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
for bin in ./peft variants/peft_*; do
  echo "== $bin stories110M"
  PEFT_CUDA_PROFILE=1 $bin train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_110 2>&1 | grep -E "GPU profile|small_n|narrow_k|small_m|splitk|add_scaled"
  echo "== $bin TinyLlama"
  PEFT_CUDA_PROFILE=1 $bin train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_tl 2>&1 | grep -E "GPU profile|small_n|narrow_k|small_m|splitk"
done
