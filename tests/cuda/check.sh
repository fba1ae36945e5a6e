#!/usr/bin/env bash
# tests/cuda/check.sh [PART ...]: the GPU checks, run from the repository root on a machine with an NVIDIA GPU
# (docs/TESTING.md says what each part checks). Each part fits in the device tool's 10 minutes; run them one
# call each when time is short. Parts (default: build suite memcheck attention copies devices):
#   build      make CUDA=1 peft test_all, warning-free
#   suite      make test-cuda's suite (./test_all: CPU tests, GPU tests, fp64), then the GPU tests again with
#              the sm_80 GEMM on Hopper (PEFT_CUDA_GEMM=mma)
#   memcheck   compute-sanitizer memcheck with leak check: memcheck-train (one step each of LoRA bf16/fp32 with
#              DoRA + dropout, QLoRA nf4, GQA at T 200, checkpointing, full, freeze, QDoRA nf4 on the bench
#              shapes) then memcheck-small (stories260K: QDoRA hqq4 and generation with it, generation on fp32
#              and nf4 bases, a chunked eval, chat --offload with adapter switches and two /mix); each half can be run alone
#   attention  compute-sanitizer memcheck (both tensor-core forwards) and racecheck on the attention kernels at
#              T 200 (no multiple of the tiles), GQA at head size 64 and head size 128
#   copies     PEFT_CUDA_COPIES=check (every reused bf16 copy compared with a fresh one) on 3-step runs, and the
#              same losses with the copies off and on
#   devices    eval in 512-row chunks and greedy generation (fp32, int8, nf4 bases) on the GPU against the CPU
#   sweep      2 steps of each of a matrix of training options on the TinyLlama shape: exit 0, finite losses
#   families   the model families (issue 28): test_all --cuda families (their kernels against the CPU twins, the
#              family references in fp32 and bf16), then compute-sanitizer memcheck (leak check) of a training step
#              of a small Gemma 2 (head_dim 128, soft-caps, window 64 < T 200) in bf16 and fp32 and of a windowed
#              generation (100 tokens) with its adapter
#   offload    --offload against resident (test_all --cuda offload, test_all --cuda chat; a quantize --random 7B NF4 model,
#              see part_offload)
#   interop    needs transformers + peft: an adapter trained on the GPU loads in PEFT with peft dump's logits,
#              tests/family_interop.sh (every family: trained adapters in PEFT, merged folders in transformers),
#              tests/ecosystem_gpu_check.sh, tests/hostile/peft_check.py, tests/check_new_tokens_peft.py
# The parts after build use the ./peft and ./test_all it makes (make CUDA=1). ../shared is linked from .carry/shared when it is not beside the checkout (the device tool's
# copy). Logs go to $OUT (default /tmp/peft_check); each check prints PASS or FAIL, the last line counts them.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/peft_check}; mkdir -p "$OUT"
[ -e ../shared ] || { [ -d .carry/shared ] && ln -sfn "$PWD/.carry/shared" ../shared; }
S=../shared; TOK=$S/tokenizers/llama2/tokenizer.bin; D=$S/data/tinyshakespeare.txt
M260=models/stories260K/stories260K.bin; T512=models/stories260K/tok512.bin; DATA=data/tinyshakespeare.txt
pass=0; fail=0
result() { if [ "$1" = 0 ]; then pass=$((pass+1)); echo "PASS $2"; else fail=$((fail+1)); echo "FAIL $2 (log: $3)"; fi; }
# bench/cache/<name>-hf-bf16: random-weight models of the bench shapes (bench_cuda.py writes them; torch + transformers)
models() { python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b
for a in sys.argv[1:]:
    n, _, l = a.partition(':'); b.model_folder(n, layers=int(l) if l else None)" "$@" > "$OUT/models.log" 2>&1 || { echo "FAIL bench/cache models $* (log: $OUT/models.log)"; fail=$((fail+1)); }; }
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
# san NAME ARGS...: ./peft ARGS under memcheck; passes on exit 0 with "ERROR SUMMARY: 0 errors"
san() { local name=$1; shift; timeout ${SAN_T:-150} $CS ./peft "$@" > "$OUT/san_$name.log" 2>&1; local rc=$?
  grep -q "ERROR SUMMARY: 0 errors" "$OUT/san_$name.log"; local ok=$?; [ $rc = 0 ] && [ $ok = 0 ]
  result $? "memcheck $name (rc $rc): $(grep -E 'ERROR SUMMARY' "$OUT/san_$name.log" | tail -1)" "$OUT/san_$name.log"; }

part_build() {
  nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader | head -1
  make CUDA=1 -j"$(nproc)" peft test_all test_all_fp64 peft_infer_arena > "$OUT/build.log" 2>&1; local rc=$?
  result $rc "make CUDA=1" "$OUT/build.log"
  ! grep -i "warning" "$OUT/build.log"; result $? "make CUDA=1 has no warnings" "$OUT/build.log"
}
part_suite() {
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} timeout 500 make CUDA=1 test > "$OUT/suite.log" 2>&1; local rc=$?
  result $rc "make test-cuda's suite: $(tail -1 "$OUT/suite.log")" "$OUT/suite.log"; grep -E "^(FAIL|SKIP)" "$OUT/suite.log" | cut -c1-300 | head -10
  PEFT_CUDA_GEMM=mma timeout 200 ./test_all --cuda > "$OUT/suite_mma.log" 2>&1; rc=$?
  result $rc "the GPU tests with PEFT_CUDA_GEMM=mma: $(tail -1 "$OUT/suite_mma.log")" "$OUT/suite_mma.log"
}
part_memcheck() { part_memcheck_train; part_memcheck_small; }
part_memcheck_train() {
  models stories110M TinyLlama-1.1B:2
  local M110=bench/cache/stories110M-hf-bf16 M2=bench/cache/TinyLlama-1.1B-2L-hf-bf16 one="--steps 1 --val-frac 0 --device cuda"
  san dora_bf16 train $M110 $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 $one --dtype bf16 -o /tmp/pc_dora_bf16
  san dora_fp32 train $M110 $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 $one --dtype fp32 -o /tmp/pc_dora_fp32
  san qlora_nf4dq train $M110 $D -z $TOK -b 2 -T 136 --quant nf4 --double-quant --targets all-linear $one -o /tmp/pc_q
  san gqa_bf16 train $M2 $D -z $TOK -b 1 -T 200 --targets q_proj,v_proj $one --dtype bf16 -o /tmp/pc_gqa
  san ckpt_bf16 train $M2 $D -z $TOK -b 2 -T 130 --targets all-linear --checkpoint-activations $one -o /tmp/pc_ckpt
  san full_bf16 train $M2 $D -z $TOK -b 1 -T 200 --finetuning-type full $one -o /tmp/pc_full
  san freeze_bf16 train $M2 $D -z $TOK -b 1 -T 200 --finetuning-type freeze $one -o /tmp/pc_freeze
  san qdora_nf4 train $M2 $D -z $TOK -b 1 -T 200 --quant nf4 --double-quant --dora --dropout 0.1 --targets all-linear $one -o /tmp/pc_qdora
}
part_memcheck_small() {
  head -c 30000 $D > "$OUT/eval30k.txt"
  san qdora_hqq4 train $M260 $DATA --steps 2 -b 2 -T 40 --quant hqq4 --dora --device cuda -o /tmp/pc_hqq
  san gen_hqq4_adapter generate $M260 --quant hqq4 -a /tmp/pc_hqq -n 16 -t 0 --device cuda
  san gen_fp32 generate $M260 -z $T512 -n 20 -t 0 --device cuda
  san gen_nf4 generate $M260 -z $T512 --quant nf4 -n 20 -t 0 --device cuda
  san eval_chunks eval $M260 "$OUT/eval30k.txt" -z $T512 -b 2 -T 300 --device cuda
  printf 'Once upon a time\n/adapter B\nThe dog\n/mix A:0.7,B:0.3\nLily went\n/mix A:0.2,B:1.3\nThe end\n/reset\n/adapter A\nThe cat\n' > "$OUT/chat_script.txt"
  san chat_offload chat $S/models/stories260K-hf-f32 -z $T512 -a A=$S/reference/peft/qv_r4 -a B=$S/reference/peft/all_r8_rslora \
    -t 0 -n 16 --device cuda --offload < "$OUT/chat_script.txt"
}
part_attention() {
  models TinyLlama-1.1B:2 Llama-2-7B:2
  local m a rc
  for m in TinyLlama-1.1B-2L Llama-2-7B-2L; do
    for a in 128 64; do
      PEFT_CUDA_ATTN=$a timeout 150 compute-sanitizer --tool memcheck --kernel-name kns=attention --print-limit 5 --error-exitcode 9 ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b 2 -T 200 \
        --targets q_proj,v_proj -r 8 --steps 1 --val-frac 0 --device cuda -o /tmp/pc_att > "$OUT/att_mem_${m}_$a.log" 2>&1; rc=$?
      grep -q "ERROR SUMMARY: 0 errors" "$OUT/att_mem_${m}_$a.log" && [ $rc = 0 ]; result $? "memcheck attention $m, ${a}-row forward (rc $rc)" "$OUT/att_mem_${m}_$a.log"
    done
    timeout 200 compute-sanitizer --tool racecheck --kernel-name kns=attention --print-limit 5 --error-exitcode 9 ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b 1 -T 200 \
      --targets q_proj,v_proj -r 8 --steps 1 --val-frac 0 --device cuda -o /tmp/pc_att > "$OUT/att_race_$m.log" 2>&1; rc=$?
    grep -qE "RACECHECK SUMMARY: 0 hazards|ERROR SUMMARY: 0 errors" "$OUT/att_race_$m.log" && [ $rc = 0 ]
    result $? "racecheck attention $m (rc $rc): $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/att_race_$m.log" | tail -1)" "$OUT/att_race_$m.log"
  done
}
part_copies() {
  models stories110M TinyLlama-1.1B TinyLlama-1.1B:2
  local M110=bench/cache/stories110M-hf-bf16 MT=bench/cache/TinyLlama-1.1B-hf-bf16 M2=bench/cache/TinyLlama-1.1B-2L-hf-bf16 three="--steps 3 --val-frac 0 --device cuda"
  chk() { local name=$1; shift; PEFT_CUDA_COPIES=check timeout 150 ./peft "$@" > "$OUT/copies_$name.log" 2>&1; local rc=$?
    result $rc "PEFT_CUDA_COPIES=check $name (rc $rc): $(grep -E 'step +3/|^peft:' "$OUT/copies_$name.log" | tail -1 | cut -c1-100)" "$OUT/copies_$name.log"; }
  chk dora_dropout train $M110 $D -z $TOK -b 4 -T 256 --targets all-linear --dora --dropout 0.1 $three -o /tmp/pc_c1
  chk full train $M2 $D -z $TOK -b 2 -T 512 --finetuning-type full $three -o /tmp/pc_c2
  chk qlora_nf4 train $M110 $D -z $TOK -b 4 -T 256 --quant nf4 --targets all-linear $three -o /tmp/pc_c3
  chk checkpointed train $M110 $D -z $TOK -b 4 -T 256 --targets q_proj,v_proj --checkpoint-activations $three -o /tmp/pc_c4
  chk generate generate $M110 -z $TOK -a /tmp/pc_c1 -n 40 -t 0 --device cuda
  chk tinyllama_dropout train $MT $D -z $TOK -b 4 -T 512 --targets q_proj,v_proj --dropout 0.05 $three -o /tmp/pc_c5
  local c
  for c in 0 1; do PEFT_CUDA_COPIES=$c timeout 100 ./peft train $MT $D -z $TOK -b 4 -T 512 --targets q_proj,v_proj --dropout 0.05 $three -o /tmp/pc_same$c > "$OUT/copies_same$c.log" 2>&1
    grep -E "step +[0-9]+/" "$OUT/copies_same$c.log" | sed 's/ | [0-9]* tok.s.*//' > "$OUT/copies_same$c.txt"; done
  [ -s "$OUT/copies_same1.txt" ] && cmp -s "$OUT/copies_same0.txt" "$OUT/copies_same1.txt"
  result $? "the same losses with the copies off and on: $(tail -1 "$OUT/copies_same1.txt")" "$OUT/copies_same0.txt"
}
part_devices() {
  head -c 30000 $D > "$OUT/eval30k.txt"
  local g c q
  g=$(./peft eval $M260 "$OUT/eval30k.txt" -z $T512 -b 2 -T 300 --device cuda --dtype fp32 2>/dev/null | tail -1 | grep -oE 'loss [0-9.]+')
  c=$(./peft eval $M260 "$OUT/eval30k.txt" -z $T512 -b 2 -T 300 --device cpu 2>/dev/null | tail -1 | grep -oE 'loss [0-9.]+')
  [ -n "$c" ] && [ "$g" = "$c" ]; result $? "eval in 512-row chunks, GPU fp32 = CPU: '$g' / '$c'" "-"
  for q in none nf4 int8; do
    # fp32 weights: --dtype fp32 (bf16 rounds them); quantized bases: the blocks are read as they are
    g=$(./peft generate $M260 -z $T512 --quant $q -n 80 -t 0 -p "Once upon" --device cuda $([ $q = none ] && echo --dtype fp32) 2>/dev/null)
    c=$(./peft generate $M260 -z $T512 --quant $q -n 80 -t 0 -p "Once upon" --device cpu 2>/dev/null)
    # int8: the CPU multiplies int8 activations, the GPU fp32 ones, so the texts may part after a while
    if [ $q = int8 ]; then echo "note generate --quant int8, GPU / CPU: $(echo "$g" | head -c 120 | tr '\n' ' ') / $(echo "$c" | head -c 120 | tr '\n' ' ')"; continue; fi
    [ -n "$c" ] && [ "$g" = "$c" ]; result $? "greedy generation --quant $q, GPU = CPU: $(echo "$g" | head -c 80 | tr '\n' ' ')" "-"
  done
}
part_sweep() {
  models TinyLlama-1.1B
  local i=0 opts rc
  while read -r opts; do i=$((i+1))
    timeout 90 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 2 -T 256 -r 8 --alpha 16 --steps 2 --val-frac 0 --device cuda -o /tmp/pc_sw$i $opts > "$OUT/sweep$i.log" 2>&1; rc=$?
    [ $rc = 0 ] && grep -qE 'step +2/2 \| loss [0-9]+\.[0-9]+' "$OUT/sweep$i.log"
    result $? "sweep $opts: $(grep -oE 'step +[0-9]+/[0-9]+ \| loss [0-9.a-z]+' "$OUT/sweep$i.log" | tail -1)" "$OUT/sweep$i.log"
  done <<'M'
--targets q_proj,v_proj --quant nf4 --checkpoint-activations
--targets q_proj,v_proj --quant nf4
--targets all-linear --quant nf4 --checkpoint-activations
--targets all-linear --quant int8 --dora
--targets q_proj,v_proj --quant int4 --checkpoint-activations --dora
--targets all-linear --checkpoint-activations
--targets q_proj,k_proj,o_proj,up_proj --dropout 0.1
--targets all-linear --dtype fp32
M
}
part_interop() {
  local rc
  ./peft train $S/models/stories260K-hf-f32 $S/data/tinyshakespeare.txt -z $T512 --steps 30 --targets all-linear -r 8 --alpha 16 \
    --lr 3e-3 -o /tmp/pc_gpu_ad --device cuda --dtype fp32 > "$OUT/interop_train.log" 2>&1 &&
  ./peft dump $S/models/stories260K-hf-f32 -a /tmp/pc_gpu_ad -i $S/reference/peft/qv_r4/reference.safetensors -o /tmp/pc_gdump.safetensors --device cuda --dtype fp32 > "$OUT/interop_dump.log" 2>&1 &&
  python3 tests/peft_interop.py $S/models/stories260K-hf-f32 /tmp/pc_gpu_ad /tmp/pc_gdump.safetensors --ids $S/reference/peft/qv_r4/reference.safetensors > "$OUT/interop.log" 2>&1
  result $? "an adapter trained on the GPU (fp32) in transformers + PEFT: $(grep -v Warning "$OUT/interop.log" | tail -1)" "$OUT/interop.log"
  DEVICES="cpu cuda" OUT="$OUT/family_interop" bash tests/family_interop.sh > "$OUT/family_interop.log" 2>&1; rc=$?; grep -E "^(PASS|FAIL)" "$OUT/family_interop.log"
  result $rc "tests/family_interop.sh: $(tail -1 "$OUT/family_interop.log")" "$OUT/family_interop.log"
  PEFT_DEVICE=cpu bash tests/ecosystem_gpu_check.sh > "$OUT/ecosystem.log" 2>&1; rc=$?; grep -E "^(PASS|FAIL)" "$OUT/ecosystem.log"
  result $rc "tests/ecosystem_gpu_check.sh" "$OUT/ecosystem.log"
  PEFT_DEVICE=cpu python3 tests/hostile/peft_check.py > "$OUT/hostile.log" 2>&1; result $? "tests/hostile/peft_check.py: $(grep -v Warning "$OUT/hostile.log" | tail -1)" "$OUT/hostile.log"
  PEFT_DEVICE=cpu python3 tests/check_new_tokens_peft.py > "$OUT/newtok.log" 2>&1; result $? "tests/check_new_tokens_peft.py: $(grep -v Warning "$OUT/newtok.log" | tail -1)" "$OUT/newtok.log"
}

