#!/usr/bin/env bash
# GPU memory peak and speed of the stories110M and TinyLlama bench rows (peft.c alone), then the GPU tests.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('stories110M'); b.model_folder('TinyLlama-1.1B')" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
run() { local tag=$1 m=$2 b=$3 tg=$4; printf "%-16s " "$tag"; ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk 2>&1 | grep -oE "median step.*|GPU memory peak.*" | tr '\n' ' '; echo; }
run stories110M stories110M 16 all-linear
run TinyLlama TinyLlama-1.1B 8 q_proj,v_proj
OMP_NUM_THREADS=8 timeout 150 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -6
grep -E "copies follow" "$OUT/test_cuda.log" | cut -c1-200
