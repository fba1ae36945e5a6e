#!/usr/bin/env python3
"""
export.py -- model and tokenizer conversion for peft.c.

peft.c reads llama2.c checkpoints (`model.bin`) and llama2.c tokenizers
(`tokenizer.bin`). This script converts to and from the Hugging Face formats,
using nothing but the Python standard library:

  python3 export.py tokenizer tokenizer.model -o tokenizer.bin   # sentencepiece -> llama2.c
  python3 export.py tokenizer tokenizer.json  -o tokenizer.bin   # HF (sentencepiece-style BPE) -> llama2.c
  python3 export.py hf2bin  HF_MODEL_DIR -o model.bin             # HF Llama/Mistral folder -> llama2.c
  python3 export.py bin2hf  model.bin -o HF_MODEL_DIR             # llama2.c -> HF Llama folder
  python3 export.py compare A B                                   # tensor-by-tensor diff of two models
  python3 export.py random --shape stories15M -o model.bin        # random weights of a known shape (benchmarks)

Two more subcommands are a small PyTorch reference implementation (torch is
imported only there), used to make the test fixtures that peft.c is checked
against:

  python3 export.py ref-generate model.bin -n 200 -o tests/fixtures/greedy.json
  python3 export.py ref-logits   model.bin --ids ids.safetensors -o logits.safetensors

Layout conventions. Inside this script a model is a `Model`: a config plus its
fp32 weights as little-endian float32 `bytes`, named and laid out as in
llama2.c. The one layout difference between llama2.c and Hugging Face is RoPE:
llama2.c rotates interleaved pairs (2i, 2i+1) of each head, HF rotates the two
halves (i, i + head_dim/2) ("rotate_half"). HF's conversion script permutes the
rows of wq and wk to make the two agree; we apply that permutation (or its
inverse) when crossing over. Everything else is a renaming.
"""

import argparse
import json
import math
import os
import random
import struct
import sys
from array import array

# -----------------------------------------------------------------------------
# utilities

def die(msg):
    print(f"export.py: error: {msg}", file=sys.stderr)
    sys.exit(1)

def warn(msg):
    print(f"export.py: warning: {msg}", file=sys.stderr)

def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n

def f32_array(b):
    """ little-endian float32 bytes -> array('f') in native order """
    a = array('f')
    a.frombytes(b)
    if sys.byteorder == 'big':
        a.byteswap()
    return a

def f32_bytes(a):
    """ array('f') in native order -> little-endian float32 bytes """
    if sys.byteorder == 'big':
        a = array('f', a)
        a.byteswap()
    return a.tobytes()

# -----------------------------------------------------------------------------
# dtype conversions, all on little-endian bytes
# float32 is the working dtype; bf16 is the top half of a float32, f16 is IEEE half.

def bf16_to_f32(b):
    # bf16 bytes (lo, hi) become the float32 bytes (0, 0, lo, hi): exact, no loop
    n = len(b) // 2
    out = bytearray(4 * n)
    out[2::4] = b[0::2]
    out[3::4] = b[1::2]
    return bytes(out)

def f32_to_bf16(b):
    # round to nearest, ties to even, on the float32 bit pattern; NaN stays a (quiet) NaN
    u = array('I')
    u.frombytes(b)
    if sys.byteorder == 'big':
        u.byteswap()
    h = array('H', bytes(2 * len(u)))
    for i, x in enumerate(u):
        if (x & 0x7fffffff) > 0x7f800000:  # NaN
            h[i] = (x >> 16) | 0x0040
        else:
            h[i] = (x + 0x7fff + ((x >> 16) & 1)) >> 16
    if sys.byteorder == 'big':
        h.byteswap()
    return h.tobytes()

CHUNK = 1 << 20  # elements per struct call, to bound memory on big tensors

def f16_to_f32(b):
    out = []
    for i in range(0, len(b), 2 * CHUNK):
        part = b[i:i + 2 * CHUNK]
        n = len(part) // 2
        out.append(struct.pack(f'<{n}f', *struct.unpack(f'<{n}e', part)))
    return b''.join(out)

def f32_to_f16(b):
    # struct's 'e' rounds to nearest even; values beyond the f16 range raise
    out = []
    for i in range(0, len(b), 4 * CHUNK):
        part = b[i:i + 4 * CHUNK]
        n = len(part) // 4
        try:
            out.append(struct.pack(f'<{n}e', *struct.unpack(f'<{n}f', part)))
        except OverflowError:
            die("a weight is too large for float16; use --dtype bf16 or f32")
    return b''.join(out)

def f64_to_f32(b):
    n = len(b) // 8
    return struct.pack(f'<{n}f', *struct.unpack(f'<{n}d', b))

# -----------------------------------------------------------------------------
# safetensors: 8-byte little-endian header size N, N bytes of JSON header,
# then the raw tensor data; data_offsets are relative to the end of the header.

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
              "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

class SafetensorsFile:
    """ lazily reads tensors out of one .safetensors file, validating the header """

    def __init__(self, path):
        self.path = path
        self.file_size = os.path.getsize(path)
        with open(path, 'rb') as f:
            raw = f.read(8)
            if len(raw) != 8:
                die(f"{path}: too short for a safetensors file")
            (n,) = struct.unpack('<Q', raw)
            if n > self.file_size - 8 or n > 100_000_000:
                die(f"{path}: bad header size {n}")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                die(f"{path}: bad header JSON ({e})")
        self.data_start = 8 + n
        self.metadata = header.pop("__metadata__", {}) or {}
        self.tensors = header  # name -> {"dtype", "shape", "data_offsets"}
        for name, t in self.tensors.items():
            begin, end = t["data_offsets"]
            if t["dtype"] not in DTYPE_SIZE:
                die(f"{path}: {name}: unsupported dtype {t['dtype']}")
            if end - begin != numel(t["shape"]) * DTYPE_SIZE[t["dtype"]] or begin < 0 \
               or self.data_start + end > self.file_size:
                die(f"{path}: {name}: data_offsets {t['data_offsets']} do not fit "
                    f"shape {t['shape']} {t['dtype']} in a file of {self.file_size} bytes")

    def raw(self, name):
        """ (dtype, shape, bytes) of one tensor """
        t = self.tensors[name]
        begin, end = t["data_offsets"]
        with open(self.path, 'rb') as f:
            f.seek(self.data_start + begin)
            return t["dtype"], list(t["shape"]), f.read(end - begin)

    def f32(self, name):
        """ (shape, little-endian float32 bytes) of a floating point tensor """
        dtype, shape, b = self.raw(name)
        if dtype == "F32":
            return shape, b
        if dtype == "BF16":
            return shape, bf16_to_f32(b)
        if dtype == "F16":
            return shape, f16_to_f32(b)
        if dtype == "F64":
            return shape, f64_to_f32(b)
        die(f"{self.path}: {name}: expected a float tensor, got {dtype}")

    def ints(self, name):
        """ (shape, list of python ints) of an integer tensor """
        dtype, shape, b = self.raw(name)
        fmt = {"I64": 'q', "I32": 'i', "I16": 'h', "I8": 'b', "U8": 'B'}.get(dtype)
        if fmt is None:
            die(f"{self.path}: {name}: expected an integer tensor, got {dtype}")
        return shape, list(struct.unpack(f'<{len(b) // DTYPE_SIZE[dtype]}{fmt}', b))

