#!/usr/bin/env bash
# GPU round for the bf16 operand copies (prebuilt ./peft and ./test_all, make CUDA=1 here): the GPU
# tests; training runs with PEFT_CUDA_COPIES=check (every copy found is compared with a fresh one:
# LoRA with dropout and DoRA, full fine-tuning, QLoRA, generation); the same steps with the copies off
# and on must print the same losses; make bench-cuda eager; a TinyLlama profile.
set -u
T0=$(date +%s); END=$((T0 + ${ROUND_S:-560}))
left() { echo $((END - $(date +%s))); }
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
export OMP_NUM_THREADS=8
timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -6; grep -E "copies|cuda matmul bf16|Shakespeare" "$OUT/test_cuda.log" | cut -c1-330
python3 -c "
import sys; sys.path.insert(0,'bench'); from bench_cuda import model_folder; model_folder('stories110M'); model_folder('TinyLlama-1.1B')" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt; S=../shared; M=bench/cache/stories110M-hf-bf16
run() { local name=$1; shift; timeout 60 ./peft "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$?: $(grep -E 'step +[0-9]+/' $OUT/$name.log | tail -1 | cut -c1-110)$(grep '^peft:' $OUT/$name.log | head -2)"; }
echo "== PEFT_CUDA_COPIES=check"
export PEFT_CUDA_COPIES=check
run chk_lora train $M $D -z $TOK -b 4 -T 256 --targets all-linear --dora --dropout 0.1 --steps 3 --val-frac 0 --device cuda -o /tmp/chk_lora
run chk_full train $M $D -z $TOK -b 4 -T 256 --finetuning-type full --steps 3 --val-frac 0 --device cuda -o /tmp/chk_full
run chk_qlora train $M $D -z $TOK -b 4 -T 256 --quant nf4 --targets all-linear --steps 3 --val-frac 0 --device cuda -o /tmp/chk_q
run chk_ckpt train $M $D -z $TOK -b 4 -T 256 --targets q_proj,v_proj --checkpoint-activations --steps 3 --val-frac 0 --device cuda -o /tmp/chk_ck
run chk_gen generate $M -z $TOK -a /tmp/chk_lora -n 40 -t 0 --device cuda
run chk_tl train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 4 -T 512 --targets q_proj,v_proj --dropout 0.05 --steps 3 --val-frac 0 --device cuda -o /tmp/chk_tl
unset PEFT_CUDA_COPIES
echo "== the same losses with the copies off and on (TinyLlama shape, 3 steps)"
for c in 0 1; do PEFT_CUDA_COPIES=$c timeout 60 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 4 -T 512 --targets q_proj,v_proj --dropout 0.05 --steps 3 --val-frac 0 --device cuda -o /tmp/same_$c > "$OUT/same_$c.log" 2>&1; grep -E "step +[0-9]+/" "$OUT/same_$c.log" | sed 's/ | [0-9]* tok.s.*//' > "$OUT/same_$c.txt"; done
cmp "$OUT/same_0.txt" "$OUT/same_1.txt" && echo "identical: $(tail -1 $OUT/same_1.txt)" || { echo DIFFER; cat "$OUT/same_0.txt" "$OUT/same_1.txt"; }
unset OMP_NUM_THREADS
echo "== bench-cuda (eager)"; BT=$(( $(left) - 60 )); [ $BT -gt 240 ] && BT=240; PYTHONUNBUFFERED=1 timeout $BT python3 bench/bench_cuda.py > "$OUT/bench.log" 2>&1; grep -v "it/s\]" "$OUT/bench.log" | tail -5
[ $(left) -gt 40 ] && echo "== profile TinyLlama" && PEFT_CUDA_PROFILE=1 timeout 40 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_tl 2>&1 | grep -A80 "GPU profile" | head -60
echo "left $(left) s"
