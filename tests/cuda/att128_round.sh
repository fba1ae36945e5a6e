#!/usr/bin/env bash
# A GPU round for the D128 attention backward: the GPU tests, PEFT_CUDA_PROFILE on the TinyLlama row, the bench
# rows (Tiny, 7B-4L), sdpa's forward alone and forward + backward with its kernels (torch.profiler), and ncu
# (--set full, one launch) on the attention kernels of a Llama-2-7B-shaped 2-layer step. Prebuilt ./peft, ./test_all.
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B'); b.model_folder('Llama-2-7B', layers=4); b.model_folder('Llama-2-7B', layers=2)" > /dev/null 2>&1
OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"
grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -8
if [ "${PROF:-1}" = 1 ]; then
  echo "== profile TinyLlama B8"
  PEFT_CUDA_PROFILE=1 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof > "$OUT/prof_tiny.log" 2>&1
  grep -A60 "GPU profile" "$OUT/prof_tiny.log" | grep -v 'round_bf16\|encoder_forward' | head -34
fi
run() { local tag=$1 m=$2 b=$3 tg=$4; shift 4; local f="$OUT/$(echo $tag | tr -c 'A-Za-z0-9\n' _).log"; printf "%-28s " "$tag"; env "$@" ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk > "$f" 2>&1; grep -oE "median step.*|GPU memory peak.*|peft: .*" "$f" | tr '\n' ' '; echo; }
echo "== rows"; run "Tiny" TinyLlama-1.1B 8 q_proj,v_proj; run "7B-4L" Llama-2-7B-4L 4 q_proj,v_proj
echo "== attention per layer, ours (2-layer models) and sdpa split"
PYTHONUNBUFFERED=1 timeout 200 python3 - "$D" "$TOK" > "$OUT/att.log" 2>&1 <<'PY'
import sys, torch, statistics
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
sys.path.insert(0, "bench")
import bench_cuda as b
for name in ("TinyLlama-1.1B", "Llama-2-7B"):
    cfg, B, T, _ = b.ROWS[name]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]; Dh = cfg["hidden_size"] // H
    ms, parts = b.attention_peft(name, sys.argv[1], sys.argv[2])
    print(f"{name} ours {ms:.3f} ms | " + ", ".join(f"{k.replace('attention_', '').replace('_kernel', '')} {v:.3f}" for k, v in parts.items()))
    q = torch.randn(B, H, T, Dh, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, H, T, Dh, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, H, T, Dh, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn(B, H, T, Dh, device="cuda", dtype=torch.bfloat16)
    def t(fn):
        ts = []
        for i in range(25):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); fn(); e.record(); torch.cuda.synchronize()
            if i >= 5: ts.append(s.elapsed_time(e))
        return statistics.median(ts)
    def fwd():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad(): F.scaled_dot_product_attention(q, k, v, is_causal=True)
    def both():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION): o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(do)
    print(f"{name} sdpa (K V repeated) fwd {t(fwd):.3f} ms, fwd+bwd {t(both):.3f} ms")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        for i in range(5): both()
        torch.cuda.synchronize()
    for ev in sorted(p.key_averages(), key=lambda e: -e.device_time_total)[:6]:
        print(f"   {ev.key[:110]:110s} {ev.count:3d} calls {ev.device_time_total / max(ev.count, 1) / 1e3:.3f} ms")
PY
echo "rc $?"; cat "$OUT/att.log" | grep -v Warning | tail -20
if [ "${NCU:-1}" = 1 ]; then
  echo "== ncu attention kernels, Llama-2-7B shape (2 layers), one launch each"
  timeout 240 ncu -k regex:"attention_(backward_dkv_tc|forward_tc|backward_dq_tc)" -c 3 --set full -o "$OUT/att128" \
    ./peft train bench/cache/Llama-2-7B-2L-hf-bf16 $D -z $TOK -b 4 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/ncu_out > "$OUT/ncu_run.txt" 2>&1
  echo "rc $?"; tail -3 "$OUT/ncu_run.txt"
  ncu -i "$OUT/att128.ncu-rep" --page details > "$OUT/ncu_att.txt" 2>&1
  grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Warp Cycles Per Issued|L1/TEX Hit|Shared Memory|Bank|Executed Ipc A|Block Limit" "$OUT/ncu_att.txt" | head -90
  ncu -i "$OUT/att128.ncu-rep" --page raw --csv 2>/dev/null > "$OUT/ncu_raw.csv"
  python3 tests/cuda/ncu_stalls.py "$OUT/ncu_raw.csv" smsp__inst_executed.sum sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active l1tex__data_pipe_lsu_wavefronts_mem_shared.sum l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum smsp__inst_executed_op_ldsm.sum sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active smsp__issue_active.avg.pct_of_peak_sustained_active
fi
