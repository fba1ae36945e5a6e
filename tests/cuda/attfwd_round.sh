#!/usr/bin/env bash
# A GPU round for the attention forward with 128 query rows a block (a warp 32) against 64 (PEFT_CUDA_ATTN=64)
# and the coalesced D = rowsum(dO o O): the GPU tests, per-layer attention times (PEFT_CUDA_PROFILE, 2-layer
# models, the two forwards alternated) against sdpa, the Tiny and 7B-4L rows, and ncu on the forward and D
# kernels (7B shape). Prebuilt ./peft, ./test_all (make CUDA=1 here).
set -u
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench_cuda as b; b.model_folder('TinyLlama-1.1B'); b.model_folder('Llama-2-7B', layers=4); b.model_folder('Llama-2-7B', layers=2); b.model_folder('TinyLlama-1.1B', layers=2)" > /dev/null 2>&1
if [ "${TESTS:-1}" = 1 ]; then OMP_NUM_THREADS=8 timeout 200 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"
  grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -8; grep "flash attention" "$OUT/test_cuda.log" | cut -c1-420; fi
echo "== attention per layer (ms), ours alternated with PEFT_CUDA_ATTN=64, and sdpa"
PYTHONUNBUFFERED=1 timeout 240 python3 - "$D" "$TOK" > "$OUT/att.log" 2>&1 <<'PY'
import sys, os
sys.path.insert(0, "bench")
import bench_cuda as b
for name in ("TinyLlama-1.1B", "Llama-2-7B"):
    for rnd in range(2):
        for rows in ("128", "64"):
            os.environ["PEFT_CUDA_ATTN"] = rows
            ms, parts = b.attention_peft(name, sys.argv[1], sys.argv[2])
            print(f"{name} rows {rows}: {ms:.3f} ms | " + ", ".join(f"{k.replace('attention_', '').replace('_kernel', '')} {v:.3f}" for k, v in parts.items()))
    os.environ.pop("PEFT_CUDA_ATTN")
    for rnd in range(2): print(f"{name} sdpa {b.attention_sdpa(name)}")
PY
echo "rc $?"; grep -v Warning "$OUT/att.log" | tail -20
run() { local tag=$1 m=$2 b=$3 tg=$4; shift 4; local f="$OUT/$(echo $tag | tr -c 'A-Za-z0-9\n' _).log"; printf "%-28s " "$tag"; env "$@" ./peft train bench/cache/$m-hf-bf16 $D -z $TOK -b $b -T 1024 --targets $tg -r 8 --alpha 16 --steps 8 --val-frac 0 --bench --device cuda -o /tmp/pk > "$f" 2>&1; grep -oE "median step.*|GPU memory peak.*|peft: .*" "$f" | tr '\n' ' '; echo; }
echo "== rows"
for a in 128 64 128 64; do run "Tiny attn $a" TinyLlama-1.1B 8 q_proj,v_proj PEFT_CUDA_ATTN=$a; done
for a in 128 64; do run "7B-4L attn $a" Llama-2-7B-4L 4 q_proj,v_proj PEFT_CUDA_ATTN=$a; done
if [ "${NCUD:-0}" = 1 ]; then
  echo "== ncu D kernel, Llama-2-7B shape (2 layers)"
  timeout 120 ncu -k regex:"attention_backward_d_" -c 1 --section SpeedOfLight --section LaunchStats --section Occupancy \
    ./peft train bench/cache/Llama-2-7B-2L-hf-bf16 $D -z $TOK -b 4 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/ncu_out > "$OUT/ncu_d.txt" 2>&1
  echo "rc $?"; grep -E "attention_backward_d|Duration|DRAM Throughput|Registers Per|Achieved Occ" "$OUT/ncu_d.txt" | cut -c1-140
fi
if [ "${NCUS:-0}" = 1 ]; then
  echo "== ncu forward, dK/dV, dQ: elapsed against SM active cycles (the tail), Llama-2-7B shape (2 layers)"
  timeout 150 ncu -k regex:"attention_(forward_tc|backward_dkv_tc|backward_dq_tc)" -c 4 --section SpeedOfLight --section Occupancy --section LaunchStats \
    ./peft train bench/cache/Llama-2-7B-2L-hf-bf16 $D -z $TOK -b 4 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/ncu_out > "$OUT/ncu_s.txt" 2>&1
  echo "rc $?"; grep -E "^  [a-z_]+.*\(|Duration|Elapsed Cycles|SM Active Cycles|Achieved Occ" "$OUT/ncu_s.txt" | cut -c1-100
fi
if [ "${NCU:-1}" = 1 ]; then
  for a in 128 64; do
    echo "== ncu forward (rows $a) and D, Llama-2-7B shape (2 layers)"
    PEFT_CUDA_ATTN=$a timeout 150 ncu -k regex:"attention_(forward_tc|backward_d_)" -c 3 --set full -o "$OUT/fwd$a" \
      ./peft train bench/cache/Llama-2-7B-2L-hf-bf16 $D -z $TOK -b 4 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 1 --val-frac 0 --device cuda -o /tmp/ncu_out > "$OUT/ncu_run$a.txt" 2>&1
    echo "rc $?"
    ncu -i "$OUT/fwd$a.ncu-rep" --page details > "$OUT/ncu_fwd$a.txt" 2>&1
    grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Warp Cycles Per Issued|Local" "$OUT/ncu_fwd$a.txt" | head -40
    ncu -i "$OUT/fwd$a.ncu-rep" --page raw --csv 2>/dev/null > "$OUT/ncu_raw$a.csv"
    python3 tests/cuda/ncu_stalls.py "$OUT/ncu_raw$a.csv"
  done
fi
