#!/usr/bin/env bash
# The GPU tests, the stories110M and TinyLlama bench rows (peft.c alone, default and PEFT_CUDA_ACTS=fp32),
# memcheck on a GQA step and an all-linear step (the attention output kept in bf16).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -8
grep -E "bf16 activations" "$OUT/test_cuda.log" | cut -c1-200
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B'); b.model_folder('stories110M'); b.model_folder('TinyLlama-1.1B', layers=2)" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
for m in "stories110M 16 all-linear" "TinyLlama-1.1B 8 q_proj,v_proj"; do set -- $m; ./peft train bench/cache/$1-hf-bf16 $D -z $TOK -b $2 -T 1024 --targets $3 -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk > "$OUT/$1.log" 2>&1; echo "$1: $(grep -oE 'median step.*|GPU memory peak.*|peft: .*' $OUT/$1.log | tr '\n' ' ')"; done
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
timeout 120 $CS ./peft train bench/cache/TinyLlama-1.1B-2L-hf-bf16 $D -z $TOK -b 1 -T 200 --targets all-linear --dropout 0.1 --steps 1 --val-frac 0 --device cuda -o /tmp/san_x > $OUT/san.log 2>&1; echo "memcheck GQA all-linear dropout rc=$?: $(grep -E 'ERROR SUMMARY' $OUT/san.log | tail -1)"
