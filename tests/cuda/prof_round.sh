#!/usr/bin/env bash
# The GPU tests, then PEFT_CUDA_PROFILE on the TinyLlama row and the Llama-2-7B shape cut to 4 layers (4 steps
# each; bench/cache models, written by bench_cuda.py if missing); ROWS=1: the bench rows too. Prebuilt ./peft, ./test_all (make CUDA=1).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B'); b.model_folder('Llama-2-7B', layers=4)" > /dev/null 2>&1
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"
grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -8; grep -E "attention|LoRA" "$OUT/test_cuda.log" | cut -c1-420
for m in "TinyLlama-1.1B 8" "Llama-2-7B-4L 4"; do set -- $m
  echo "== profile $1 B$2 T1024 q,v"
  PEFT_CUDA_PROFILE=1 ./peft train bench/cache/$1-hf-bf16 $D -z $TOK -b $2 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof > "$OUT/prof_$1.log" 2>&1
  grep -A60 "GPU profile" "$OUT/prof_$1.log" | grep -v 'round_bf16\|encoder_forward' | head -40
done
[ -n "${ROWS:-}" ] || exit 0
echo "== peft train --bench rows"
run() { local tag=$1 m=$2 b=$3 tg=$4; shift 4; local f="$OUT/$(echo $tag | tr -c 'A-Za-z0-9\n' _).log"; printf "%-28s " "$tag"; env "$@" ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk > "$f" 2>&1; grep -oE "median step.*|GPU memory peak.*|peft: .*" "$f" | tr '\n' ' '; echo; }
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('stories110M')" > /dev/null 2>&1
run "Tiny" TinyLlama-1.1B 8 q_proj,v_proj
run "110M" stories110M 16 all-linear
run "7B-4L" Llama-2-7B-4L 4 q_proj,v_proj
