#!/usr/bin/env python3
"""Seeds for the fuzz targets (tests/fuzz/seeds/<target>/, not committed; make fuzz merges what they
reach into tests/fuzz/corpus/). Real files from the project and ../shared, tiny models written here
(llama2.c legacy and v1, a Hugging Face folder) and, with ./peft built, its int8/int4/nf4 files and a
real training checkpoint. Standard library only. Run from the repository root: make fuzz-seeds."""
import glob, json, os, random, shutil, struct, subprocess, sys, tempfile

SEP = b"\n--peft-fuzz-next-file--\n"  # FUZZ_SEP in tests/fuzz/fuzz.h
SHARED = os.environ.get("SHARED", "../shared")
OUT = "tests/fuzz/seeds"
MAX = 1 << 20  # seeds above 1 MiB are left out (make fuzz uses -max_len=1048576)
count = {}

def put(target, name, data):
    if len(data) > MAX:
        return
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name.replace("/", "_")), "wb") as f:
        f.write(data)
    count[target] = count.get(target, 0) + 1

def read(p):
    with open(p, "rb") as f:
        return f.read()

def st_bytes(tensors):
    """safetensors bytes of {name: (dtype, shape, raw bytes)}"""
    hdr, off, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for k in sorted(tensors):
        dt, shape, raw = tensors[k]
        hdr[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data

rng = random.Random(1)
def floats(n, scale=0.1):
    return struct.pack("<%df" % n, *[(rng.random() - 0.5) * 2 * scale for _ in range(n)])
def ones(n):
    return struct.pack("<%df" % n, *[1.0] * n)

# a tiny Llama with the vocabulary of tests/spbpe/tokenizer.json (so that ./peft can train it)
tj = json.load(open("tests/spbpe/tokenizer.json"))
V = max(list(tj["model"]["vocab"].values()) + [a["id"] for a in tj.get("added_tokens", [])]) + 1
C, H, L, NH, KVH, S = 16, 32, 2, 2, 1, 64
HS = C // NH
def llama2c(version, tied=True):
    emb, wcls = floats(V * C), floats(V * C)
    rms_att, rms_ffn, rms_f = ones(L * C), ones(L * C), ones(C)
    wq, wk, wv, wo = floats(L * C * C), floats(L * KVH * HS * C), floats(L * KVH * HS * C), floats(L * C * C)
    w1, w2, w3 = floats(L * H * C), floats(L * C * H), floats(L * H * C)
    if version == 0:
        b = struct.pack("<7i", C, H, L, NH, KVH, V if tied else -V, S)
        b += emb + rms_att + wq + wk + wv + wo + rms_ffn + w1 + w2 + w3 + rms_f + floats(S * HS // 2) + floats(S * HS // 2)
    else:
        hdr = struct.pack("<Ii7iB", 0x616B3432, 1, C, H, L, NH, KVH, V, S, 1 if tied else 0)
        b = hdr + b"\0" * (256 - len(hdr)) + rms_att + rms_ffn + rms_f + emb + wq + wk + wv + wo + w1 + w2 + w3
    return b + (b"" if tied else wcls)

def hf_folder(tied=True, dtype="F32"):
    t = {"model.embed_tokens.weight": (dtype, [V, C], floats(V * C)), "model.norm.weight": (dtype, [C], ones(C))}
    for l in range(L):
        p = "model.layers.%d." % l
        for n, shape in [("input_layernorm", [C]), ("post_attention_layernorm", [C]), ("self_attn.q_proj", [C, C]), ("self_attn.k_proj", [KVH * HS, C]),
                         ("self_attn.v_proj", [KVH * HS, C]), ("self_attn.o_proj", [C, C]), ("mlp.gate_proj", [H, C]), ("mlp.up_proj", [H, C]), ("mlp.down_proj", [C, H])]:
            n_el = 1
            for s in shape: n_el *= s
            t[p + n + ".weight"] = (dtype, shape, ones(n_el) if len(shape) == 1 else floats(n_el))
    if not tied:
        t["lm_head.weight"] = (dtype, [V, C], floats(V * C))
    if dtype != "F32":  # bf16: the high halves of the f32 values
        t = {k: (d, s, b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))) for k, (d, s, raw) in t.items()}
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C, "intermediate_size": H, "num_hidden_layers": L,
           "num_attention_heads": NH, "num_key_value_heads": KVH, "vocab_size": V, "max_position_embeddings": S, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "tie_word_embeddings": tied, "hidden_act": "silu", "torch_dtype": "float32"}
    return json.dumps(cfg, indent=2).encode(), st_bytes(t)

