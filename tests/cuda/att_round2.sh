#!/usr/bin/env bash
# Attention A/B round (prebuilt ./peft, ./test_all; variants/peft_* built with other -D settings): the GPU
# tests, the attention rows for ./peft and each variant, and ncu's stall reasons for the attention kernels.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
OMP_NUM_THREADS=8 timeout 170 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-300 | head -6
grep "flash attention bf16" "$OUT/test_cuda.log" | cut -c1-300
cp peft /tmp/peft_main
for v in main variants/peft_*; do
  [ "$v" = main ] || cp "$v" peft
  echo "== attention rows: $v"; PYTHONUNBUFFERED=1 timeout 200 python3 bench/bench_cuda.py --rows "" --gen-rows "" ${ATT_ARGS:-} > "$OUT/att_$(basename $v).log" 2>&1; echo "rc $?"; grep "^| B" "$OUT/att_$(basename $v).log"
  cp /tmp/peft_main peft
done
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
R="barrier branch_resolving dispatch_stall lg_throttle long_scoreboard math_pipe_throttle mio_throttle misc no_instruction not_selected selected short_scoreboard wait"
M=$(for r in $R; do printf "smsp__average_warps_issue_stalled_%s_per_issue_active.ratio," $r; done)
echo "== ncu stall reasons (warps stalled per issued instruction)"
timeout 200 ncu -k regex:attention_ --launch-count 4 --metrics ${M%,},smsp__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum \
  ./peft train bench/cache/TinyLlama-1.1B-2L-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/ncu_out > "$OUT/ncu_stall.txt" 2>&1
echo "rc $?"; grep -E "^  [a-z_ ]+.*\(|stalled|inst_executed|hmma|duration" "$OUT/ncu_stall.txt" | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | awk '{ if ($0 ~ /^  /) print substr($0,1,60); else print }' | head -80
