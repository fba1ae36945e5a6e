#!/usr/bin/env bash
# Several GPUs (data parallel over NCCL), on a machine with 2+ GPUs, PyTorch's NCCL wheel, OpenMPI and
# torchrun: builds make CUDA=1 NCCL=1, then
#   1. fp32: 2 GPUs x batch 8 vs 1 GPU x batch 16, 20 steps (dropout on): adapters within 1e-5
#   2. the same 2-GPU run under mpirun and under torchrun: the same adapter, byte for byte
#   3. bf16: 2 x 8 vs 1 x 16, 200 steps: held-out losses within 1%
#   4. --save-every, then --resume on 2 GPUs: byte-identical to the uninterrupted run
#   5. faults: kill -9 of rank 1, of rank 0, an error on rank 1 and an NCCL error injected on rank 1: every
#      rank ends, one line, no adapter written; the newest checkpoint resumes to the uninterrupted run's adapter
#   6. --shard on 2 GPUs (each keeps half of every layer, all-gathered before use): the same adapter, byte for
#      byte, as the 2-GPU run without it (fp32, and QLoRA nf4 with --offload activations: chunks in host memory),
#      --resume with --shard, and a checkpoint of 2 processes refused by 1
set -u
OUT=${OUT:-/tmp/peft_mgpu}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
( make CUDA=1 NCCL=1 -j16 peft ) > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
grep -i "warning" "$OUT/build.log" | head -3
M=models/stories260K/stories260K.bin; D=data/tinyshakespeare.txt; W=/tmp/mg; rm -rf $W; mkdir -p $W
pass=0; fail=0
result() { if [ "$1" = 0 ]; then pass=$((pass+1)); echo "PASS $2"; else fail=$((fail+1)); echo "FAIL $2"; fi; }
# two ranks with torchrun's variables, by hand: by_hand OUTDIR PORT args...
by_hand() {
  local o=$1 port=$2; shift 2; local pids=() rc=0
  for r in 0 1; do WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port ./peft train $M $D -o $o "$@" > $o.r$r.log 2>&1 & pids+=($!); done
  for p in "${pids[@]}"; do wait $p || rc=1; done
  return $rc
}
want() { [ -z "${SECTIONS:-}" ] || [[ " $SECTIONS " == *" $1 "* ]]; } # SECTIONS="1 1b ...": only those
F32="--device cuda --dtype fp32 -T 128 --targets all-linear -r 8 --alpha 16 --lr 3e-3 --dropout 0.1 --val-frac 0.05 --eval-every 5 --eval-batches 4"
if want 1; then
echo "== 1. fp32: 2 GPUs x 8 vs 1 GPU x 16"
CUDA_VISIBLE_DEVICES=0 ./peft train $M $D -o $W/one $F32 --steps 20 -b 16 > $W/one.log 2>&1; echo "1 GPU rc=$?"; grep -E "^step +20|^done" $W/one.log
by_hand $W/two 29611 $F32 --steps 20 -b 8; echo "2 GPUs rc=$?"; grep -E "data parallel|^data:|^step +20|^done" $W/two.r0.log; echo "rank 1 stderr: $(wc -c < $W/two.r1.log) bytes"
python3 tests/cuda/compare_runs.py adapter $W/two $W/one 1e-5; result $? "fp32 2 GPUs x 8 = 1 GPU x 16 (adapter after 20 steps)"
python3 tests/cuda/compare_runs.py val $W/two $W/one 1e-5; result $? "fp32 held-out losses"
fi
if want 1b; then
echo "== 1b. fp32 without dropout: 2 x 8 against 1 x 8 with 2 accumulation steps (the same sums) and 1 x 16"
F0="--device cuda --dtype fp32 -T 128 --targets all-linear -r 8 --alpha 16 --lr 3e-3 --val-frac 0.05 --eval-every 5 --eval-batches 4 --steps 20"
CUDA_VISIBLE_DEVICES=0 ./peft train $M $D -o $W/n16 $F0 -b 16 > $W/n16.log 2>&1
CUDA_VISIBLE_DEVICES=0 ./peft train $M $D -o $W/n8a2 $F0 -b 8 --grad-accum 2 > $W/n8a2.log 2>&1
by_hand $W/n2x8 29621 $F0 -b 8; echo "rc=$?"
python3 tests/cuda/compare_runs.py adapter $W/n2x8 $W/n8a2 1e-5; result $? "fp32 2 GPUs x 8 = 1 GPU x 8 x accumulation 2"
python3 tests/cuda/compare_runs.py adapter $W/n2x8 $W/n16 1e-5; result $? "fp32 2 GPUs x 8 = 1 GPU x 16 (no dropout)"
python3 tests/cuda/compare_runs.py adapter $W/n8a2 $W/n16 1e-5; echo "(one GPU against itself: batch 16 vs 8 x accumulation 2, the floor of reordering the batch's sum)"
echo "-- the defaults (q_proj,v_proj r 8 alpha 8, lr 1e-3, T 256)"
CUDA_VISIBLE_DEVICES=0 ./peft train $M $D -o $W/d16 --device cuda --dtype fp32 --steps 20 -b 16 > $W/d16.log 2>&1
by_hand $W/d2x8 29622 --device cuda --dtype fp32 --steps 20 -b 8; echo "rc=$?"
python3 tests/cuda/compare_runs.py adapter $W/d2x8 $W/d16 1e-5; result $? "fp32 defaults: 2 GPUs x 8 = 1 GPU x 16"
fi
if want 2; then
echo "== 2. launchers"
mpirun --allow-run-as-root --bind-to none -np 2 ./peft train $M $D -o $W/mpi $F32 --steps 20 -b 8 > $W/mpi.log 2>&1; echo "mpirun rc=$?"; grep -E "data parallel|^done" $W/mpi.log
cmp $W/mpi/adapter_model.safetensors $W/two/adapter_model.safetensors; result $? "mpirun -np 2: the same adapter as by hand"
torchrun --nproc-per-node 2 --no-python ./peft train $M $D -o $W/trun $F32 --steps 20 -b 8 > $W/trun.log 2>&1; echo "torchrun rc=$?"; grep -E "data parallel|^done" $W/trun.log
cmp $W/trun/adapter_model.safetensors $W/two/adapter_model.safetensors; result $? "torchrun --no-python: the same adapter as by hand"
fi
if want 3; then
echo "== 3. bf16: held-out curve, 2 x 8 vs 1 x 16"
BF="--device cuda -T 256 --targets all-linear -r 16 --alpha 32 --lr 2e-3 --val-frac 0.05 --eval-every 20 --eval-batches 8 --steps 200"
CUDA_VISIBLE_DEVICES=0 ./peft train $M $D -o $W/bf1 $BF -b 16 > $W/bf1.log 2>&1; echo "1 GPU rc=$?"; grep "^done" $W/bf1.log
by_hand $W/bf2 29612 $BF -b 8; echo "2 GPUs rc=$?"; grep "^done" $W/bf2.r0.log
python3 tests/cuda/compare_runs.py val $W/bf2 $W/bf1 0.01; result $? "bf16 held-out loss curve within 1%"
fi
if want 4; then
echo "== 4. resume on 2 GPUs"
by_hand $W/full 29613 $F32 --steps 30 -b 8 --save-every 10; echo "rc=$?"
by_hand $W/res 29614 $F32 --steps 30 -b 8 --resume $W/full/checkpoint-20; echo "rc=$?"; grep -E "resumed|^done" $W/res.r0.log
cmp $W/res/adapter_model.safetensors $W/full/adapter_model.safetensors; result $? "--resume checkpoint-20 on 2 GPUs: byte-identical adapter"
fi
if want 5; then
echo "== 5. faults"
K="--device cuda --dtype fp32 -T 256 -b 32 --targets all-linear --val-frac 0 --schedule constant --warmup 0 --save-every 100"
kill_run() { # kill_run VICTIM PORT: start 2 ranks, kill -9 VICTIM once checkpoint-200 exists
  local v=$1 port=$2 o=$W/kill$1; rm -rf $o; local pids=()
  for r in 0 1; do WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port ./peft train $M $D -o $o $K --steps 100000 > $o.r$r.log 2>&1 & pids+=($!); done
  for i in $(seq 1 3000); do [ -d $o/checkpoint-200 ] && break; sleep 0.01; done
  local t0=$(date +%s.%N); kill -9 ${pids[$v]}
  local other=$((1 - v)); wait ${pids[$other]}; local rc=$?; local t1=$(date +%s.%N)
  wait ${pids[$v]} 2>/dev/null
  local lines=$(grep -c "^peft:" $o.r$other.log)
  echo "killed rank $v: rank $other exit $rc after $(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s; its peft: lines ($lines): $(grep '^peft:' $o.r$other.log)"
  echo "  left: $(ls $o | tr '\n' ' ')"
  local bad=0; [ $rc -ne 0 ] && [ "$lines" = 1 ] && [ ! -e $o/adapter_model.safetensors ] || bad=1
  for c in $o/checkpoint-*; do [ -f $c/adapter_model.safetensors ] && [ -f $c/trainer_state.json ] && [ -f $c/optimizer.safetensors ] || { echo "  incomplete $c"; bad=1; }; done
  ls $o | grep -q tmp && { echo "  temporary left: $(ls $o | grep tmp)"; }
  result $bad "kill -9 rank $v: the other rank ends with one line, no adapter, only whole checkpoints"
}
kill_run 1 29615
kill_run 0 29616
# the newest checkpoint of the first resumes to the adapter of an uninterrupted run (constant lr: the
# schedule does not depend on the number of steps)
last=$(ls -d $W/kill1/checkpoint-* | sort -t- -k2 -n | tail -1); n=$(( ${last##*-} + 100 )); echo "newest checkpoint: $last; both runs to step $n"
by_hand $W/kres 29617 $K --steps $n --resume $last; echo "resume rc=$?"
by_hand $W/kfull 29618 $K --steps $n; echo "uninterrupted rc=$?"
cmp $W/kres/adapter_model.safetensors $W/kfull/adapter_model.safetensors; result $? "after kill -9: --resume $(basename $last) = the uninterrupted adapter"
# an error on one rank only
pids=(); for r in 0 1; do data=$D; [ $r = 1 ] && data=/nonexistent.txt
  WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=29619 ./peft train $M $data -o $W/err --device cuda --steps 5 > $W/err.r$r.log 2>&1 & pids+=($!); done
wait ${pids[0]}; rc0=$?; wait ${pids[1]}; rc1=$?
echo "error on rank 1: exits $rc0 $rc1; lines: $(cat $W/err.r0.log $W/err.r1.log | grep '^peft:')"
n=$(cat $W/err.r0.log $W/err.r1.log | grep -c '^peft:'); [ $rc0 -ne 0 ] && [ $rc1 -ne 0 ] && [ "$n" = 1 ] && [ ! -e $W/err/adapter_model.safetensors ]; result $? "an error on rank 1: both end, one line"
# an NCCL error on rank 1 mid-run (PEFT_NCCL_FAIL=1:600: its 600th NCCL call, a few hundred steps in)
o=$W/nccl; rm -rf $o; pids=()
for r in 0 1; do PEFT_NCCL_FAIL=1:600 WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=29621 ./peft train $M $D -o $o $K --steps 100000 > $o.r$r.log 2>&1 & pids+=($!); done
wait ${pids[0]}; rc0=$?; wait ${pids[1]}; rc1=$?
n=$(cat $o.r0.log $o.r1.log | grep -c '^peft:'); echo "NCCL error on rank 1: exits $rc0 $rc1; lines: $(cat $o.r0.log $o.r1.log | grep '^peft:'); left: $(ls $o | tr '\n' ' ')"
bad=0; [ $rc0 -ne 0 ] && [ $rc1 -ne 0 ] && [ "$n" = 1 ] && grep -q "injected by PEFT_NCCL_FAIL" $o.r1.log && [ ! -e $o/adapter_model.safetensors ] && [ -d $o/checkpoint-100 ] || bad=1
for c in $o/checkpoint-*; do [ -f $c/adapter_model.safetensors ] && [ -f $c/trainer_state.json ] && [ -f $c/optimizer.safetensors ] || { echo "  incomplete $c"; bad=1; }; done
result $bad "an NCCL error on rank 1 (injected): both end, one line, no adapter, only whole checkpoints"
# a rank that never comes: rank 0 gives up after PEFT_DIST_TIMEOUT
PEFT_DIST_TIMEOUT=3 WORLD_SIZE=2 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29620 ./peft train $M $D -o $W/alone --device cuda --steps 5 > $W/alone.log 2>&1; rc=$?
echo "rank 1 never came: exit $rc: $(grep '^peft:' $W/alone.log)"; [ $rc -ne 0 ] && [ ! -e $W/alone ]; result $? "a missing rank: rank 0 ends after PEFT_DIST_TIMEOUT, nothing written"
fi
if want 6; then
echo "== 6. --shard: 2 GPUs, each with half of every layer"
by_hand $W/sh0 29631 $F32 --steps 20 -b 8; echo "rc=$?"
by_hand $W/sh1 29632 $F32 --steps 20 -b 8 --shard; echo "rc=$?"; grep -E "data parallel|^done" $W/sh1.r0.log
cmp $W/sh1/adapter_model.safetensors $W/sh0/adapter_model.safetensors; result $? "fp32 --shard on 2 GPUs: the adapter of the unsharded 2-GPU run, byte for byte"
Q="--device cuda -T 128 --quant nf4 --double-quant --targets all-linear -r 8 --lr 3e-3 --dropout 0.1 --val-frac 0 --checkpoint-activations --steps 12 -b 4"
by_hand $W/shq0 29633 $Q; echo "rc=$?"
by_hand $W/shq1 29634 $Q --shard --offload activations; echo "rc=$?"
cmp $W/shq1/adapter_model.safetensors $W/shq0/adapter_model.safetensors; result $? "QLoRA nf4 --shard --offload activations on 2 GPUs (chunks and activations in host memory): the unsharded adapter, byte for byte"
by_hand $W/shr 29635 $Q --shard --save-every 6; echo "rc=$?"
by_hand $W/shr2 29636 $Q --shard --resume $W/shr/checkpoint-6; echo "rc=$?"
cmp $W/shr2/adapter_model.safetensors $W/shq0/adapter_model.safetensors; result $? "--shard --resume checkpoint-6 on 2 GPUs: the uninterrupted adapter"
CUDA_VISIBLE_DEVICES=0 ./peft train $M $D -o $W/shr1 $Q --shard --resume $W/shr/checkpoint-6 > $W/shr1.log 2>&1; rc=$?
echo "1 process resuming 2's checkpoint: exit $rc: $(grep '^peft:' $W/shr1.log)"
[ $rc -ne 0 ] && [ "$(grep -c '^peft:' $W/shr1.log)" = 1 ]; result $? "a checkpoint of 2 processes is refused by 1 in one line"
fi
echo "multi-GPU: $pass passed, $fail failed"
