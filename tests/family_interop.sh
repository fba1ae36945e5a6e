#!/usr/bin/env bash
# Issue 28's interop bar for every model family in tests/reference/families: an adapter trained by peft.c
# (all-linear LoRA, DoRA where the fixture's adapter is one, 20 steps) loads in transformers + PEFT with `peft dump`'s
# logits, and the folder `peft merge` writes from it loads in transformers with the same logits; all the checks run
# in one python process (tests/peft_interop.py --cases). Needs torch, transformers and peft (the GPU
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
: > "$OUT/cases.txt"
for f in $fams; do
  R=tests/reference/families/$f
  # the fixture's adapter kind (DoRA) is what peft.c trains here too
  kind=""; grep -q '"use_dora": true' $R/adapter/adapter_config.json 2>/dev/null && kind="--dora"
  for dev in ${DEVICES:-cpu}; do
    A=$OUT/$f-$dev; rm -rf "$A" "$A-merged"; log=$OUT/$f-$dev.log
    dt=""; [ "$dev" = cuda ] && dt="--dtype fp32"
    OMP_NUM_THREADS=1 ./peft train $R/model "$OUT/data.txt" -z "$OUT/bytes256.json" --steps 20 -b 2 -T 32 --targets all-linear -r 4 --alpha 8 $kind \
      --lr 1e-2 --init gaussian --val-frac 0 --device $dev $dt -o "$A" > "$log" 2>&1 &&
    ./peft dump $R/model -a "$A" -i $R/reference.safetensors -o "$A/dump.safetensors" --device cpu >> "$log" 2>&1 &&
    ./peft merge $R/model "$A" -o "$A-merged" >> "$log" 2>&1
    rc=$?; result $rc "$f: peft.c trains ($dev${kind:+, ${kind#--}}), dumps and merges" "$log"; [ $rc = 0 ] || continue
    echo "$f-$dev-adapter $R/model $A $A/dump.safetensors $R/reference.safetensors" >> "$OUT/cases.txt"
    echo "$f-$dev-merged $A-merged - $A/dump.safetensors $R/reference.safetensors" >> "$OUT/cases.txt"
  done
done
# transformers + PEFT load every adapter and merged folder in one process (one torch start)
python3 tests/peft_interop.py --cases "$OUT/cases.txt" --eager > "$OUT/interop.log" 2>&1
grep -E "^(PASS|FAIL) " "$OUT/interop.log" | sed -E 's/ \(the adapter changes/\n    (the adapter changes/' | cut -c1-400
pass=$((pass + $(grep -c "^PASS " "$OUT/interop.log"))); fail=$((fail + $(grep -c "^FAIL " "$OUT/interop.log")))
n=$(wc -l < "$OUT/cases.txt"); got=$(grep -cE "^(PASS|FAIL) " "$OUT/interop.log")
[ "$got" = "$n" ] || { fail=$((fail+1)); echo "FAIL transformers + PEFT checked $got of $n cases (log: $OUT/interop.log): $(tail -1 "$OUT/interop.log")"; }
echo "family_interop: $pass passed, $fail failed"
[ $fail = 0 ]
