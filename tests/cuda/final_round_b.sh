#!/usr/bin/env bash
# This session's last check round (prebuilt ./peft): the paths the bf16 weights and activations touch that
# the bench does not: full and freeze fine-tuning, QDoRA on nf4 with dropout, --dtype fp32 (memcheck with
# leak check), and PEFT_CUDA_COPIES=check (every reused bf16 copy against a fresh one) on DoRA + dropout
# all-linear and on full fine-tuning.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B', layers=2); b.model_folder('stories110M')" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt; M2=bench/cache/TinyLlama-1.1B-2L-hf-bf16; M110=bench/cache/stories110M-hf-bf16
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
san() { local name=$1; shift; timeout 150 $CS ./peft "$@" > "$OUT/san_$name.log" 2>&1; echo "memcheck $name rc=$?: $(grep -E 'ERROR SUMMARY' $OUT/san_$name.log | tail -1) | $(grep -vE '^=|^$' $OUT/san_$name.log | tail -1 | cut -c1-90)"; }
san full_bf16 train $M2 $D -z $TOK -b 1 -T 200 --finetuning-type full --steps 1 --val-frac 0 --device cuda -o /tmp/sf
san freeze_bf16 train $M2 $D -z $TOK -b 1 -T 200 --finetuning-type freeze --steps 1 --val-frac 0 --device cuda -o /tmp/sz
san qdora_nf4 train $M2 $D -z $TOK -b 1 -T 200 --quant nf4 --double-quant --dora --dropout 0.1 --targets all-linear --steps 1 --val-frac 0 --device cuda -o /tmp/sq
san lora_fp32 train $M2 $D -z $TOK -b 1 -T 200 --targets all-linear --steps 1 --val-frac 0 --device cuda --dtype fp32 -o /tmp/s32
chk() { local name=$1; shift; PEFT_CUDA_COPIES=check timeout 150 ./peft "$@" > "$OUT/chk_$name.log" 2>&1; echo "copies=check $name rc=$?: $(grep -E 'step +3|internal error|peft:' $OUT/chk_$name.log | tail -1 | cut -c1-120)"; }
chk dora_drop train $M110 $D -z $TOK -b 2 -T 512 --targets all-linear --dora --dropout 0.1 --steps 3 --val-frac 0 --device cuda -o /tmp/c1
chk full train $M2 $D -z $TOK -b 2 -T 512 --finetuning-type full --steps 3 --val-frac 0 --device cuda -o /tmp/c2
