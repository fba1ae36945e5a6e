#!/usr/bin/env bash
# Cross-endian check (make cross-test runs it after the s390x suite): files written on big-endian
# s390x (under qemu) load on this little-endian x86-64 machine and the reverse.
#   - written on each machine: a LoRA adapter and a training checkpoint (train), a merged model (.bin
#     and a bf16 Hugging Face folder: merge), quantized models (int8, int4, nf4 + double quantization)
#   - each file is loaded by both machines (dump: logits of reference input ids); the logits of the same
#     file on the two machines must agree within 1e-5 (max abs). The x86-64 reader for this is peft built
#     with PORTABLE=1's flags (the plain loops, as on s390x), so the difference measures the loading and
#     not the kernels; ./peft (AVX2/AVX-512 GEMM, other rounding) is compared too, within 1e-4 (the
#     suite's tolerance against PyTorch), and printed
#   - a checkpoint written on one machine is resumed on the other; the finished adapters agree within 1e-5
#   - pure conversions (quantize, merge of a zero-weight adapter into a bf16 folder) are byte-identical
# Needs ./peft (make), cross/s390x/peft (tests/cross_test.sh s390x), qemu-s390x, python3 and ../shared.
# Prints one line per comparison and "cross-endian: N passed, N failed"; exit status 1 on a failure.
set -u
cd "$(dirname "$0")/.."
S=../shared/models/stories260K
HF=../shared/models/stories260K-hf-f32
IDS=../shared/reference/peft/qv_r4/reference.safetensors
for f in ./peft cross/s390x/peft $S/stories260K.bin $S/tok512.bin $HF $IDS ../shared/data/tinyshakespeare.txt; do
  [ -e "$f" ] || { echo "SKIP cross-endian: needs $f"; exit 0; }
