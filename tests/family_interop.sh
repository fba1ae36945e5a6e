#!/usr/bin/env bash
# Issue 28's interop bar for every model family in tests/reference/families: an adapter trained by peft.c
# (all-linear LoRA, 20 steps) loads in transformers + PEFT with `peft dump`'s logits, and the folder `peft merge`
# writes from it loads in transformers with the same logits. Needs torch, transformers and peft (the GPU
# machine). DEVICES="cpu cuda" trains on each (cuda in fp32); the dumps run on the CPU.
#   tests/family_interop.sh [FAMILY...]        (default: every folder of tests/reference/families)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/peft_family_interop}; mkdir -p "$OUT"
[ -e ../shared ] || { [ -d .carry/shared ] && ln -sfn "$PWD/.carry/shared" ../shared; }
head -c 20000 ../shared/data/tinyshakespeare.txt > "$OUT/data.txt"
# a byte-level tokenizer of 256 ids (the tiny models' vocabulary): GPT-2's byte-to-character map, no merges
python3 - "$OUT/bytes256.json" <<'PY'
import json, sys
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256)); cs = bs[:]
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + len(cs) - 188)
m = dict(zip(bs, map(chr, cs)))
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
json.dump({"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": bl, "post_processor": None, "decoder": bl,
           "model": {"type": "BPE", "vocab": {m[b]: b for b in range(256)}, "merges": []}}, open(sys.argv[1], "w"))
PY
pass=0; fail=0
result() { if [ "$1" = 0 ]; then pass=$((pass+1)); echo "PASS $2"; else fail=$((fail+1)); echo "FAIL $2 (log: $3)"; fi; }
fams=${*:-$(ls tests/reference/families)}
for f in $fams; do
  R=tests/reference/families/$f
  for dev in ${DEVICES:-cpu}; do
    A=$OUT/$f-$dev; rm -rf "$A" "$A-merged"; log=$OUT/$f-$dev.log
    dt=""; [ "$dev" = cuda ] && dt="--dtype fp32"
    OMP_NUM_THREADS=1 ./peft train $R/model "$OUT/data.txt" -z "$OUT/bytes256.json" --steps 20 -b 2 -T 32 --targets all-linear -r 4 --alpha 8 \
      --lr 1e-2 --init gaussian --val-frac 0 --device $dev $dt -o "$A" > "$log" 2>&1 &&
    ./peft dump $R/model -a "$A" -i $R/reference.safetensors -o "$A/dump.safetensors" --device cpu >> "$log" 2>&1 &&
    python3 tests/peft_interop.py $R/model "$A" "$A/dump.safetensors" --ids $R/reference.safetensors --eager >> "$log" 2>&1
    result $? "$f: an adapter trained by peft.c ($dev) in transformers + PEFT: $(grep 'max abs diff' "$log" | tail -1 | sed 's/.*logits/logits/')" "$log"
    ./peft merge $R/model "$A" -o "$A-merged" >> "$log" 2>&1 &&
    python3 tests/peft_interop.py "$A-merged" - "$A/dump.safetensors" --ids $R/reference.safetensors --eager >> "$log" 2>&1
    result $? "$f: peft merge's folder ($dev adapter) in transformers: $(grep 'max abs diff' "$log" | tail -1 | sed 's/.*logits/logits/')" "$log"
  done
done
echo "family_interop: $pass passed, $fail failed"
[ $fail = 0 ]
