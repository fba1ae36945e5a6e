#!/usr/bin/env bash
# --offload on the GPU: the offload tests of test_all (bit for bit against resident on small models), then
# a Llama-2-7B-shape NF4 model (SHAPE=: another quantize --random shape) written by quantize --random and trained STEPS (5) steps resident and offloaded
# (checkpointed activations), offloaded (--offload), with the activations too (--offload activations) and, with
# GPU_MEMORY=22G, as --gpu-memory plans it; B x T = 1 x T (default 4096): tokens/s, GPU memory peak, the adapters
# compared with the resident run's (MODES= picks the runs). The 70B bar (the quantize alone a few minutes):
# BIG=1 SHAPE=llama2-70b T=8192 STEPS=3 GPU_MEMORY=22G MODES="resident plan" RUN_T=250 tests/cuda/offload_check.sh
# Usage: tests/cuda/offload_check.sh [BIN_DIR] (where peft and test_all are; default .); logs under $OUT.
set -u
BIN=${1:-.}; OUT=${OUT:-/tmp/peft_offload}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/offload/shared" ../shared
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
PEFT_BIN=$BIN/peft timeout 200 $BIN/test_all --cuda offload > "$OUT/test_offload.log" 2>&1; echo "== test_all --cuda offload (rc $?): $(tail -1 $OUT/test_offload.log)"
cut -c1-300 "$OUT/test_offload.log" | grep -v "^[0-9]* passed"
[ "${BIG:-1}" = 1 ] || exit 0
M=/tmp/${SHAPE:-llama2-7b}-nf4.bin
$BIN/peft quantize --random ${SHAPE:-llama2-7b} --quant nf4 --double-quant -o $M 2>&1 | tail -2
ls -la $M
D=../shared/data/tinyshakespeare.txt
COMMON="$M $D -z models/stories260K/tok512.bin -b 1 -T ${T:-4096} --steps ${STEPS:-5} --val-frac 0 --targets q_proj,v_proj -r 8 --checkpoint-activations --bench --device cuda"
for mode in ${MODES:-resident offload offload-activations ${GPU_MEMORY:+plan}}; do
  case $mode in resident) F="";; offload) F="--offload";; offload-activations) F="--offload activations";; plan) F="--gpu-memory $GPU_MEMORY";; esac
  timeout ${RUN_T:-150} $BIN/peft train $COMMON $F -o $OUT/big_$mode > "$OUT/big_$mode.log" 2>&1; echo "== ${SHAPE:-llama2-7b} nf4 $mode (rc $?)"
  grep -E "^device|^memory|^bench|^peft|^done|^plan|^GPU memory plan|^  [ *] " "$OUT/big_$mode.log" | cut -c1-300
  [ $mode = resident ] || { cmp $OUT/big_resident/adapter_model.safetensors $OUT/big_$mode/adapter_model.safetensors && echo "adapters after ${STEPS:-5} steps: $mode == resident"; }
done