def write_safetensors(path, tensors, metadata=None):
    """
    tensors: dict name -> (dtype, shape, bytes). Written like the python
    safetensors library does: names sorted, data in that order, JSON without
    spaces, header padded with spaces to a multiple of 8 bytes.
    """
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    names = sorted(tensors)
    for name in names:
        dtype, shape, b = tensors[name]
        assert len(b) == numel(shape) * DTYPE_SIZE[dtype], name
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for name in names:
            f.write(tensors[name][2])

# -----------------------------------------------------------------------------
# the model: llama2.c config and fp32 weights

class Model:
    """
    cfg: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len,
         shared_classifier (bool), plus rope_theta and norm_eps (not stored in
         llama2.c files, which assume 10000 and 1e-5).
    w:   llama2.c names -> little-endian float32 bytes; the per-layer tensors
         are lists of n_layers entries. 'output' (the classifier) is None when
         it is shared with 'tok_embeddings'.
    """
    LAYER_TENSORS = ["attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3"]

    def __init__(self, cfg, w):
        self.cfg = cfg
        self.w = w
        self.format = None  # where it was read from: "legacy", "version 1" or "hf"

    def shapes(self):
        c = self.cfg
        D, H, V = c["dim"], c["hidden_dim"], c["vocab_size"]
        HS = D // c["n_heads"]
        return {
            "tok_embeddings": (V, D), "norm": (D,), "output": (V, D),
            "attention_norm": (D,), "ffn_norm": (D,),
            "wq": (c["n_heads"] * HS, D), "wk": (c["n_kv_heads"] * HS, D),
            "wv": (c["n_kv_heads"] * HS, D), "wo": (D, c["n_heads"] * HS),
            "w1": (H, D), "w2": (D, H), "w3": (H, D),
        }

    def tensors(self):
        """ (name, shape, bytes) of every tensor, layers expanded as 'wq.3' """
        shapes = self.shapes()
        out = [("tok_embeddings", shapes["tok_embeddings"], self.w["tok_embeddings"])]
        for k in self.LAYER_TENSORS:
            for l, b in enumerate(self.w[k]):
                out.append((f"{k}.{l}", shapes[k], b))
        out.append(("norm", shapes["norm"], self.w["norm"]))
        if self.w.get("output") is not None:
            out.append(("output", shapes["output"], self.w["output"]))
        return out

