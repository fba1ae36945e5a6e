#!/usr/bin/env bash
# bench/bench_big.sh [PART ...] (make bench-big; PARTS=...): issue 29's bars for big models on small GPUs, on a GPU
# machine, with ./peft from make CUDA=1 (make bench-big builds it). Each part prints its runs' key lines, the ratios
# and PASS/FAIL against the bar; the last line counts them. Models are written once into bench/cache (see each part).
#   load   time to the first LoRA step (q,v r8, 1 x 4096 tokens) of a random Llama-2-7B bf16 folder (13.5 GB, written
#          by bench/random_hf_folder.py, read from the page cache): peft.c bf16 and NF4 quantize-on-load against
#          transformers + PEFT (bench/hf_first_step.py: from_pretrained onto the GPU, get_peft_model, one AdamW step),
#          each from its process's start. Bars: bf16 <= 0.5x transformers', NF4 <= 1x; NF4 host peak <= 1.1x the
#          weights in memory + 2 GiB.
#   7b     Llama-2-7B shape NF4 (quantize --random), LoRA q,v r8, 1 x 4096 tokens, 5 steps: resident, resident with
#          checkpointed activations, --gpu-memory 6G. Bar: the 6G plan >= 50% of resident's tokens/s; the adapters
#          after 5 steps identical (cmp).
#   70b    Llama-2-70B shape NF4 (37.4 GB), LoRA q,v r8, 2 x 4096 = 8192 tokens a step, 3 steps: resident with
#          checkpointed activations (an 80 GB card) against --gpu-memory 22G. Bars: GPU peak <= 22 GiB, tokens/s
#          >= 70% of resident's, adapters identical.
#   70b-shard  (issue 32; 2 GPUs, ./peft from make CUDA=1 NCCL=1: make bench-multi-gpu runs it) Llama-2-70B shape NF4,
#          LoRA q,v r8, SHARD_T (1024) tokens a GPU a step, 3 steps: 1 GPU with 2 rows and --gpu-memory 22G (offloaded)
#          against 2 GPUs (WORLD_SIZE=2 by hand) with 1 row each and --shard --gpu-memory 22G. Bars: rank 0's GPU peak
#          <= 22 GiB with the base not in host memory (the plan says sharded weights); tokens/s >= 1.6x the 1-GPU run;
#          adapters within 1e-6 (tests/cuda/compare_runs.py: ||a-b|| / ||b|| over the whole adapter).
# Disk: load 13.5 GB, 7b 4.4 GB, 70b 37.4 GB in bench/cache (BENCH_CACHE; BENCH_BIG_CLEAN=1 removes each part's model
# when the part is done). Logs in $OUT (default /tmp/peft_bench_big). df and the time of each part are printed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/peft_bench_big}; mkdir -p "$OUT"
CACHE=${BENCH_CACHE:-bench/cache}; mkdir -p "$CACHE"
DATA=data/tinyshakespeare.txt; TOK=tokenizer.bin
pass=0; fail=0
result() { if [ "$1" = 0 ]; then pass=$((pass+1)); echo "PASS $2"; else fail=$((fail+1)); echo "FAIL $2"; fi; }
# field REGEX FILE: the first number after REGEX in FILE's matching line
field() { grep -oE "$1 [0-9.]+" "$2" | head -1 | awk '{print $NF}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 <= b + 0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.3f", a / b; else print "nan" }'; }
[ -x ./peft ] || { echo "bench_big: no ./peft (make CUDA=1 peft)"; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1
# train NAME ARGS...: ./peft train ARGS, its log in $OUT/NAME.log; prints the startup, plan choice and bench lines
train() { local name=$1; shift; timeout ${RUN_T:-300} ./peft train "$@" -o "$OUT/$name" > "$OUT/$name.log" 2>&1; local rc=$?
  grep -E "^startup|^bench|^plan:|^peft:" "$OUT/$name.log" | sed "s/^/  $name: /" | cut -c1-300; return $rc; }
# quantize --random SHAPE into the cache once
qmodel() { local m=$CACHE/$1-nf4.bin; if [ ! -f "$m" ]; then local t=$(date +%s)
    ./peft quantize --random "$1" --quant nf4 --double-quant -o "$m" > "$OUT/quantize_$1.log" 2>&1 || { echo "quantize $1 failed: $(tail -1 "$OUT/quantize_$1.log")" >&2; return 1; }
    echo "  quantize --random $1 --quant nf4 --double-quant: $(( $(date +%s) - t )) s ($(grep -o 'write [0-9.]* s' "$OUT/quantize_$1.log"))" >&2; fi; echo "$m"; }

part_load() {
  local F=$CACHE/llama2-7b-hf-bf16-random
  [ -f $F/config.json ] || { local t=$(date +%s); python3 bench/random_hf_folder.py $F --shape llama2-7b > "$OUT/folder.log" 2>&1 || { result 1 "writing $F (log: $OUT/folder.log)"; return; }; echo "  wrote $F in $(( $(date +%s) - t )) s"; }
  cat $F/*.safetensors > /dev/null # from the page cache, as the bar says
  local common="$F $DATA -z $TOK -b 1 -T 4096 --steps 1 --targets q_proj,v_proj -r 8 --alpha 16 --val-frac 0 --device cuda"
  train load_bf16 $common; local r1=$?
  train load_nf4 $common --quant nf4; local r2=$?
  timeout ${RUN_T:-300} python3 bench/hf_first_step.py $F -b 1 -T 4096 --t0 "$(date +%s.%N)" > "$OUT/load_hf.log" 2>&1; local r3=$?
  grep -E "^hf:|Error" "$OUT/load_hf.log" | tail -2 | sed "s/^/  transformers: /" | cut -c1-300
  local pb=$(field "first step done" "$OUT/load_bf16.log") pn=$(field "first step done" "$OUT/load_nf4.log") hf=$(field "first step done" "$OUT/load_hf.log")
  local peak=$(field "host memory peak" "$OUT/load_nf4.log") w=$(field "weights in memory" "$OUT/load_nf4.log")
  local bar=$(awk -v w="$w" 'BEGIN { printf "%.3f", 1.1 * w / 1024 + 2 }')
  result $([ $r1 = 0 ] && [ $r3 = 0 ] && le "$(ratio "$pb" "$hf")" 0.5; echo $?) "time to the first step, 7B bf16: peft.c $pb s, transformers + PEFT $hf s: $(ratio "$pb" "$hf")x (bar <= 0.5x)"
  result $([ $r2 = 0 ] && [ $r3 = 0 ] && le "$(ratio "$pn" "$hf")" 1; echo $?) "time to the first step, 7B NF4 quantize-on-load: peft.c $pn s against transformers' bf16 $hf s: $(ratio "$pn" "$hf")x (bar <= 1x)"
  result $([ $r2 = 0 ] && le "$peak" "$bar"; echo $?) "host memory peak, 7B NF4 quantize-on-load: $peak GiB for $w MiB of weights in memory (bar: 1.1x + 2 GiB = $bar GiB)"
  clean $F
}
# speed NAME BASELINE NAME2: tokens/s of two runs, their ratio, and whether the adapters are identical
tps() { grep "^bench" "$OUT/$1.log" | grep -oE "[0-9.]+ tok/s" | tail -1 | awk '{print $1}'; }
gpeak() { grep "^bench" "$OUT/$1.log" | grep -oE "GPU memory peak [0-9.]+" | tail -1 | awk '{print $NF}'; }
clean() { [ "${BENCH_BIG_CLEAN:-0}" = 1 ] && rm -rf "$@"; return 0; } # BENCH_BIG_CLEAN=1: each part removes its model when done
same() { cmp -s "$OUT/$1/adapter_model.safetensors" "$OUT/$2/adapter_model.safetensors"; }
part_7b() {
  local M; M=$(qmodel llama2-7b) || { result 1 "quantize --random llama2-7b"; return; }
  local common="$M $DATA -z $TOK -b 1 -T 4096 --steps 5 --val-frac 0 --targets q_proj,v_proj -r 8 --bench --device cuda"
  train 7b_resident $common; local r1=$?
  train 7b_checkpointed $common --checkpoint-activations; local r2=$?
  train 7b_plan6g $common --gpu-memory 6G; local r3=$?
  local a=$(tps 7b_resident) b=$(tps 7b_plan6g)
  same 7b_checkpointed 7b_plan6g; local s=$?
  result $([ $r1 = 0 ] && [ $r3 = 0 ] && le 0.5 "$(ratio "$b" "$a")"; echo $?) "7B NF4 --gpu-memory 6G: $b tok/s, GPU peak $(gpeak 7b_plan6g) GiB; resident $a tok/s (peak $(gpeak 7b_resident) GiB): $(ratio "$b" "$a")x (bar >= 0.5x)"
  result $([ $r2 = 0 ] && [ $s = 0 ]; echo $?) "7B NF4 --gpu-memory 6G: adapter after 5 steps == resident checkpointed's ($(same 7b_resident 7b_plan6g && echo '== resident too' || echo 'resident without checkpointing: differs'))"
  clean $M
}
part_70b() {
  local M; M=$(qmodel llama2-70b) || { result 1 "quantize --random llama2-70b"; return; }
  local common="$M $DATA -z $TOK -b 2 -T 4096 --steps 3 --val-frac 0 --targets q_proj,v_proj -r 8 --bench --device cuda"
  train 70b_resident $common --checkpoint-activations; local r1=$?
  train 70b_plan22g $common --gpu-memory 22G; local r2=$?
  local a=$(tps 70b_resident) b=$(tps 70b_plan22g) p=$(gpeak 70b_plan22g)
  same 70b_resident 70b_plan22g; local s=$?
  result $([ $r2 = 0 ] && le "$p" 22; echo $?) "70B NF4 --gpu-memory 22G at 2 x 4096 tokens: GPU peak $p GiB (bar <= 22)"
  result $([ $r1 = 0 ] && [ $r2 = 0 ] && le 0.7 "$(ratio "$b" "$a")"; echo $?) "70B NF4 --gpu-memory 22G: $b tok/s; resident checkpointed $a tok/s (peak $(gpeak 70b_resident) GiB): $(ratio "$b" "$a")x (bar >= 0.7x)"
  result $([ $r1 = 0 ] && [ $r2 = 0 ] && [ $s = 0 ]; echo $?) "70B NF4 --gpu-memory 22G: adapter after 3 steps == resident's"
  clean $M
}
part_70b_shard() {
  local M; M=$(qmodel llama2-70b) || { result 1 "quantize --random llama2-70b"; return; }
  local T=${SHARD_T:-1024} common="$M $DATA -z $TOK --steps 3 --val-frac 0 --targets q_proj,v_proj -r 8 --bench --device cuda --gpu-memory 22G"
  CUDA_VISIBLE_DEVICES=0 train 70b_1gpu $common -b 2 -T $T; local r1=$?
  local pids=() r2=0
  for r in 0 1; do WORLD_SIZE=2 RANK=$r LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=29660 timeout ${RUN_T:-300} ./peft train $common -b 1 -T $T --shard \
      -o "$OUT/70b_2gpu" > "$OUT/70b_2gpu.r$r.log" 2>&1 & pids+=($!); done
  for p in "${pids[@]}"; do wait $p || r2=1; done
  cp "$OUT/70b_2gpu.r0.log" "$OUT/70b_2gpu.log"
  grep -E "^startup|^bench|^plan:|^peft:|^data parallel" "$OUT/70b_2gpu.log" | sed "s/^/  70b_2gpu: /" | cut -c1-300; grep "^peft:" "$OUT/70b_2gpu.r1.log" | sed "s/^/  rank 1: /"
  local a=$(tps 70b_1gpu) b=$(tps 70b_2gpu) p=$(gpeak 70b_2gpu)
  result $([ $r2 = 0 ] && le "$p" 22 && grep -q "^plan: sharded weights" "$OUT/70b_2gpu.log"; echo $?) "70B NF4 on 2 GPUs, --shard --gpu-memory 22G at 1 x $T tokens a GPU: rank 0's GPU peak $p GiB (bar <= 22), plan: $(grep -oE '^plan: [a-z ,]+' "$OUT/70b_2gpu.log" | head -1 | cut -c7-) (bar: sharded weights)"
  result $([ $r1 = 0 ] && [ $r2 = 0 ] && le 1.6 "$(ratio "$b" "$a")"; echo $?) "70B NF4 --shard on 2 GPUs: $b tok/s; 1 GPU --gpu-memory 22G (plan: $(grep -oE '^plan: [a-z ,]+' "$OUT/70b_1gpu.log" | head -1 | cut -c7-)) $a tok/s: $(ratio "$b" "$a")x (bar >= 1.6x)"
  python3 tests/cuda/compare_runs.py adapter "$OUT/70b_2gpu" "$OUT/70b_1gpu" 1e-6 | sed 's/^/  /'; local s=${PIPESTATUS[0]}
  result $([ $r1 = 0 ] && [ $r2 = 0 ] && [ $s = 0 ]; echo $?) "70B NF4 --shard on 2 GPUs x 1 row: adapter after 3 steps within 1e-6 of 1 GPU x 2 rows"
  clean $M
}

parts=${*:-load 7b 70b}
for p in $parts; do
  case $p in
    load|7b|70b|70b-shard) echo "== $p ($(df -h "$CACHE" | awk 'NR == 2 {print $4}') free)"; T0=$(date +%s); part_${p//-/_}; echo "($p: $(( $(date +%s) - T0 )) s)" ;;
    *) echo "bench/bench_big.sh: unknown part '$p' (load 7b 70b 70b-shard)"; exit 2 ;;
  esac
done
echo "bench_big $parts: $pass passed, $fail failed"
[ $fail = 0 ]