tmp = tempfile.mkdtemp(prefix="peft_seeds_")
try:
    # json: every JSON file of the project and ../shared
    jsons = glob.glob("tests/**/*.json", recursive=True) + glob.glob(SHARED + "/**/*.json", recursive=True)
    for p in jsons:
        put("json", p, read(p))
    # hf_config: model config.json files, in transformers 5 and 4 styles, Mistral, Llama 3 rope_scaling
    for p in glob.glob(SHARED + "/models/*/config.json"):
        put("hf_config", p, read(p))
    cfg4 = {"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "tie_word_embeddings": True, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64}
    put("hf_config", "llama3.2-1b-style.json", json.dumps(cfg4, indent=2).encode())
    mis = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096,
           "rope_theta": 10000.0, "hidden_act": "silu", "rms_norm_eps": 1e-5}
    put("hf_config", "mistral-7b-style.json", json.dumps(mis, indent=2).encode())
    for tied in (True, False):
        c, st = hf_folder(tied)
        put("hf_config", "tiny_tied%d.json" % tied, c)
        put("hf_model", "tiny_tied%d" % tied, c + SEP + st)
        put("safetensors", "tiny_tied%d.safetensors" % tied, st)
    c, st = hf_folder(True, "BF16")
    put("hf_model", "tiny_bf16", c + SEP + st)
    for d in glob.glob(SHARED + "/models/stories260K-hf-*"):
        if os.path.exists(d + "/model.safetensors"):
            put("hf_model", os.path.basename(d), read(d + "/config.json") + SEP + read(d + "/model.safetensors"))
    # safetensors: the project's and ../shared's
    for p in glob.glob("tests/**/*.safetensors", recursive=True) + glob.glob(SHARED + "/**/*.safetensors", recursive=True):
        put("safetensors", p, read(p))
    # tokenizers
    for p in glob.glob("tests/**/tokenizer*.json", recursive=True):
        put("tokenizer_json", p, read(p))
    for p in [SHARED + "/models/stories260K/tok512.bin", SHARED + "/tokenizers/llama2/tokenizer.bin", "tokenizer.bin"]:
        if os.path.exists(p):
            put("tokenizer_bin", p, read(p))
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [("<0x%02X>" % i).encode() for i in range(256)] + [b" ", b"a", b"b", b" a", b"ab", b" ab", b"\xe2\x96\x81"]
    tb = struct.pack("<i", max(len(p) for p in pieces))
    for i, p in enumerate(pieces):
        tb += struct.pack("<fi", -float(i), len(p)) + p
    put("tokenizer_bin", "tiny_tokenizer.bin", tb)
    # llama2.c checkpoints: legacy and v1 here; v2/v3/v4 by ./peft quantize
    for v, tied in [(0, True), (0, False), (1, True), (1, False)]:
        put("llama2c_bin", "tiny_v%d_tied%d.bin" % (v, tied), llama2c(v, tied))
    if os.path.exists(SHARED + "/models/stories260K/stories260K.bin"):
        put("llama2c_bin", "stories260K.bin", read(SHARED + "/models/stories260K/stories260K.bin"))
    tiny = os.path.join(tmp, "tiny.bin")
    with open(tiny, "wb") as f:
        f.write(llama2c(1, True))
    have_peft = os.path.exists("./peft")
    if have_peft:
        for q, extra in [("int8", []), ("int4", []), ("int4", ["--quant-embeddings"]), ("nf4", []), ("nf4", ["--double-quant"]), ("nf4", ["--double-quant", "--quant-embeddings"])]:
            o = os.path.join(tmp, "q.bin")
            r = subprocess.run(["./peft", "quantize", tiny, "-o", o, "--quant", q] + extra, capture_output=True)
            if r.returncode == 0:
                put("llama2c_bin", "tiny_%s%s.bin" % (q, "".join(extra).replace("--", "_")), read(o))
            else:
                print("make_seeds: peft quantize %s %s failed: %s" % (q, extra, r.stderr.decode().strip()), file=sys.stderr)
    # adapters: PEFT's own (../shared/reference/peft, tests/mts), and configs of real adapters with PEFT's tensors
    adirs = glob.glob(SHARED + "/reference/peft/*/") + ["tests/mts/adapter/"]
    for d in adirs:
        if os.path.exists(d + "adapter_model.safetensors"):
            put("adapter", d.rstrip("/"), read(d + "adapter_config.json") + SEP + read(d + "adapter_model.safetensors"))
    qv = SHARED + "/reference/peft/qv_r4/adapter_model.safetensors"
    if os.path.exists(qv):
        for p in glob.glob(SHARED + "/reference/configs/*.json"):
            put("adapter", p, read(p) + SEP + read(qv))
    # training text, and (with ./peft) a real checkpoint of the tiny model
    text = b"Once upon a time, there was a little girl named Lily. She loved to play outside.\n\nOne day, a big dog came to the park.\r\n \r\nThe end.\n"
    for sel in range(3):
        put("text", "stories_%d.txt" % sel, bytes([sel]) + text)
    shakespeare = SHARED + "/data/tinyshakespeare.txt"
    if os.path.exists(shakespeare):
        put("text", "tinyshakespeare_head.txt", b"\x00" + read(shakespeare)[:8192])
    put("text", "unicode.txt", b"\x01" + "héllo wörld 你好 🙂 \t tabs\n\n\n  spaces  \n\xe2\x96\x81".encode() + b"\x80\xff")
    # instruction data (alpaca / sharegpt, JSON arrays and JSONL): two settings bytes (tests/fuzz/fuzz_instruct.c:
    # byte 0 template, tokenizer, --train-on-prompt, row length; byte 1 --val-frac, vocabulary, --val), then the file.
    # The rows of test_all.c's instruction-data tests, the conversations of tests/chat/renders.json in both formats,
    # and any alpaca/sharegpt file of ../shared; each under a few settings so that every template and tokenizer is seen.
    def settings(i):
        return bytes([(i % 6) | ((i // 6 % 4) << 3) | ((i // 24 % 2) << 5) | ((i // 3 % 4) << 6), (i * 5 + i // 4) % 16])
    inst = []
    inst.append(("alpaca_rows.json", b'[\n {"instruction": "Say hello.", "input": "", "output": "Hello! How are you?"},\n'
                 b' {"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five.", "system": "You are a calculator."},\n'
                 b' {"instruction": "Name a colour.", "output": "Blue.", "history": [["Hi", "Hello there."]]}\n]\n'))
    inst.append(("sharegpt_rows.jsonl", b'{"conversations": [{"from": "human", "value": "Tell me a story."}, {"from": "gpt", "value": "Once upon a time, there was a cat."}]}\n'
                 b'{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, friend."}]}\n'
                 b'{"conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}], "system": "S"}\n'))
    for k, bad in enumerate([b'[\n {"instruction": "a", "output": "b"},\n\n {"instruction": "c"}\n]\n', b'[{"instruction": "a", "output": "b"},\n 42]\n',
                             b'[{"instruction": "a", "output": "b"},\n {"instruction": }]\n', b'{"instruction": "a", "output": "b"}\n{"instruction": "a" "output": "b"}\n',
                             b'{"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}\n', b'{"messages": [{"role": "user", "content": "x"}]}\n',
                             b'{"conversations": [{"from": "bot", "value": "x"}]}\n', b'[{"instruction": "a", "output": "b", "system": "s"}]\n']):
        inst.append(("bad_rows_%d.json" % k, bad))
    convs = {}
    for e in json.load(open("tests/chat/renders.json"))["renders"]:
        convs.setdefault(e["conversation"], e["messages"])
    msgs_rows, conv_rows, alpaca = [], [], []
    for k in sorted(convs):
        m = convs[k]
        if [t["role"] for t in m if t["role"] != "system"][:1] != ["user"]:  # (a bad row fails the whole file: on its own)
            inst.append(("bad_render_%d.jsonl" % k, (json.dumps({"messages": m}) + "\n").encode()))
            continue
        msgs_rows.append({"messages": m})
        conv_rows.append({"conversations": [{"from": {"user": "human", "assistant": "gpt"}.get(t["role"], t["role"]), "value": t["content"]} for t in m]})
        body = [t for t in m if t["role"] != "system"]
        row = {"system": m[0]["content"]} if m[0]["role"] == "system" else {}
        if len(body) >= 2 and body[-1]["role"] == "assistant":
            row.update({"instruction": body[-2]["content"], "input": "", "output": body[-1]["content"],
                        "history": [[body[i]["content"], body[i + 1]["content"]] for i in range(0, len(body) - 2, 2)]})
            alpaca.append(row)
    inst.append(("renders_messages.jsonl", "".join(json.dumps(r) + "\n" for r in msgs_rows).encode()))
    inst.append(("renders_conversations.json", json.dumps(conv_rows, indent=1, ensure_ascii=False).encode()))
    inst.append(("renders_alpaca.json", json.dumps(alpaca, indent=1).encode()))
    inst.append(("renders_alpaca.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in alpaca).encode()))
    for p in sorted(set(glob.glob(SHARED + "/**/*.jsonl", recursive=True) + glob.glob(SHARED + "/**/*alpaca*.json", recursive=True) +
                        glob.glob(SHARED + "/**/*sharegpt*.json", recursive=True))):
        inst.append((p, read(p)[:MAX - 2]))
    i = 0
    for name, data in inst:
        for _ in range(4 if name.startswith("bad_") else 12):
            put("instruct", "%s_%02x%02x" % (name, *settings(i)), settings(i) + data)
            i += 1
    if have_peft:
        data = os.path.join(tmp, "data.txt")
        with open(data, "wb") as f:
            f.write(text * 20)
        out = os.path.join(tmp, "out")
        r = subprocess.run(["./peft", "train", tiny, data, "-z", "tests/spbpe/tokenizer.json", "-o", out, "--steps", "2", "--save-every", "1",
                            "-b", "2", "-T", "32", "--targets", "all-linear", "-r", "2"], capture_output=True)
        ck = os.path.join(out, "checkpoint-1")
        if r.returncode == 0 and os.path.isdir(ck):
            put("trainer_state", "tiny_checkpoint", read(ck + "/trainer_state.json") + SEP + read(ck + "/optimizer.safetensors"))
            put("adapter_tiny", "unused", b"")  # (the tiny adapter does not fit the adapter target's stories260K config)
            put("safetensors", "tiny_optimizer.safetensors", read(ck + "/optimizer.safetensors"))
            put("json", "tiny_trainer_state.json", read(ck + "/trainer_state.json"))
        else:
            print("make_seeds: training the tiny model failed: %s" % r.stderr.decode().strip()[-500:], file=sys.stderr)
finally:
    shutil.rmtree(tmp)
shutil.rmtree(os.path.join(OUT, "adapter_tiny"), ignore_errors=True)
count.pop("adapter_tiny", None)
for t in sorted(count):
    print("seeds %-15s %d files" % (t, count[t]))