def check_config(cfg, where):
    for k in ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"]:
        if not isinstance(cfg[k], int) or cfg[k] <= 0 or cfg[k] > 1 << 24:
            die(f"{where}: bad {k} = {cfg[k]}")
    if cfg["dim"] % cfg["n_heads"] or cfg["n_heads"] % cfg["n_kv_heads"]:
        die(f"{where}: dim {cfg['dim']}, n_heads {cfg['n_heads']}, n_kv_heads {cfg['n_kv_heads']} "
            "do not divide evenly")
    if (cfg["dim"] // cfg["n_heads"]) % 2:
        die(f"{where}: head size must be even for RoPE")

# -----------------------------------------------------------------------------
# RoPE row permutation between llama2.c (interleaved pairs) and HF (rotate-half)

def rope_row_order(n_heads, head_dim, to_hf):
    """
    HF's convert_llama_weights_to_hf.py does, for wq (n_heads) and wk (n_kv_heads):
        permute(w) = w.view(n_heads, head_dim//2, 2, dim).transpose(1, 2).reshape(n_heads*head_dim, dim)
    i.e. HF row h*hd + j*hd/2 + i holds llama2.c row h*hd + 2*i + j (i < hd/2, j in {0,1}).
    Returns, for each output row, the input row it is taken from.
    """
    half = head_dim // 2
    order = []
    for h in range(n_heads):
        base = h * head_dim
        if to_hf:   # HF row j*half + i  <-  llama2.c row 2i + j
            order += [base + 2 * i + j for j in range(2) for i in range(half)]
        else:       # llama2.c row 2i + j  <-  HF row j*half + i
            order += [base + j * half + i for i in range(half) for j in range(2)]
    return order

def reorder_rows(b, n_rows, order):
    rb = len(b) // n_rows  # bytes per row
    return b''.join(b[r * rb:(r + 1) * rb] for r in order)

def permute_qk(b, n_heads, head_dim, to_hf):
    return reorder_rows(b, n_heads * head_dim, rope_row_order(n_heads, head_dim, to_hf))

# -----------------------------------------------------------------------------
# llama2.c checkpoints
#
# legacy (v0): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
#   max_seq_len; vocab_size < 0 means the classifier is not shared), then fp32:
#   token_embedding, rms_att[L], wq[L], wk[L], wv[L], wo[L], rms_ffn[L], w1[L], w2[L],
#   w3[L], rms_final, freq_cis_real (seq_len*head_size/2), freq_cis_imag (same),
#   and wcls if not shared.
# version 1: 256-byte header (uint32 magic "ak42", int32 version = 1, the same 7 int32
#   with vocab_size > 0, uint8 shared_classifier, zeros), then fp32: rms_att[L],
#   rms_ffn[L], rms_final, token_embedding, wq[L], wk[L], wv[L], wo[L], w1[L], w2[L],
#   w3[L], and wcls if not shared.

MAGIC = 0x616b3432  # "ak42"
LEGACY_ORDER = ["tok_embeddings", "attention_norm", "wq", "wk", "wv", "wo", "ffn_norm",
                "w1", "w2", "w3", "norm", "freq_cis_real", "freq_cis_imag", "output"]
V1_ORDER = ["attention_norm", "ffn_norm", "norm", "tok_embeddings", "wq", "wk", "wv", "wo",
            "w1", "w2", "w3", "output"]

def read_llama2c(path):
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        data = f.read()
    if size < 28:
        die(f"{path}: too short for a llama2.c checkpoint")
    (magic,) = struct.unpack_from('<I', data, 0)
    if magic == MAGIC:
        (version,) = struct.unpack_from('<i', data, 4)
        if version != 1:
            die(f"{path}: llama2.c version {version} file; only version 1 (fp32) is supported")
        dims = struct.unpack_from('<7i', data, 8)
        shared = data[36] != 0
        offset, order, fmt = 256, V1_ORDER, "version 1"
    else:
        dims = struct.unpack_from('<7i', data, 0)
        shared = dims[5] > 0
        offset, order, fmt = 28, LEGACY_ORDER, "legacy"
    cfg = dict(zip(["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                    "max_seq_len"], dims))
    cfg["vocab_size"] = abs(cfg["vocab_size"])
    cfg.update(shared_classifier=shared, rope_theta=10000.0, norm_eps=1e-5)
    check_config(cfg, path)
    model = Model(cfg, {})
    shapes = model.shapes()
    head_size = cfg["dim"] // cfg["n_heads"]
    shapes["freq_cis_real"] = shapes["freq_cis_imag"] = (cfg["max_seq_len"] * head_size // 2,)

    # the expected size first, so that a truncated or mislabelled file is caught before reading
    expected = offset
    for name in order:
        if name == "output" and shared:
            continue
        n = numel(shapes[name]) * 4
        expected += n * cfg["n_layers"] if name in Model.LAYER_TENSORS else n
    if expected != size:
        die(f"{path}: {fmt} header says {dims} (shared classifier {int(shared)}) so the file "
            f"should be {expected} bytes, but it is {size}")

    def take(n_floats):
        nonlocal offset
        b = data[offset:offset + 4 * n_floats]
        offset += 4 * n_floats
        return b

    for name in order:
        if name == "output" and shared:
            model.w["output"] = None
        elif name in Model.LAYER_TENSORS:
            model.w[name] = [take(numel(shapes[name])) for _ in range(cfg["n_layers"])]
        elif name.startswith("freq_cis"):
            take(numel(shapes[name]))  # precomputed RoPE tables: recomputed by every reader
        else:
            model.w[name] = take(numel(shapes[name]))
    model.w.setdefault("output", None)
    model.format = fmt
    return model

def write_llama2c(path, model, version=1):
    c = model.cfg
    shared = model.w.get("output") is None
    dims = [c["dim"], c["hidden_dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"],
            c["vocab_size"], c["max_seq_len"]]
    with open(path, 'wb') as f:
        if version == 1:
            f.write(struct.pack('<Ii', MAGIC, 1))
            f.write(struct.pack('<7i', *dims))
            f.write(struct.pack('<B', int(shared)))
            f.write(b'\0' * (256 - f.tell()))
            order = V1_ORDER
        elif version == 0:
            if not shared:
                dims[5] = -dims[5]
            f.write(struct.pack('<7i', *dims))
            order = LEGACY_ORDER
        else:
            die(f"unknown llama2.c version {version}")
        for name in order:
            if name.startswith("freq_cis"):
                real, imag = rope_tables(c["dim"] // c["n_heads"], c["max_seq_len"], c["rope_theta"])
                f.write(real if name == "freq_cis_real" else imag)
            elif name == "output":
                if not shared:
                    f.write(model.w["output"])
            elif name in Model.LAYER_TENSORS:
                for b in model.w[name]:
                    f.write(b)
            else:
                f.write(model.w[name])

def rope_tables(head_size, seq_len, theta):
    """
    llama2.c's legacy freq_cis_real/imag, (seq_len, head_size/2): cos/sin(pos * theta^(-2i/head_size)).
    Frequencies and angles are rounded to float32 as model.py's torch code does; its vectorised
    cos/sin still differ from these in the last bit for a few entries. run.c never reads them.
    """
    f32 = lambda x: struct.unpack('<f', struct.pack('<f', x))[0]
    freqs = [f32(1.0 / f32(theta ** f32(i / head_size))) for i in range(0, head_size, 2)]
    angles = [f32(p * fr) for p in range(seq_len) for fr in freqs]
    return f32_bytes(array('f', map(math.cos, angles))), f32_bytes(array('f', map(math.sin, angles)))

# -----------------------------------------------------------------------------
# Hugging Face model folders (LlamaForCausalLM / MistralForCausalLM)

HF_LAYER_NAMES = {  # llama2.c name -> HF name inside model.layers.N
    "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
    "wo": "self_attn.o_proj", "w1": "mlp.gate_proj", "w2": "mlp.down_proj", "w3": "mlp.up_proj",
}

def hf_config_to_cfg(hf, where):
    """ read a transformers 4 or 5 config.json into a llama2.c config, warning about what is lost """
    arch = (hf.get("architectures") or ["?"])[0]
    if hf.get("model_type") not in ("llama", "mistral"):
        warn(f"{where}: model_type {hf.get('model_type')!r} ({arch}); only llama and mistral are known to convert correctly")
    for k in ("attention_bias", "mlp_bias"):
        if hf.get(k):
            die(f"{where}: {k} is true; llama2.c models have no biases")
    if hf.get("hidden_act", "silu") != "silu":
        die(f"{where}: hidden_act {hf['hidden_act']!r}; llama2.c uses SwiGLU (silu)")
    n_heads = hf["num_attention_heads"]
    cfg = {
        "dim": hf["hidden_size"],
        "hidden_dim": hf["intermediate_size"],
        "n_layers": hf["num_hidden_layers"],
        "n_heads": n_heads,
        "n_kv_heads": hf.get("num_key_value_heads") or n_heads,
        "vocab_size": hf["vocab_size"],
        "max_seq_len": hf.get("max_position_embeddings", 2048),
        # transformers' LlamaConfig defaults tie_word_embeddings to False
        "shared_classifier": bool(hf.get("tie_word_embeddings", False)),
    }
    head_dim = hf.get("head_dim") or cfg["dim"] // n_heads
    if head_dim * n_heads != cfg["dim"]:
        die(f"{where}: head_dim {head_dim} * num_attention_heads {n_heads} != hidden_size {cfg['dim']}; "
            "llama2.c needs head_dim = dim / n_heads")
    # RoPE: transformers 4 has top-level rope_theta and rope_scaling, transformers 5 has rope_parameters
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type") or (hf.get("rope_scaling") or {}).get("rope_type") \
        or (hf.get("rope_scaling") or {}).get("type") or "default"
    cfg["rope_theta"] = float(theta)
    cfg["norm_eps"] = float(hf.get("rms_norm_eps", 1e-6))  # LlamaConfig's default is 1e-6
    # llama2.c files have no field for these: a reader assumes theta 10000 and eps 1e-5
    if cfg["rope_theta"] != 10000.0:
        warn(f"{where}: rope_theta is {cfg['rope_theta']}, llama2.c files assume 10000: this is lost")
    if rope_type != "default":
        warn(f"{where}: RoPE scaling {rope_type!r} is not representable in llama2.c files: this is lost")
    if cfg["norm_eps"] != 1e-5:
        warn(f"{where}: rms_norm_eps is {cfg['norm_eps']}, llama2.c files assume 1e-5: this is lost")
    if hf.get("sliding_window") and hf["sliding_window"] < cfg["max_seq_len"]:
        warn(f"{where}: sliding_window {hf['sliding_window']} is ignored (llama2.c attends to all positions)")
    return cfg

def read_hf(folder):
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        die(f"{folder}: no config.json")
    with open(cfg_path) as f:
        cfg = hf_config_to_cfg(json.load(f), cfg_path)
    check_config(cfg, cfg_path)

    # tensor name -> SafetensorsFile, from one file or from the shards of an index
    index_path = os.path.join(folder, "model.safetensors.index.json")
    single_path = os.path.join(folder, "model.safetensors")
    where = {}
    if os.path.isfile(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files = {}
        for name, fname in weight_map.items():
            if fname not in files:
                files[fname] = SafetensorsFile(os.path.join(folder, fname))
            where[name] = files[fname]
    elif os.path.isfile(single_path):
        st = SafetensorsFile(single_path)
        where = {name: st for name in st.tensors}
    else:
        die(f"{folder}: no model.safetensors or model.safetensors.index.json "
            "(pytorch_model.bin checkpoints are not supported: re-save with safe_serialization=True)")

    model = Model(cfg, {})
    shapes = model.shapes()

    def get(hf_name, shape):
        if hf_name not in where:
            die(f"{folder}: missing tensor {hf_name}")
        got, b = where[hf_name].f32(hf_name)
        if tuple(got) != tuple(shape):
            die(f"{folder}: {hf_name} has shape {got}, expected {list(shape)} from config.json")
        return b

    model.w["tok_embeddings"] = get("model.embed_tokens.weight", shapes["tok_embeddings"])
    model.w["norm"] = get("model.norm.weight", shapes["norm"])
    head_dim = cfg["dim"] // cfg["n_heads"]
    for k, hf_k in HF_LAYER_NAMES.items():
        model.w[k] = []
        for l in range(cfg["n_layers"]):
            b = get(f"model.layers.{l}.{hf_k}.weight", shapes[k])
            if k == "wq":
                b = permute_qk(b, cfg["n_heads"], head_dim, to_hf=False)
            elif k == "wk":
                b = permute_qk(b, cfg["n_kv_heads"], head_dim, to_hf=False)
            model.w[k].append(b)
    if cfg["shared_classifier"]:
        model.w["output"] = None  # transformers 5 does not even save lm_head.weight when tied
    else:
        out = get("lm_head.weight", shapes["output"])
        # llama2.c's own export also calls a classifier that equals the embedding "shared"
        model.w["output"] = None if out == model.w["tok_embeddings"] else out
        cfg["shared_classifier"] = model.w["output"] is None
    known = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} | {
        f"model.layers.{l}.{hf_k}.weight" for l in range(cfg["n_layers"]) for hf_k in HF_LAYER_NAMES.values()}
    extra = sorted(n for n in where if n not in known and not n.endswith("rotary_emb.inv_freq"))
    if extra:
        die(f"{folder}: tensors llama2.c has no place for: {', '.join(extra[:5])}"
            + (" ..." if len(extra) > 5 else ""))
    model.format = "hf"
    return model

def write_hf(folder, model, dtype="f32"):
    c = model.cfg
    st_dtype, torch_dtype, convert = {
        "f32": ("F32", "float32", lambda b: b),
        "f16": ("F16", "float16", f32_to_f16),
        "bf16": ("BF16", "bfloat16", f32_to_bf16),
    }[dtype]
    shapes = model.shapes()
    head_dim = c["dim"] // c["n_heads"]
    tensors = {}

    def put(name, shape, b):
        tensors[name] = (st_dtype, shape, convert(b))

    put("model.embed_tokens.weight", shapes["tok_embeddings"], model.w["tok_embeddings"])
    put("model.norm.weight", shapes["norm"], model.w["norm"])
    for k, hf_k in HF_LAYER_NAMES.items():
        for l, b in enumerate(model.w[k]):
            if k == "wq":
                b = permute_qk(b, c["n_heads"], head_dim, to_hf=True)
            elif k == "wk":
                b = permute_qk(b, c["n_kv_heads"], head_dim, to_hf=True)
            put(f"model.layers.{l}.{hf_k}.weight", shapes[k], b)
    tied = model.w.get("output") is None
    if not tied:
        put("lm_head.weight", shapes["output"], model.w["output"])

    # transformers-4-style keys; transformers 5 reads them too
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": c["dim"],
        "initializer_range": 0.02,
        "intermediate_size": c["hidden_dim"],
        "max_position_embeddings": c["max_seq_len"],
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": c["n_heads"],
        "num_hidden_layers": c["n_layers"],
        "num_key_value_heads": c["n_kv_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": c.get("norm_eps", 1e-5),
        "rope_scaling": None,
        "rope_theta": c.get("rope_theta", 10000.0),
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": c["vocab_size"],
    }
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), 'w') as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(folder, "generation_config.json"), 'w') as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(folder, "model.safetensors"), tensors, {"format": "pt"})

def read_model(path):
    """ a llama2.c .bin file or a Hugging Face folder """
    if os.path.isdir(path):
        return read_hf(path)
    if not os.path.isfile(path):
        die(f"{path}: no such file or folder")
    return read_llama2c(path)

# -----------------------------------------------------------------------------
# tokenizers -> llama2.c tokenizer.bin
#
# tokenizer.bin (as llama2.c's tokenizer.py writes it): uint32 max_token_length, then
# for each token id: float32 score, int32 length, the token's utf-8 bytes. Token text:
# sentencepiece's '▁' (U+2581) becomes ' ', BOS becomes '\n<s>\n', EOS '\n</s>\n', and
# byte-fallback pieces stay '<0xAB>' (run.c's decode turns them into the byte).
# run.c's encode repeatedly merges the adjacent pair whose concatenation is a token
# with the highest score.

def write_tokenizer_bin(path, pieces, scores, bos_id, eos_id):
    tokens = []
    for i, t in enumerate(pieces):
        if i == bos_id:
            t = '\n<s>\n'
        elif i == eos_id:
            t = '\n</s>\n'
        tokens.append(t.replace('\u2581', ' ').encode('utf-8'))
    with open(path, 'wb') as f:
        f.write(struct.pack('<I', max(len(b) for b in tokens)))
        for b, s in zip(tokens, scores):
            f.write(struct.pack('<fI', s, len(b)))
            f.write(b)

def read_tokenizer_bin(path):
    """ -> (list of token bytes, list of scores) """
    with open(path, 'rb') as f:
        data = f.read()
    (max_len,) = struct.unpack_from('<I', data, 0)
    off, vocab, scores = 4, [], []
    while off < len(data):
        if off + 8 > len(data):
            die(f"{path}: truncated")
        s, n = struct.unpack_from('<fI', data, off)
        if n > max_len or off + 8 + n > len(data):
            die(f"{path}: token {len(vocab)} has length {n} (max_token_length {max_len})")
        vocab.append(data[off + 8:off + 8 + n])
        scores.append(s)
        off += 8 + n
    return vocab, scores

# --- sentencepiece tokenizer.model: a protobuf, read with a 40-line wire-format parser

def pb_fields(buf):
    """ yields (field_number, wire_type, value) of one protobuf message """
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            if i >= n:
                die("tokenizer.model: truncated protobuf varint")
            byte = buf[i]
            i += 1
            result |= (byte & 0x7f) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < n:
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:    # varint
            value = varint()
        elif wire == 1:  # fixed 64 bits
            value = buf[i:i + 8]
            i += 8
        elif wire == 2:  # length-delimited: bytes, string or sub-message
            length = varint()
            value = buf[i:i + length]
            i += length
        elif wire == 5:  # fixed 32 bits (float)
            value = buf[i:i + 4]
            i += 4
        else:
            die(f"tokenizer.model: unsupported protobuf wire type {wire}")
        if i > n:
            die("tokenizer.model: truncated protobuf message")
        yield field, wire, value

def int32_from_varint(v):
    # protobuf encodes negative int32 as 64-bit two's complement varints
    v &= 0xffffffffffffffff
    return v - (1 << 64) if v >= 1 << 63 else v

def read_sentencepiece(path):
    """
    ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; ... }
    SentencePiece { string piece = 1; float score = 2; Type type = 3; }
    TrainerSpec { ... int32 bos_id = 41 [default 1]; int32 eos_id = 42 [default 2]; ... }
    """
    with open(path, 'rb') as f:
        buf = f.read()
    pieces, scores = [], []
    bos_id, eos_id = 1, 2
    for field, wire, value in pb_fields(buf):
        if field == 1 and wire == 2:
            piece, score = "", 0.0
            for f2, w2, v2 in pb_fields(value):
                if f2 == 1 and w2 == 2:
                    piece = v2.decode('utf-8')
                elif f2 == 2 and w2 == 5:
                    (score,) = struct.unpack('<f', v2)
            pieces.append(piece)
            scores.append(score)
        elif field == 2 and wire == 2:
            for f2, w2, v2 in pb_fields(value):
                if f2 == 41 and w2 == 0:
                    bos_id = int32_from_varint(v2)
                elif f2 == 42 and w2 == 0:
                    eos_id = int32_from_varint(v2)
    if not pieces:
        die(f"{path}: no pieces: not a sentencepiece model?")
    return pieces, scores, bos_id, eos_id

# --- Hugging Face tokenizer.json (sentencepiece-style BPE, e.g. Llama 2, Mistral, TinyLlama)

# Score of tokens that no merge produces (single characters, and the odd multi-character
# token). Single characters are looked up directly by run.c's encode, so their score only
# matters for ordering; a multi-character token that no merge produces is never made by
# HF's BPE, and -1e9 makes run.c merge into it only after every real merge (sentencepiece's
# own Llama 2 model gives its unreachable '▁▁...' pieces the same -1e9).
UNMERGED_SCORE = -1e9

def read_hf_tokenizer(path):
    with open(path, encoding='utf-8') as f:
        tj = json.load(f)
    m = tj.get("model") or {}
    if m.get("type") != "BPE":
        die(f"{path}: model type {m.get('type')!r}; only BPE tokenizer.json files convert")
    pre = tj.get("pre_tokenizer") or {}
    pre_types = [p.get("type") for p in pre.get("pretokenizers", [pre])] if pre else []
    if "ByteLevel" in pre_types:
        die(f"{path}: a byte-level BPE (GPT-2 / Llama 3 style) tokenizer cannot be expressed as a "
            "llama2.c tokenizer.bin, whose encoder is sentencepiece-style")
    norm = json.dumps(tj.get("normalizer"))
    if "Metaspace" not in pre_types and "\u2581" not in norm and "\\u2581" not in norm:
        warn(f"{path}: neither a Metaspace pre-tokenizer nor a '▁' normalizer: llama2.c's encoder "
             "always treats ' ' as '▁' and prepends one; check the results")
    if not m.get("byte_fallback"):
        warn(f"{path}: byte_fallback is off; llama2.c's encoder falls back to ids 3 + byte")

    # ids: model.vocab plus added_tokens (which may repeat vocab entries, or extend the vocab)
    id_to_tok = {i: t for t, i in m["vocab"].items()}
    special = set()
    for at in tj.get("added_tokens", []):
        id_to_tok[at["id"]] = at["content"]
        special.add(at["id"])
    n = max(id_to_tok) + 1
    missing = [i for i in range(n) if i not in id_to_tok]
    if missing:
        die(f"{path}: ids {missing[:5]} have no token")
    pieces = [id_to_tok[i] for i in range(n)]

    # score = -(rank of the first merge that produces the token): run.c merges the
    # best-scoring pair first, HF's BPE the lowest-ranked merge first. Checked on Llama 2's
    # tokenizer.json as transformers 5.17 converts it: the pieces come out byte-identical to
    # the sentencepiece export, and run.c's encode agrees with the sentencepiece export on
    # 14 of 15 reference strings; that converter ranks the '▁▁' merge first (sentencepiece
    # scores it -1e9), so a text that starts with a space encodes differently.
    scores = [None] * n
    for rank, merge in enumerate(m.get("merges", [])):
        a, b = merge.split(' ', 1) if isinstance(merge, str) else merge  # "a b" or ["a", "b"]
        i = m["vocab"].get(a + b)
        if i is not None and scores[i] is None:
            scores[i] = -float(rank)
    for i, t in enumerate(pieces):
        if scores[i] is None:
            is_byte = len(t) == 6 and t.startswith('<0x') and t.endswith('>')
            scores[i] = 0.0 if (is_byte or i in special or t == m.get("unk_token")) else UNMERGED_SCORE

    tok_to_id = {t: i for i, t in enumerate(pieces)}
    bos_id, eos_id = tok_to_id.get("<s>", 1), tok_to_id.get("</s>", 2)
    if (bos_id, eos_id) != (1, 2):
        warn(f"{path}: BOS/EOS are ids {bos_id}/{eos_id}; run.c assumes 1/2")
    if m.get("byte_fallback") and tok_to_id.get("<0x00>") != 3:
        warn(f"{path}: <0x00> is not id 3; run.c's byte fallback assumes ids 3..258")
    return pieces, scores, bos_id, eos_id

# --- a port of run.c's encode/decode, to use tokenizer.bin from Python

def llama2c_encode(vocab, scores, text, bos=True):
    """ run.c's encode(): characters (or bytes + 3), then greedy highest-score pair merges """
    lookup = {}
    for i, t in enumerate(vocab):
        lookup.setdefault(t, i)
    tokens = [1] if bos else []
    if text:
        tokens.append(lookup[b' '])  # the dummy prefix sentencepiece adds
    for ch in text:
        b = ch.encode('utf-8')
        if b in lookup:
            tokens.append(lookup[b])
        else:
            tokens += [x + 3 for x in b]  # byte fallback: <0x00> is id 3
    while True:
        best = (-1e10, -1, -1)  # score, id, index
        for i in range(len(tokens) - 1):
            j = lookup.get(vocab[tokens[i]] + vocab[tokens[i + 1]])
            if j is not None and scores[j] > best[0]:
                best = (scores[j], j, i)
        if best[2] == -1:
            return tokens
        tokens[best[2]:best[2] + 2] = [best[1]]

def llama2c_decode(vocab, tokens, prev=1):
    """ run.c's decode(): strip the space after BOS, '<0xAB>' is the raw byte """
    out = b''
    for t in tokens:
        piece = vocab[t]
        if prev == 1 and piece.startswith(b' '):
            piece = piece[1:]
        if len(piece) == 6 and piece.startswith(b'<0x') and piece.endswith(b'>'):
            piece = bytes([int(piece[3:5], 16)])
        out += piece
        prev = t
    return out.decode('utf-8', errors='replace')

# -----------------------------------------------------------------------------
# subcommands: conversions (standard library only)

def cmd_tokenizer(args):
    path = args.input
    if os.path.isdir(path):
        for name in ("tokenizer.model", "tokenizer.json"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            die(f"{args.input}: no tokenizer.model or tokenizer.json")
    if path.endswith(".json"):
        pieces, scores, bos_id, eos_id = read_hf_tokenizer(path)
    else:
        pieces, scores, bos_id, eos_id = read_sentencepiece(path)
    write_tokenizer_bin(args.output, pieces, scores, bos_id, eos_id)
    print(f"wrote {args.output}: {len(pieces)} tokens (BOS {bos_id}, EOS {eos_id})")

def describe(model):
    c = model.cfg
    n = sum(numel(shape) for _, shape, _ in model.tensors())
    return (f"dim {c['dim']}, hidden_dim {c['hidden_dim']}, n_layers {c['n_layers']}, "
            f"n_heads {c['n_heads']}, n_kv_heads {c['n_kv_heads']}, vocab_size {c['vocab_size']}, "
            f"max_seq_len {c['max_seq_len']}, shared_classifier {int(model.w['output'] is None)}, "
            f"{n} parameters")

def cmd_hf2bin(args):
    model = read_hf(args.input)
    write_llama2c(args.output, model, args.version)
    print(f"wrote {args.output} (llama2.c version {args.version}): {describe(model)}")

def cmd_bin2hf(args):
    model = read_llama2c(args.input)
    write_hf(args.output, model, args.dtype)
    print(f"wrote {args.output}/ ({args.dtype}) from a {model.format} file: {describe(model)}")

# llama2.c's published shapes (karpathy/tinyllamas), for benchmarks with random weights
SHAPES = {
    "stories260K": dict(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, max_seq_len=512),
    "stories15M": dict(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000, max_seq_len=256),
    "stories42M": dict(dim=512, hidden_dim=1376, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, max_seq_len=1024),
    "stories110M": dict(dim=768, hidden_dim=2048, n_layers=12, n_heads=12, n_kv_heads=12, vocab_size=32000, max_seq_len=1024),
}

def random_f32(n, exponent, rng):
    """ n float32 with random sign and mantissa and a fixed exponent: uniform in
    +-[2^exponent, 2^(exponent+1)). Built with bit operations on one big integer
    per chunk, so 100M values take seconds in pure Python. """
    out = bytearray()
    chunk = 1 << 20
    keep = int.from_bytes(struct.pack('<I', 0x807FFFFF) * chunk, 'little')  # sign and mantissa
    expo = int.from_bytes(struct.pack('<I', (127 + exponent) << 23) * chunk, 'little')
    while n > 0:
        k = min(n, chunk)
        r = int.from_bytes(rng.randbytes(4 * chunk), 'little') & keep | expo
        out += r.to_bytes(4 * chunk, 'little')[:4 * k]
        n -= k
    return bytes(out)

def cmd_random(args):
    cfg = dict(SHAPES[args.shape])
    cfg.update(shared_classifier=True, rope_theta=10000.0, norm_eps=1e-5)
    model = Model(cfg, {})
    shapes = model.shapes()
    w = model.w
    rng = random.Random(args.seed)
    ones = f32_bytes(array('f', [1.0] * cfg["dim"]))
    for name in Model.LAYER_TENSORS:
        if name.endswith("norm"):
            w[name] = [ones] * cfg["n_layers"]
        else:  # |w| in [2^-7, 2^-6): about 0.01, so activations stay O(1) at these sizes
            w[name] = [random_f32(numel(shapes[name]), -7, rng) for _ in range(cfg["n_layers"])]
    w["norm"] = ones
    w["tok_embeddings"] = random_f32(numel(shapes["tok_embeddings"]), -7, rng)
    w["output"] = None
    write_llama2c(args.output, model, version=1)
    print(f"wrote {args.output}: {args.shape} shape with random weights ({describe(model)})")

def cmd_compare(args):
    a, b = read_model(args.a), read_model(args.b)
    keys = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"]
    diff = [k for k in keys if a.cfg[k] != b.cfg[k]]
    if diff:
        die("configs differ: " + ", ".join(f"{k} {a.cfg[k]} vs {b.cfg[k]}" for k in diff))
    ta, tb = a.tensors(), b.tensors()
    # a shared classifier on one side compares as the embedding on the other
    names_a, names_b = [t[0] for t in ta], [t[0] for t in tb]
    if names_a != names_b:
        emb = a.w["tok_embeddings"] if "output" not in names_a else b.w["tok_embeddings"]
        shape = a.shapes()["output"]
        (ta if "output" not in names_a else tb).append(("output", shape, emb))
    worst, n_diff_tensors = 0.0, 0
    for (name, shape, xa), (_, _, xb) in zip(ta, tb):
        va, vb = f32_array(xa), f32_array(xb)
        err = max(abs(p - q) for p, q in zip(va, vb))
        worst = max(worst, err)
        if err > args.tol:
            n_diff_tensors += 1
            print(f"{name:16s} {str(list(shape)):12s} max abs diff {err:.3e}")
        elif args.verbose:
            print(f"{name:16s} {str(list(shape)):12s} {'equal' if err == 0 else f'max abs diff {err:.3e}'}")
    print(f"compared {len(ta)} tensors: {describe(a)}")
    print(f"max abs diff {worst:.3e}; {n_diff_tensors} tensors over tolerance {args.tol:g}")
    sys.exit(1 if n_diff_tensors else 0)

# -----------------------------------------------------------------------------
# PyTorch reference: a minimal Llama forward, as in llama2.c's model.py
# (torch is imported here only; works with torch 1.13 and 2.x)

def torch_weights(model, dtype):
    import torch

    def t(b, shape):
        return torch.tensor(f32_array(b), dtype=torch.float32).reshape(shape).to(dtype)

    shapes = model.shapes()
    W = {k: [t(b, shapes[k]) for b in model.w[k]] for k in Model.LAYER_TENSORS}
    W["tok_embeddings"] = t(model.w["tok_embeddings"], shapes["tok_embeddings"])
    W["norm"] = t(model.w["norm"], shapes["norm"])
    out = model.w.get("output")
    W["output"] = W["tok_embeddings"] if out is None else t(out, shapes["output"])
    return W

def torch_forward(model, W, tokens):
    """ tokens: (B, T) int64 -> logits (B, T, V), in the dtype of W """
    import torch
    c = model.cfg
    B, T = tokens.shape
    NH, NKV = c["n_heads"], c["n_kv_heads"]
    HS = c["dim"] // NH
    dtype = W["norm"].dtype
    eps = c.get("norm_eps", 1e-5)

    def rmsnorm(x, w):  # y = x / sqrt(mean(x^2) + eps) * w
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    # RoPE on interleaved pairs (x[2i], x[2i+1]) rotated by angle pos * theta^(-2i/HS)
    theta = c.get("rope_theta", 10000.0)
    freqs = 1.0 / theta ** (torch.arange(0, HS, 2, dtype=dtype) / HS)
    angles = torch.outer(torch.arange(T, dtype=dtype), freqs)  # (T, HS/2)
    cos, sin = torch.cos(angles), torch.sin(angles)

    def rope(x):  # x is (B, T, nh, HS)
        xr, xi = x.reshape(B, T, x.shape[2], HS // 2, 2).unbind(-1)
        cs, sn = cos[None, :, None, :], sin[None, :, None, :]
        return torch.stack([xr * cs - xi * sn, xr * sn + xi * cs], dim=-1).reshape(x.shape)

    mask = torch.full((T, T), float('-inf'), dtype=dtype).triu(1)  # causal
    x = W["tok_embeddings"][tokens]  # (B, T, D)
    for l in range(c["n_layers"]):
        h = rmsnorm(x, W["attention_norm"][l])
        q = rope((h @ W["wq"][l].T).view(B, T, NH, HS))
        k = rope((h @ W["wk"][l].T).view(B, T, NKV, HS))
        v = (h @ W["wv"][l].T).view(B, T, NKV, HS)
        # grouped-query attention: query head i uses kv head i // (NH / NKV)
        k = k.repeat_interleave(NH // NKV, dim=2)
        v = v.repeat_interleave(NH // NKV, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, NH, T, HS)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(HS) + mask, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, NH * HS)
        x = x + y @ W["wo"][l].T
        h = rmsnorm(x, W["ffn_norm"][l])
        # SwiGLU: w2(silu(w1 h) * w3 h)
        x = x + (torch.nn.functional.silu(h @ W["w1"][l].T) * (h @ W["w3"][l].T)) @ W["w2"][l].T
    return rmsnorm(x, W["norm"]) @ W["output"].T

def cmd_ref_generate(args):
    import torch
    model = read_model(args.model)
    W32, W64 = torch_weights(model, torch.float32), torch_weights(model, torch.float64)
    vocab = read_tokenizer_bin(args.tokenizer) if args.tokenizer else None
    start = [1]
    if args.prompt:
        if vocab is None:
            die("--prompt needs --tokenizer to encode it")
        start = llama2c_encode(vocab[0], vocab[1], args.prompt)
    if len(start) + args.n > model.cfg["max_seq_len"]:
        die(f"{len(start)} start tokens + {args.n} exceed max_seq_len {model.cfg['max_seq_len']}")

    seq, margins32, margins64, disagree = list(start), [], [], []
    with torch.no_grad():
        for step in range(args.n):
            ids = torch.tensor([seq], dtype=torch.long)
            l32 = torch_forward(model, W32, ids)[0, -1]
            l64 = torch_forward(model, W64, ids)[0, -1]
            top32, top64 = torch.topk(l32, 2), torch.topk(l64, 2)
            margins32.append((top32.values[0] - top32.values[1]).item())
            margins64.append((top64.values[0] - top64.values[1]).item())
            nxt = int(top32.indices[0])
            if nxt != int(top64.indices[0]):
                disagree.append(step)
            seq.append(nxt)
    tokens = seq[len(start):]
    # run.c stops as soon as it samples BOS (id 1): the text it prints ends before that
    stop = tokens.index(1) if 1 in tokens else None
    i_min = min(range(len(margins32)), key=margins32.__getitem__)
    result = {
        "model": args.model,
        "note": "greedy (argmax) decoding with export.py's fp32 PyTorch reference forward; "
                "tokens are the n ids after start, not stopping at BOS/EOS",
        "start": start,
        "n": args.n,
        "tokens": tokens,
        "runc_stop_index": stop,  # tokens[:runc_stop_index] is what run.c would generate
        "min_top2_margin": margins32[i_min],  # smallest fp32 logit gap, best vs second best
        "min_top2_margin_step": i_min,
        "min_top2_margin_f64": min(margins64),
        "f64_argmax_disagrees_at": disagree,  # steps where float64 would pick another token
        "top2_margins": [round(m, 5) for m in margins32],  # per step, for tests that tolerate near-ties
    }
    if vocab:
        # what run.c prints: every token after BOS (prompt included), up to where it stops
        shown = start[1:] + (tokens[:stop] if stop is not None else tokens)
        result["text"] = llama2c_decode(vocab[0], shown, prev=start[0])
    if args.prompt:
        result["prompt"] = args.prompt
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, 'w', encoding='utf-8') as f:  # one line per key, lists included
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                                   for k, v in result.items()) + "\n}\n")
    print(f"wrote {args.output}: {len(tokens)} tokens, run.c would stop at {stop}, "
          f"min top-2 margin {margins32[i_min]:.4f} (step {i_min}), f64 disagreements {disagree}")
    if vocab:
        print(result["text"])

def cmd_ref_logits(args):
    import torch
    model = read_model(args.model)
    st = SafetensorsFile(args.ids)
    shape, ids = st.ints(args.key)
    if len(shape) == 1:
        shape = [1] + shape
    V = model.cfg["vocab_size"]
    if any(i < 0 or i >= V for i in ids):
        die(f"{args.ids}: {args.key} has ids outside [0, {V})")
    W = torch_weights(model, torch.float32)
    with torch.no_grad():
        logits = torch_forward(model, W, torch.tensor(ids, dtype=torch.long).reshape(shape))
    flat = array('f', logits.reshape(-1).tolist())
    write_safetensors(args.output, {
        "logits": ("F32", list(logits.shape), f32_bytes(flat)),
        "input_ids": ("I32", shape, struct.pack(f'<{len(ids)}i', *ids)),
    })
    print(f"wrote {args.output}: logits {list(logits.shape)}")
    if args.expect:
        exp_shape, exp = st.f32(args.expect)
        if list(exp_shape) != list(logits.shape):
            die(f"{args.expect} has shape {exp_shape}, logits {list(logits.shape)}")
        err = max(abs(p - q) for p, q in zip(flat, f32_array(exp)))
        print(f"max abs diff vs {args.expect}: {err:.3e}")
        if err > args.tol:
            die(f"max abs diff {err:.3e} exceeds --tol {args.tol:g}")

# -----------------------------------------------------------------------------
# CLI

def main():
    p = argparse.ArgumentParser(
        description="Convert models and tokenizers between llama2.c (peft.c) and Hugging Face formats.",
        epilog="Run 'export.py SUBCOMMAND --help' for each subcommand's options.")
    sub = p.add_subparsers(dest="cmd", metavar="SUBCOMMAND")
    sub.required = True

    s = sub.add_parser("tokenizer", help="sentencepiece tokenizer.model or HF tokenizer.json -> llama2.c tokenizer.bin",
                       description="Write a llama2.c tokenizer.bin from a sentencepiece tokenizer.model or a "
                                   "Hugging Face tokenizer.json (sentencepiece-style BPE), or a folder holding one.")
    s.add_argument("input", help="tokenizer.model, tokenizer.json, or a folder with one of them")
    s.add_argument("-o", "--output", required=True, help="output tokenizer.bin")
    s.set_defaults(func=cmd_tokenizer)

    s = sub.add_parser("hf2bin", help="Hugging Face Llama/Mistral folder -> llama2.c model.bin",
                       description="Convert a Hugging Face LlamaForCausalLM / MistralForCausalLM folder "
                                   "(config.json + model.safetensors or sharded; F32, F16, BF16) to a llama2.c "
                                   "fp32 checkpoint. q/k rows are permuted back to llama2.c's interleaved RoPE.")
    s.add_argument("input", help="folder with config.json and model.safetensors[.index.json]")
    s.add_argument("-o", "--output", required=True, help="output model.bin")
    s.add_argument("--version", type=int, default=1, choices=[0, 1],
                   help="llama2.c file version: 1 (256-byte 'ak42' header, default) or 0 (legacy)")
    s.set_defaults(func=cmd_hf2bin)

    s = sub.add_parser("bin2hf", help="llama2.c model.bin -> Hugging Face Llama folder",
                       description="Convert a llama2.c checkpoint (legacy or version 1) to a Hugging Face "
                                   "LlamaForCausalLM folder (config.json, model.safetensors).")
    s.add_argument("input", help="llama2.c model.bin")
    s.add_argument("-o", "--output", required=True, help="output folder (created)")
    s.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"],
                   help="dtype of the saved weights (default f32; bf16 and f16 round to nearest even)")
    s.set_defaults(func=cmd_bin2hf)

    s = sub.add_parser("compare", help="compare the weights of two models (.bin files or HF folders)",
                       description="Load two models (llama2.c .bin or HF folder, any dtype) into llama2.c "
                                   "layout and print the tensors that differ. Exit status 1 if any differs "
                                   "by more than --tol.")
    s.add_argument("a")
    s.add_argument("b")
    s.add_argument("--tol", type=float, default=0.0, help="max abs difference allowed (default 0: equal)")
    s.add_argument("-v", "--verbose", action="store_true", help="print every tensor")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("random", help="a llama2.c model.bin of a known shape with small random weights (benchmarks)",
                       description="Write a llama2.c version 1 model.bin with the shape of a published llama2.c "
                                   "model and random weights (|w| about 0.01, norms 1, shared classifier). "
                                   "For speed measurements only: the model knows nothing.")
    s.add_argument("--shape", required=True, choices=sorted(SHAPES), help="which shape")
    s.add_argument("--seed", type=int, default=1337, help="random seed (default 1337)")
    s.add_argument("-o", "--output", required=True, help="output model.bin")
    s.set_defaults(func=cmd_random)

    s = sub.add_parser("ref-generate", help="[PyTorch] greedy generation with the reference forward -> JSON",
                       description="Greedy (argmax) decoding with a minimal fp32 PyTorch Llama forward "
                                   "(float64 is run alongside to flag near-ties). Writes a JSON test fixture.")
    s.add_argument("model", help="llama2.c model.bin (or an HF folder)")
    s.add_argument("--tokenizer", help="llama2.c tokenizer.bin, to encode --prompt and add the decoded text")
    s.add_argument("-n", type=int, default=200, help="number of tokens to generate (default 200)")
    s.add_argument("--prompt", help="text after BOS, encoded like run.c (default: BOS only)")
    s.add_argument("-o", "--output", required=True, help="output .json")
    s.set_defaults(func=cmd_ref_generate)

    s = sub.add_parser("ref-logits", help="[PyTorch] logits of the reference forward -> safetensors",
                       description="Run the reference forward on integer ids read from a safetensors file; "
                                   "write 'logits' (B,T,V) and 'input_ids' to a safetensors file.")
    s.add_argument("model", help="llama2.c model.bin (or an HF folder)")
    s.add_argument("--ids", required=True, help="safetensors file holding the ids (B,T) or (T,)")
    s.add_argument("--key", default="input_ids", help="name of the ids tensor (default input_ids)")
    s.add_argument("--expect", help="name of a logits tensor in the --ids file to compare against")
    s.add_argument("--tol", type=float, default=1e-4, help="max abs difference for --expect (default 1e-4)")
    s.add_argument("-o", "--output", required=True, help="output .safetensors")
    s.set_defaults(func=cmd_ref_logits)

    args = p.parse_args()
    args.func(args)

if __name__ == "__main__":
    main()
