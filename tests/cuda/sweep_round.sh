#!/usr/bin/env bash
# A GPU round over the training paths (prebuilt ./peft, ./test_all): the GPU tests, 2 steps of each of a matrix of
# options on the TinyLlama shape (quantized bases, checkpointing, DoRA, all-linear, fp32), compute-sanitizer
# memcheck on small steps, then QLoRA NF4 on the Llama-2-7B shape (make bench-cuda's --qlora-7b row).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B'); b.model_folder('stories110M')" > /dev/null 2>&1
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"
grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -8; grep "quantized matmuls" "$OUT/test_cuda.log" | cut -c1-500
echo "== option matrix, TinyLlama shape, B2 T256, 2 steps"
i=0
while read -r opts; do i=$((i+1))
  timeout 60 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 2 -T 256 -r 8 --alpha 16 --steps 2 --val-frac 0 --device cuda -o /tmp/sw$i $opts > "$OUT/sw$i.log" 2>&1
  echo "rc $? | $opts | $(grep -oE 'step +[0-9]+/[0-9]+ \| loss [0-9.]+' "$OUT/sw$i.log" | tail -1) $(grep -E '^peft:' "$OUT/sw$i.log" | head -1)"
done <<'M'
--targets q_proj,v_proj --quant nf4 --checkpoint-activations
--targets q_proj,v_proj --quant nf4
--targets all-linear --quant nf4 --checkpoint-activations
--targets all-linear --quant int8 --dora
--targets q_proj,v_proj --quant int4 --checkpoint-activations --dora
--targets all-linear --checkpoint-activations
--targets q_proj,k_proj,o_proj,up_proj --dropout 0.1
--targets all-linear --dtype fp32 --steps 1
M
echo "== memcheck: stories110M shape, all-linear DoRA + dropout bf16, then QLoRA nf4 checkpointed"
compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 ./peft train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 --steps 1 --val-frac 0 --device cuda -o /tmp/san1 > "$OUT/san1.log" 2>&1; echo "rc=$? $(tail -1 $OUT/san1.log)"
compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 ./peft train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 2 -T 136 --targets q_proj,v_proj --quant nf4 --checkpoint-activations --steps 1 --val-frac 0 --device cuda -o /tmp/san2 > "$OUT/san2.log" 2>&1; echo "rc=$? $(tail -1 $OUT/san2.log)"
echo "== QLoRA NF4 7B"; PYTHONUNBUFFERED=1 timeout 240 python3 bench/bench_cuda.py --rows "" --qlora-7b --gen-rows "" --att-rows "" > "$OUT/qlora.log" 2>&1; echo "rc $?"; grep -v "it/s\]" "$OUT/qlora.log" | grep -vE "^\s*$|Warning|warn" | tail -4
