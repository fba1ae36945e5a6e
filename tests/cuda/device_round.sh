#!/usr/bin/env bash
# One round on the GPU machine (run from the repository root there): build with CUDA=1, the GPU tests,
# compute-sanitizer on a short training run and a generation, and an adapter trained on the GPU checked
# in transformers + PEFT. ../shared is taken from .carry/shared when it is not beside the checkout.
# Logs go to $OUT (the device tool brings them back); the summary is printed last.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
S=../shared
nvidia-smi -L
echo "== build"
( make CUDA=1 -j16 peft test_all ) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
grep -i "warning" "$OUT/build.log" || echo "no warnings"
echo "== test_all --cuda"
./test_all --cuda > "$OUT/test_cuda.log" 2>&1
cut -c1-400 "$OUT/test_cuda.log" | grep -v "^PASS" | tail -30
grep "^PASS" "$OUT/test_cuda.log" | cut -c1-300
echo "== compute-sanitizer"
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
$CS ./peft train $S/models/stories260K/stories260K.bin $S/data/tinyshakespeare.txt -z $S/models/stories260K/tok512.bin --steps 3 -b 2 -T 40 \
    --targets all-linear --dropout 0.1 --dora -o /tmp/san --device cuda > "$OUT/san_train.log" 2>&1; echo "train (DoRA, dropout) memcheck rc=$?"; tail -2 "$OUT/san_train.log"
$CS ./peft generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin -a /tmp/san -n 20 -t 0 --device cuda > "$OUT/san_gen.log" 2>&1; echo "generate memcheck rc=$?"; tail -2 "$OUT/san_gen.log"
$CS ./peft train $S/models/stories260K/stories260K.bin $S/data/tinyshakespeare.txt -z $S/models/stories260K/tok512.bin --steps 2 -b 2 -T 40 \
    --quant nf4 --double-quant -o /tmp/san_q --device cuda > "$OUT/san_qlora.log" 2>&1; echo "QLoRA nf4 memcheck rc=$?"; tail -2 "$OUT/san_qlora.log"
echo "== an adapter trained on the GPU (fp32) in transformers + PEFT"
./peft train $S/models/stories260K-hf-f32 $S/data/tinyshakespeare.txt -z $S/models/stories260K/tok512.bin --steps 30 --targets all-linear -r 8 --alpha 16 \
    --lr 3e-3 -o /tmp/gpu_ad --device cuda --dtype fp32 > "$OUT/interop_train.log" 2>&1; echo "train rc=$?"; tail -1 "$OUT/interop_train.log"
./peft dump $S/models/stories260K-hf-f32 -a /tmp/gpu_ad -i $S/reference/peft/qv_r4/reference.safetensors -o /tmp/gdump.safetensors --device cuda --dtype fp32 2>&1 | tail -1
python3 tests/peft_interop.py $S/models/stories260K-hf-f32 /tmp/gpu_ad /tmp/gdump.safetensors --ids $S/reference/peft/qv_r4/reference.safetensors 2>&1 | grep -v Warning | tail -3
echo "== summary"
tail -1 "$OUT/test_cuda.log"