# --offload: the offload tests of test_all (bit for bit against resident on small models), then a quantize --random
# model (SHAPE, default llama2-7b, in NF4) trained STEPS (5) steps at B x T (1 x 4096) resident with checkpointed
# activations, --offload, --offload activations and, with GPU_MEMORY set, as --gpu-memory plans it (MODES= picks the
# runs): tokens/s, GPU memory peak, and each adapter compared with the resident run's. The 70B bar:
# SHAPE=llama2-70b B=2 T=4096 STEPS=3 GPU_MEMORY=22G MODES="resident plan" RUN_T=250 tests/cuda/check.sh offload
# (8192 tokens a step; Llama-2-70B has 4096 positions; quantize --random llama2-70b takes about 4.5 minutes)
part_offload() {
  timeout 240 ./test_all --cuda offload > "$OUT/test_offload.log" 2>&1
  result $? "test_all --cuda offload: $(tail -1 "$OUT/test_offload.log")" "$OUT/test_offload.log"
  timeout 120 ./test_all --cuda chat > "$OUT/test_chat.log" 2>&1
  result $? "test_all --cuda chat: $(tail -1 "$OUT/test_chat.log")" "$OUT/test_chat.log"
  local M=/tmp/${SHAPE:-llama2-7b}-nf4.bin
  [ -f $M ] || ./peft quantize --random ${SHAPE:-llama2-7b} --quant nf4 --double-quant -o $M > "$OUT/offload_quantize.log" 2>&1
  local common="$M $D -z $T512 -b ${B:-1} -T ${T:-4096} --steps ${STEPS:-5} --val-frac 0 --targets q_proj,v_proj -r 8 --checkpoint-activations --bench --device cuda"
  for mode in ${MODES:-resident offload offload-activations ${GPU_MEMORY:+plan}}; do
    case $mode in resident) F="";; offload) F="--offload";; offload-activations) F="--offload activations";; plan) F="--gpu-memory $GPU_MEMORY";; esac
    timeout ${RUN_T:-150} ./peft train $common $F -o /tmp/pc_offload_$mode > "$OUT/offload_$mode.log" 2>&1; local rc=$?
    grep -E "^device|^memory|^bench|^done|^GPU memory plan|^  [ *] " "$OUT/offload_$mode.log" | cut -c1-300
    if [ $mode != resident ] && [ $rc = 0 ]; then cmp -s /tmp/pc_offload_resident/adapter_model.safetensors /tmp/pc_offload_$mode/adapter_model.safetensors; rc=$?; fi
    result $rc "${SHAPE:-llama2-7b} nf4 $mode${F:+ ($F)}: trained$([ $mode != resident ] && echo ', adapter == resident')" "$OUT/offload_$mode.log"
  done
}