done
NICE=${CROSS_NICE:-nice -n 10}
export QEMU_LD_PREFIX=/usr/s390x-linux-gnu
W=cross/endian
[ "${CROSS_ENDIAN_REUSE:-0}" = 1 ] || rm -rf "$W"
mkdir -p "$W/x86_plain"
head -c 60000 ../shared/data/tinyshakespeare.txt > "$W/data.txt"
${CC:-cc} -O2 -std=c99 -Wall -Wextra -Wno-unknown-pragmas peft.c -o "$W/x86_plain/peft" -lm || { echo "FAIL cross-endian: cannot build the plain x86-64 peft"; exit 1; }
run() { # run MACHINE args...: x86 (./peft), x86p (plain loops) or s390x (cross/s390x/peft under qemu)
  local m=$1; shift
  case $m in
    x86) $NICE ./peft "$@" ;;
    x86p) $NICE "$W/x86_plain/peft" "$@" ;;
    *) $NICE qemu-s390x cross/s390x/peft "$@" ;;
  esac
}
pass=0; fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
# max |a - b| over the logits of two dump outputs (standard-library Python, files are little-endian)
maxdiff() {
  python3 - "$1" "$2" <<'EOF'
import json, struct, sys
def logits(path):
    b = open(path, 'rb').read()
    (n,) = struct.unpack_from('<Q', b, 0)
    h = json.loads(b[8:8 + n])
    t = h['logits']; s, e = t['data_offsets']
    assert t['dtype'] == 'F32'
    return struct.unpack_from('<%df' % ((e - s) // 4), b, 8 + n + s)
a, b = logits(sys.argv[1]), logits(sys.argv[2])
assert len(a) == len(b) and len(a) > 0
print('%.3e %d' % (max(abs(x - y) for x, y in zip(a, b)), len(a)))
EOF
}
# --- write: the same commands on both machines
for m in x86 s390x; do
  o=$W/$m
  [ "${CROSS_ENDIAN_REUSE:-0}" = 1 ] && [ -f "$o/nf4dq.bin" ] && continue
  mkdir -p "$o"
  run $m train $S/stories260K.bin "$W/data.txt" -z $S/tok512.bin -o "$o/run" --steps 4 --save-every 2 -T 64 -b 2 \
      --targets all-linear -r 4 --alpha 8 --lr 3e-3 --val-frac 0 -s 7 > "$o/train.log" 2>&1 || bad "$m: train ($(tail -1 "$o/train.log"))"
  run $m merge $S/stories260K.bin "$o/run" -o "$o/merged.bin" > /dev/null 2>&1 || bad "$m: merge into .bin"
  run $m merge $HF "$o/run:0" -o "$o/hf_bf16" --dtype bf16 > /dev/null 2>&1 || bad "$m: merge (weight 0) into a bf16 folder"
  run $m quantize $S/stories260K.bin -o "$o/int8.bin" --quant int8 > /dev/null 2>&1 || bad "$m: quantize int8"
  run $m quantize $S/stories260K.bin -o "$o/int4.bin" --quant int4 --quant-embeddings > /dev/null 2>&1 || bad "$m: quantize int4"
  run $m quantize $S/stories260K.bin -o "$o/nf4dq.bin" --quant nf4 --double-quant > /dev/null 2>&1 || bad "$m: quantize nf4"
done
# --- pure conversions: the same bytes from both machines
for f in int8.bin int4.bin nf4dq.bin hf_bf16/model.safetensors hf_bf16/config.json; do
  if cmp -s "$W/x86/$f" "$W/s390x/$f"; then ok "byte-identical from x86-64 and s390x: $f ($(wc -c < "$W/x86/$f") bytes)"
  else bad "$f differs between x86-64 and s390x"; fi
done
# --- load every file on both machines: same logits
check_logits() { # label, then dump arguments (model and options)
  local label=$1; shift
  for w in x86 s390x; do
    local args=("${@//@W@/$W/$w}")
    run x86p dump "${args[@]}" -i $IDS -o "$W/$w/l_x86p.safetensors" > /dev/null 2>&1 || { bad "$label written on $w: x86-64 cannot load it"; continue; }
    run x86 dump "${args[@]}" -i $IDS -o "$W/$w/l_x86.safetensors" > /dev/null 2>&1 || { bad "$label written on $w: x86-64 (./peft) cannot load it"; continue; }
    run s390x dump "${args[@]}" -i $IDS -o "$W/$w/l_s390x.safetensors" > /dev/null 2>&1 || { bad "$label written on $w: s390x cannot load it"; continue; }
    read -r d n < <(maxdiff "$W/$w/l_x86p.safetensors" "$W/$w/l_s390x.safetensors")
    read -r d2 n2 < <(maxdiff "$W/$w/l_x86.safetensors" "$W/$w/l_s390x.safetensors")
    if python3 -c "import sys; sys.exit(0 if float('$d') <= 1e-5 and float('$d2') <= 1e-4 else 1)"; then
      ok "$label written on $w, loaded on x86-64 and on s390x: max |logit diff| $d over $n logits (./peft with AVX-512 kernels: $d2)"
    else bad "$label written on $w: x86-64 and s390x logits differ by $d (plain loops; bar 1e-5), $d2 (./peft; bar 1e-4)"; fi
  done
}
check_logits "adapter (all-linear r4)" $S/stories260K.bin -a @W@/run
check_logits "checkpoint-2 (its adapter)" $S/stories260K.bin -a @W@/run/checkpoint-2
check_logits "merged model (.bin)" @W@/merged.bin
check_logits "bf16 folder" @W@/hf_bf16
check_logits "int8 model (v2)" @W@/int8.bin
check_logits "int4 model (v3)" @W@/int4.bin
check_logits "nf4 model (v4, double quant)" @W@/nf4dq.bin
# --- checkpoints: resume on the other machine, then load both finished adapters on x86-64
for w in x86 s390x; do
  other=$([ $w = x86 ] && echo s390x || echo x86)
  o=$W/resume_${w}_on_$other
  run $other train $S/stories260K.bin "$W/data.txt" -z $S/tok512.bin -o "$o" --steps 4 --save-every 2 -T 64 -b 2 \
      --targets all-linear -r 4 --alpha 8 --lr 3e-3 --val-frac 0 -s 7 --resume "$W/$w/run/checkpoint-2" > "$o.log" 2>&1 \
    || { bad "checkpoint written on $w: $other cannot resume it ($(tail -1 "$o.log"))"; continue; }
  run x86p dump $S/stories260K.bin -a "$o" -i $IDS -o "$o.a.safetensors" > /dev/null 2>&1
  run x86p dump $S/stories260K.bin -a "$W/$w/run" -i $IDS -o "$o.b.safetensors" > /dev/null 2>&1
  read -r d n < <(maxdiff "$o.a.safetensors" "$o.b.safetensors")
  if python3 -c "import sys; sys.exit(0 if float('$d') <= 1e-5 else 1)"; then ok "checkpoint written on $w resumed on $other (steps 3-4) vs $w's own run: max |logit diff| $d"
  else bad "checkpoint written on $w resumed on $other: logits differ by $d from $w's own run (> 1e-5)"; fi
done
echo "cross-endian: $pass passed, $fail failed"
[ $fail -eq 0 ]
