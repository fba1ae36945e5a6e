#!/usr/bin/env bash
# A profile round (prebuilt ./peft, ./test_all): the GPU tests, then PEFT_CUDA_PROFILE on the TinyLlama and
# stories110M bench shapes (4 steps each; bench/cache models, written by bench_cuda.py if missing).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
OMP_NUM_THREADS=8 timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -6
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; [b.model_folder(n) for n in ('TinyLlama-1.1B', 'stories110M')]"
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
echo "== profile TinyLlama B8 T1024 q,v"
PEFT_CUDA_PROFILE=1 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_tl > "$OUT/prof_tl.log" 2>&1
grep -A60 "GPU profile" "$OUT/prof_tl.log" | head -45
echo "== profile stories110M B16 T1024 all-linear"
PEFT_CUDA_PROFILE=1 ./peft train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_110 > "$OUT/prof_110.log" 2>&1
grep -A60 "GPU profile" "$OUT/prof_110.log" | head -30
