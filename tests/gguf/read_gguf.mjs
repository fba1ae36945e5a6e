// Reads a GGUF file with Hugging Face's @huggingface/gguf (npm) and prints its metadata and its F32/F16 tensors
// as JSON: {"metadata": {...}, "tensors": {name: {"shape": [ne0, ne1, ...], "dtype": n, "data": [...]}}}.
// test_all runs it on the output of `peft export-gguf` (node tests/gguf/read_gguf.mjs FILE).
import { gguf } from "@huggingface/gguf";
import { readFileSync } from "node:fs";

const path = process.argv[2];
const { metadata, tensorInfos, tensorDataOffset } = await gguf(path, { allowLocalFile: true });
const bytes = readFileSync(path);
const out = { metadata: {}, tensors: {} };
for (const [k, v] of Object.entries(metadata)) out.metadata[k] = typeof v === "bigint" ? Number(v) : v;
for (const t of tensorInfos) {
  const n = t.shape.reduce((a, b) => a * Number(b), 1);
  const start = Number(tensorDataOffset + t.offset);
  const data = [];
  if (t.dtype === 0) { // F32
    for (let i = 0; i < n; i++) data.push(bytes.readFloatLE(start + 4 * i));
  } else if (t.dtype === 1) { // F16
    for (let i = 0; i < n; i++) {
      const h = bytes.readUInt16LE(start + 2 * i), s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
      data.push(e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15));
    }
  }
  out.tensors[t.name] = { shape: t.shape.map(Number), dtype: t.dtype, data };
}
process.stdout.write(JSON.stringify(out) + "\n");
