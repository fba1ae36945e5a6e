#!/usr/bin/env python3
"""Hugging Face folders of the committed stories260K model, for `make test` on a clone without ../shared.

../shared/models holds stories260K-hf-f32, -hf-bf16 and -hf-f32-sharded, written by transformers 5.17. A fresh
clone has only the llama2.c file (models/stories260K/stories260K.bin); test_all runs this script to write the same
three folders from it with export.py (standard library, independent of peft.c): q/k rows permuted to rotate-half,
bf16 rounded to nearest even (as torch's .to(torch.bfloat16)), and the sharded folder storing the bf16-rounded
values as F32 in 4 shards with a model.safetensors.index.json (as ../shared's does). When ../shared is present,
test_all checks that these folders hold the same tensors as the transformers-written ones.

    python3 tests/make_hf_folders.py MODEL.bin OUTDIR     # writes OUTDIR/stories260K-hf-{f32,bf16,f32-sharded}
"""
import json, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import export

src, out = sys.argv[1], sys.argv[2]
model = export.read_llama2c(src)
export.write_hf(os.path.join(out, "stories260K-hf-f32"), model, "f32")
export.write_hf(os.path.join(out, "stories260K-hf-bf16"), model, "bf16")
# sharded: bf16-rounded weights stored as F32, tensors spread over 4 files in name order
sh = os.path.join(out, "stories260K-hf-f32-sharded")
export.write_hf(sh, model, "f32")
st = export.SafetensorsFile(os.path.join(sh, "model.safetensors"))
names = sorted(st.tensors.keys())
tensors = {}
for n in names:
    _, shape, b = st.raw(n)
    tensors[n] = ("F32", shape, export.bf16_to_f32(export.f32_to_bf16(b)))
del st
os.remove(os.path.join(sh, "model.safetensors"))
nshard, per = 4, (len(names) + 3) // 4
weight_map, total = {}, 0
for k in range(nshard):
    fname = "model-%05d-of-%05d.safetensors" % (k + 1, nshard)
    part = {n: tensors[n] for n in names[k * per:(k + 1) * per]}
    export.write_safetensors(os.path.join(sh, fname), part, {"format": "pt"})
    for n, (_, shape, b) in part.items():
        weight_map[n] = fname
        total += len(b)
with open(os.path.join(sh, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    f.write("\n")
print("wrote %s/stories260K-hf-{f32,bf16,f32-sharded} from %s" % (out, src))
