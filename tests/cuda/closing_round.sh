#!/usr/bin/env bash
# The closing GPU round of the wgmma session (prebuilt ./peft and ./test_all, make CUDA=1 here): the GPU tests,
# compute-sanitizer memcheck over a training step (bf16: the wgmma GEMM and the cp.async attention;
# fp32) and a generation, make bench-cuda with torch.compile, a TinyLlama profile; and the fuzz
# targets on the host's other cores throughout (three groups, more cores where fewer hours were run).
set -u
T0=$(date +%s); END=$((T0 + ${ROUND_S:-540})) # everything ends by then
left() { echo $((END - $(date +%s))); }
OUT=${OUT:-/tmp/peft_round}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
nvidia-smi --query-gpu=name --format=csv,noheader | head -1; echo "cores $(nproc)"
FS=${FUZZ_S:-450}; F1="" F2="" F3=""
if [ -x tests/fuzz/bin/fuzz_all ] && [ "$FS" -gt 0 ]; then
  TMPDIR=/dev/shm bash tests/fuzz/fuzz_many.sh -j 16 -s $FS -t "llama2c_bin trainer_state safetensors tokenizer_bin" -w /dev/shm/fa -n 19 > "$OUT/fuzzA.log" 2>&1 & F1=$!
  TMPDIR=/dev/shm bash tests/fuzz/fuzz_many.sh -j 12 -s $FS -t "hf_model adapter tokenizer_json instruct" -w /dev/shm/fb -n 19 > "$OUT/fuzzB.log" 2>&1 & F2=$!
  TMPDIR=/dev/shm bash tests/fuzz/fuzz_many.sh -j 6 -s $FS -t "json hf_config text" -w /dev/shm/fc -n 19 > "$OUT/fuzzC.log" 2>&1 & F3=$!
fi
export OMP_NUM_THREADS=8
timeout 150 ./test_all --cuda > "$OUT/test_cuda.log" 2>&1; echo "== test_all --cuda (rc $?): $(tail -1 $OUT/test_cuda.log)"; grep -v "^PASS" "$OUT/test_cuda.log" | grep -v "^==" | cut -c1-400 | head -6; grep -E "attention|cuda matmul bf16" "$OUT/test_cuda.log" | cut -c1-330
python3 -c "
import sys; sys.path.insert(0,'bench'); from bench_cuda import model_folder; model_folder('stories110M')" > /dev/null 2>&1
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt; S=../shared
CS="compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9"
for dt in bf16 fp32; do
  timeout 90 $CS ./peft train bench/cache/stories110M-hf-bf16 $D -z $TOK -b 2 -T 136 --targets all-linear --dora --dropout 0.1 --steps 1 --val-frac 0 --device cuda --dtype $dt -o /tmp/san_$dt > "$OUT/san_$dt.log" 2>&1; echo "memcheck train $dt rc=$?: $(tail -1 $OUT/san_$dt.log)"
done
timeout 45 $CS ./peft generate $S/models/stories260K/stories260K.bin -z $S/models/stories260K/tok512.bin -n 20 -t 0 --device cuda > "$OUT/san_gen.log" 2>&1; echo "memcheck generate rc=$?: $(tail -1 $OUT/san_gen.log)"
unset OMP_NUM_THREADS
echo "== bench-cuda (compile)"; BT=$(( $(left) - 100 )); [ $BT -gt 290 ] && BT=290; echo "(bench timeout $BT s)"; PYTHONUNBUFFERED=1 timeout $BT python3 bench/bench_cuda.py --compile > "$OUT/bench.log" 2>&1; grep -v "it/s\]" "$OUT/bench.log" | tail -5
for f in $F1 $F2 $F3; do wait $f; done
echo "== fuzz"; for g in A B C; do grep -A6 "^target" "$OUT/fuzz$g.log" | grep -v "^total\|^target"; grep "^total\|s wall" "$OUT/fuzz$g.log"; done
tar czf "$OUT/fuzz.tgz" -C /dev/shm fa/artifacts fb/artifacts fc/artifacts $(cd /dev/shm && ls fa/*.log fb/*.log fc/*.log) 2>/dev/null; find /dev/shm/fa/artifacts /dev/shm/fb/artifacts /dev/shm/fc/artifacts -type f | wc -l
[ $(left) -gt 45 ] && echo "== profile TinyLlama" && PEFT_CUDA_PROFILE=1 timeout 40 ./peft train bench/cache/TinyLlama-1.1B-hf-bf16 $D -z $TOK -b 8 -T 1024 --targets q_proj,v_proj -r 8 --alpha 16 --steps 4 --val-frac 0 --device cuda -o /tmp/prof_tl 2>&1 | grep -A30 "GPU profile" | grep -E "profile|gemm|attention|to_bf16|swiglu|rmsnorm"