part_families() {
  timeout 400 ./test_all --cuda families > "$OUT/test_families.log" 2>&1
  result $? "test_all --cuda families: $(tail -1 "$OUT/test_families.log")" "$OUT/test_families.log"; grep -E "^(FAIL|SKIP)" "$OUT/test_families.log" | cut -c1-300 | head -10
  models Gemma-2-tiny
  local MG=bench/cache/Gemma-2-tiny-hf-bf16 one="--steps 1 --val-frac 0 --device cuda"
  san gemma2_bf16 train $MG $D -z $TOK -b 2 -T 200 --targets all-linear $one -o /tmp/pc_gemma2
  san gemma2_fp32 train $MG $D -z $TOK -b 2 -T 200 --targets all-linear $one --dtype fp32 -o /tmp/pc_gemma2_fp32
  san gemma2_generate_window generate $MG -z $TOK -a /tmp/pc_gemma2 -n 100 -t 0 --device cuda
}

parts=${*:-build suite memcheck attention copies devices}
for p in $parts; do
  case $p in
    build|suite|memcheck|memcheck-train|memcheck-small|attention|copies|devices|sweep|interop|offload|families)
      echo "== $p"; T0=$(date +%s); part_${p//-/_}; echo "($p: $(( $(date +%s) - T0 )) s)" ;;
    *) echo "tests/cuda/check.sh: unknown part '$p' (build suite memcheck memcheck-train memcheck-small attention copies devices sweep interop offload families)"; exit 2 ;;
  esac
done
echo "check.sh $parts: $pass passed, $fail failed"
[ $fail = 0 ]
