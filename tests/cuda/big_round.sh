#!/usr/bin/env bash
# The GPU tests, then the Llama-2-7B shape with peft.c alone: LoRA q,v B4 T1024 and QLoRA NF4 B1 T1024
# checkpointed (tok/s and the memory peak), bench/cache written by bench_cuda.py when missing.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -8
grep -E "bf16 activations" "$OUT/test_cuda.log" | cut -c1-300
t0=$(date +%s); python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('Llama-2-7B')" > /dev/null 2>&1; echo "7B folder: $(( $(date +%s) - t0 )) s"
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
./peft train bench/cache/Llama-2-7B-hf-bf16 $D -z $TOK -b 4 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 6 --val-frac 0 --bench --device cuda -o /tmp/pk7 > "$OUT/7b.log" 2>&1; echo "7B LoRA: $(grep -oE 'median step.*|GPU memory peak.*|peft: .*' $OUT/7b.log | tr '\n' ' ')"
./peft train bench/cache/Llama-2-7B-hf-bf16 $D -z $TOK -b 1 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 6 --val-frac 0 --bench --quant nf4 --checkpoint-activations --device cuda -o /tmp/pkq > "$OUT/7bq.log" 2>&1; echo "7B QLoRA: $(grep -oE 'median step.*|GPU memory peak.*|peft: .*' $OUT/7bq.log | tr '\n' ' ')"
