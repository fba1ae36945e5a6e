#!/usr/bin/env bash
# ncu on LoRA's narrow products (prebuilt ./peft): one stories110M all-linear step, the first launches of
# gemm_narrow_k_kernel, gemm_small_n_kernel and gemm_small_m_kernel: duration, throughput, stall reasons.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('stories110M', layers=2)" 2>/dev/null
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
R="barrier long_scoreboard lg_throttle math_pipe_throttle mio_throttle short_scoreboard wait not_selected selected no_instruction drain"
M=$(for r in $R; do printf "smsp__average_warps_issue_stalled_%s_per_issue_active.ratio," $r; done)
timeout 200 ncu -k regex:"gemm_(narrow_k|small_n|small_m)" --launch-count 8 --metrics ${M%,},gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__registers_per_thread,smsp__inst_executed.sum \
  ./peft train bench/cache/stories110M-2L-hf-bf16 $D -z $TOK -b 16 -T 1024 --targets all-linear -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/ncu_out > "$OUT/ncu_narrow.txt" 2>&1
echo "rc $?"; grep -E "^  [a-z_ ]+.*\(|stalled|duration|dram__|warps_active|grid_size|registers|inst_exec" "$OUT/ncu_narrow.txt" | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | awk '{ if ($0 ~ /^  [a-z]/) print substr($0,1,40) " " $NF; else print $1, $NF }' | head -140
