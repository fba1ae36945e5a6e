#!/usr/bin/env bash
# tests/cuda/profile.sh PART [ARGS]: where a GPU step's time goes, run from the repository root on an NVIDIA GPU
# with ./peft built by make CUDA=1 (the bench shapes' random models are written to bench/cache/ by
# bench/bench_cuda.py: torch + transformers). Logs go to $OUT (default /tmp/peft_profile). Parts:
#   kernels [MODEL ...]   PEFT_CUDA_PROFILE=1 (GPU time per kernel, a CUDA event after each) over 4 steps of each
#                         bench row: TinyLlama (B8 T1024 q,v), stories110M (B16 all-linear), Llama-2-7B cut to 4 layers
#                         (B4 q,v); MODEL is one of tiny, 110m, 7b
#   rows [VAR=VAL ...]    the same rows' `peft train --bench` (median step, tok/s, GPU memory peak) with the default
#                         settings and with each VAR=VAL (e.g. PEFT_CUDA_EPI=0 PEFT_CUDA_LORA=apart PEFT_CUDA_ATTN=64
#                         PEFT_CUDA_WEIGHTS=fp32 PEFT_CUDA_ACTS=fp32; docs/GPU.md lists them), alternated ROUNDS times (2)
#   attention             forward + backward per layer, bf16, causal: peft.c's kernels (PEFT_CUDA_PROFILE in a 2-layer
#                         model, both forwards: PEFT_CUDA_ATTN=128 and 64) against PyTorch's sdpa, and sdpa's own
#                         kernels by torch.profiler (TinyLlama D64 GQA, Llama-2-7B D128)
#   ncu [REGEX]           Nsight Compute --set full on the first launches of the kernels REGEX matches (default the
#                         tensor-core attention kernels) in one step of NCU_MODEL (default Llama-2-7B:2, 2 layers;
#                         NCU_ARGS for other flags, e.g. NCU_MODEL=stories110M:2 NCU_ARGS="-b 16 --targets all-linear"
#                         with REGEX 'gemm_(narrow_k|small_n|small_m)' for LoRA's narrow products); prints the details
#                         and each kernel's stall reasons (tests/cuda/ncu_stalls.py)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/peft_profile}; mkdir -p "$OUT"
[ -e ../shared ] || { [ -d .carry/shared ] && ln -sfn "$PWD/.carry/shared" ../shared; }
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
[ -x ./peft ] || { echo "profile.sh: build ./peft first (make CUDA=1)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
models() { python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b
for a in sys.argv[1:]:
    n, _, l = a.partition(':'); b.model_folder(n, layers=int(l) if l else None)" "$@" > "$OUT/models.log" 2>&1 || { echo "bench/cache models $* failed: $OUT/models.log"; exit 1; }; }
folder() { local n=${1%%:*} l=${1#*:}; [ "$l" = "$1" ] && echo "bench/cache/$n-hf-bf16" || echo "bench/cache/$n-${l}L-hf-bf16"; }
# the bench rows: tag model:layers batch targets
ROWS="tiny:TinyLlama-1.1B:8:q_proj,v_proj 110m:stories110M:16:all-linear 7b:Llama-2-7B-4L:4:q_proj,v_proj"
row_args() { local m=$1 b=$2 tg=$3; echo "bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --val-frac 0 --device cuda"; }

part=${1:-}; shift || true
case $part in
kernels)
  models TinyLlama-1.1B stories110M Llama-2-7B:4
  want=${*:-tiny 110m 7b}
  for r in $ROWS; do IFS=: read -r tag m b tg <<< "$r"; [[ " $want " == *" $tag "* ]] || continue
    echo "== PEFT_CUDA_PROFILE $m B$b T1024 $tg"
    PEFT_CUDA_PROFILE=1 timeout 200 ./peft train $(row_args $m $b $tg) --steps 4 -o /tmp/pp_prof > "$OUT/prof_$tag.log" 2>&1; echo "rc $?"
    grep -A60 "GPU profile" "$OUT/prof_$tag.log" | head -45
  done ;;
rows)
  models TinyLlama-1.1B stories110M Llama-2-7B:4
  for i in $(seq ${ROUNDS:-2}); do
    for r in $ROWS; do IFS=: read -r tag m b tg <<< "$r"
      for v in DEFAULT=1 "$@"; do
        f="$OUT/row_${tag}_$(echo "$v" | tr -c 'A-Za-z0-9\n' _).log"; printf "%-5s %-28s " $tag "$v"
        env "$v" timeout 200 ./peft train $(row_args $m $b $tg) --steps 8 --bench -o /tmp/pp_row > "$f" 2>&1
        grep -oE "median step.*|GPU memory peak.*|peft: .*" "$f" | tr '\n' ' '; echo
      done
    done
  done ;;
attention)
  models TinyLlama-1.1B:2 Llama-2-7B:2
  PYTHONUNBUFFERED=1 timeout 400 python3 - "$D" "$TOK" <<'PY' 2>&1 | grep -v Warning
import os, statistics, sys
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
sys.path.insert(0, "bench")
import bench_cuda as b
for name in ("TinyLlama-1.1B", "Llama-2-7B"):
    cfg, B, T, _ = b.ROWS[name]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]; Dh = cfg["hidden_size"] // H
    for rows in ("128", "64", "128", "64"):
        os.environ["PEFT_CUDA_ATTN"] = rows
        ms, parts = b.attention_peft(name, sys.argv[1], sys.argv[2])
        print(f"{name} B{B} H{H} KV{KV} T{T} D{Dh} peft.c, {rows}-row forward: {ms:.3f} ms | " + ", ".join(f"{k.replace('attention_', '').replace('_kernel', '')} {v:.3f}" for k, v in parts.items()))
    os.environ.pop("PEFT_CUDA_ATTN")
    for rnd in range(2):
        print(f"{name} sdpa: {b.attention_sdpa(name)}")
    q, k, v = (torch.randn(B, H, T, Dh, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, T, Dh, device="cuda", dtype=torch.bfloat16)
    def both():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(do)
    for i in range(5):
        both()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        for i in range(5):
            both()
        torch.cuda.synchronize()
    print(f"{name} sdpa's kernels (K, V repeated), forward + backward:")
    for ev in sorted(p.key_averages(), key=lambda e: -e.device_time_total)[:6]:
        print(f"   {ev.key[:100]:100s} {ev.count:3d} calls {ev.device_time_total / max(ev.count, 1) / 1e3:.3f} ms")
PY
  ;;
ncu)
  regex=${1:-attention_(forward_tc|backward_d_|backward_dkv_tc|backward_dq_tc)}
  nm=${NCU_MODEL:-Llama-2-7B:2}; models "$nm"
  echo "== ncu --set full, kernels matching '$regex', one step of $(folder "$nm")"
  timeout 400 ncu -k regex:"$regex" -c ${NCU_COUNT:-4} --set full -o "$OUT/ncu" -f \
    ./peft train $(folder "$nm") $D -z $TOK -b 4 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/pp_ncu ${NCU_ARGS:-} > "$OUT/ncu_run.txt" 2>&1
  echo "rc $?"; tail -3 "$OUT/ncu_run.txt"
  ncu -i "$OUT/ncu.ncu-rep" --page details > "$OUT/ncu_details.txt" 2>&1
  grep -E "^  [a-z_]+.*\(|Duration|Elapsed Cycles|SM Active Cycles|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Warp Cycles Per Issued|Local|Bank" "$OUT/ncu_details.txt" | head -120
  ncu -i "$OUT/ncu.ncu-rep" --page raw --csv > "$OUT/ncu_raw.csv" 2>/dev/null
  python3 tests/cuda/ncu_stalls.py "$OUT/ncu_raw.csv" ;;
*) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$part" ] || { echo "profile.sh: unknown part '$part'"; exit 2; } ;;
esac
