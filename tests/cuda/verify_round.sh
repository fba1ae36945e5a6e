#!/usr/bin/env bash
# A verification round (prebuilt ./peft and ./test_all, make CUDA=1 here): the GPU tests; compute-sanitizer
# memcheck over training (bf16 and fp32, DoRA + dropout; QLoRA nf4 in bf16: the dequantized bf16
# operands), generation (fp32 base; nf4: the quantized matvec) and a chunked eval; eval GPU vs CPU;
# make bench-cuda with torch.compile; a TinyLlama profile by GEMM shape.
set -u
T0=$(date +%s); END=$((T0 + ${ROUND_S:-570}))
left() { echo $((END - $(date +%s))); }
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
export OMP_NUM_THREADS=8
timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -6; grep -E "quantized|copies|cuda matmul bf16|Shakespeare|bit-for-bit|attention bf16" "$OUT/test_cuda.log" | cut -c1-420
python3 -c "
import sys; sys.path.insert(0,'bench'); from bench_cuda import model_folder; model_folder('stories110M')" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt; S=../shared; M=bench/cache/stories110M-hf-bf16
head -c 30000 $D > /tmp/eval30k.txt
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
san() { local name=$1; shift; timeout 100 $CS ./peft "$@" > "$OUT/san_$name.log" 2>&1; echo "memcheck $name rc=$?: $(grep -E 'ERROR SUMMARY' $OUT/san_$name.log | tail -1) | $(grep -vE '^=|^$' $OUT/san_$name.log | tail -1 | cut -c1-100)"; }
san train_bf16 train $M $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 --steps 1 --val-frac 0 --device cuda --dtype bf16 -o /tmp/san_bf16
san train_fp32 train $M $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 --steps 1 --val-frac 0 --device cuda --dtype fp32 -o /tmp/san_fp32
san qlora_bf16 train $M $D -z $TOK -b 2 -T 136 --quant nf4 --double-quant --targets all-linear --steps 1 --val-frac 0 --device cuda -o /tmp/san_q
san gen generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin -n 20 -t 0 --device cuda
san gen_nf4 generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin --quant nf4 -n 20 -t 0 --device cuda
san eval_chunks eval $S/models/stories260K/stories260K.bin /tmp/eval30k.txt -z $S/models/stories260K/tok512.bin -b 2 -T 300 --device cuda
echo "== eval (B 2 x T 300: the classifier in chunks of 512 rows), GPU fp32 / GPU bf16 / CPU"
for dev in "cuda --dtype fp32" "cuda --dtype bf16" "cpu"; do ./peft eval $S/models/stories260K/stories260K.bin /tmp/eval30k.txt -z $S/models/stories260K/tok512.bin -b 2 -T 300 --device $dev 2>/dev/null | tail -1; done
for q in nf4 int8; do echo "generate --quant $q (GPU, then CPU):"; for dev in cuda cpu; do ./peft generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin --quant $q -n 30 -t 0 -p "Once upon" --device $dev 2>/dev/null | head -c 150; echo; done; done
unset OMP_NUM_THREADS
echo "== bench-cuda (compile)"; BT=$(( $(left) - 50 )); [ $BT -gt 300 ] && BT=300; echo "(bench timeout $BT s)"; PYTHONUNBUFFERED=1 timeout $BT python3 bench/bench_cuda.py --compile > "$OUT/bench.log" 2>&1; grep -v "it/s\]" "$OUT/bench.log" | tail -5
echo "left $(left) s"
