#!/usr/bin/env bash
# The session's check round (prebuilt ./peft, ./test_all): the GPU tests; compute-sanitizer memcheck on short
# bf16/fp32 training runs that take the new paths (GQA's cluster sum in attention, the narrow products and
# lora_up_add); the TinyLlama and stories110M profiles.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
OMP_NUM_THREADS=8 timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -6
grep -E "lora_up_add|flash attention bf16|cuda matmul" "$OUT/test_cuda.log" | cut -c1-260
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; [b.model_folder(n) for n in ('TinyLlama-1.1B', 'stories110M')]; b.model_folder('TinyLlama-1.1B', layers=2)" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
san() { local name=$1; shift; timeout 120 $CS ./peft "$@" > "$OUT/san_$name.log" 2>&1; echo "memcheck $name rc=$?: $(grep -E 'ERROR SUMMARY' $OUT/san_$name.log | tail -1) | $(grep -vE '^=|^$' $OUT/san_$name.log | tail -1 | cut -c1-100)"; }
san gqa_bf16 train bench/cache/TinyLlama-1.1B-2L-hf-bf16 $D -z $TOK -b 1 -T 200 --targets q_proj,v_proj --steps 1 --val-frac 0 --device cuda --dtype bf16 -o /tmp/san_g
san lora_bf16 train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 2 -T 136 --targets all-linear --dropout 0.1 --steps 1 --val-frac 0 --device cuda --dtype bf16 -o /tmp/san_l
san lora_fp32 train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 2 -T 136 --targets all-linear --steps 1 --val-frac 0 --device cuda --dtype fp32 -o /tmp/san_f
echo "== profile TinyLlama B8 T1024 q,v"
PEFT_CUDA_PROFILE=1 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_tl > "$OUT/prof_tl.log" 2>&1
grep -A40 "GPU profile" "$OUT/prof_tl.log" | grep -E "GPU profile|small|narrow|add_scaled|attention"
echo "== profile stories110M B16 T1024 all-linear"
PEFT_CUDA_PROFILE=1 ./peft train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_110 > "$OUT/prof_110.log" 2>&1
grep -A40 "GPU profile" "$OUT/prof_110.log" | grep -E "GPU profile|small|narrow|add_scaled|attention"
