#!/usr/bin/env python3
"""
make bench-cuda: peft.c's LoRA training on the GPU next to transformers + PEFT on the same GPU, same
shapes, same LoRA setup, random weights, in one run. Needs torch, transformers and peft (the GPU
machine has them) and ./peft built with `make CUDA=1`.

  python3 bench/bench_cuda.py                      # the table (stories110M and TinyLlama-1.1B shapes)
  python3 bench/bench_cuda.py --rows stories110M   # one row
  python3 bench/bench_cuda.py --compile            # transformers + PEFT with torch.compile too
  python3 bench/bench_cuda.py --rows Llama-2-7B --qlora-7b --gen-rows ""   # the 7B row, and QLoRA NF4 on it
  make bench-cuda: --compile --rows stories110M,TinyLlama-1.1B,Llama-2-7B --qlora-7b --gen-rows TinyLlama-1.1B,Llama-2-7B (every bar in one run)

Each workload writes a random LlamaForCausalLM of that shape once (bf16 safetensors, bench/cache/),
which both sides load. peft.c: `peft train --bench` on tinyshakespeare tokenized with the Llama 2
tokenizer (median step time after warm-up; GPU memory peak as peft reports it). transformers + PEFT:
the model in bf16 with sdpa attention, get_peft_model with the same LoRA config, AdamW on the adapter,
random tokens; median of CUDA-event step times after warm-up; torch.cuda.max_memory_allocated.
Prints one table; ratio = peft.c tok/s / transformers tok/s.

Generation (--gen-rows, default the stories110M and TinyLlama shapes): one stream, greedy, from "Once upon a
time", GEN_TOKENS tokens: `peft generate --device cuda` (its "achieved tok/s", timed from the first step as
llama2.c does), in bf16 and with --quant nf4, against transformers' `generate` (bf16, sdpa, KV cache;
min_new_tokens = max_new_tokens so that both make the same number of tokens; wall time of one call after a
warm-up call), once with its default cache and once with cache_implementation="static" (compiled by transformers),
and against the HBM limit: the weight bytes one token reads over the device-copy bandwidth measured in the same
run. --gen-batch N (default 32): N copies of the prompt decoded together, `peft generate -f --batch N` against
transformers' generate on the batch.

--qlora-7b: `peft train --quant nf4 --checkpoint-activations` on the Llama-2-7B shape, B1 T1024, q,v r8:
tok/s and the GPU memory peak (the issue's bar: <= 10 GB).

GPU memory: peft.c's peak of its own allocations (as torch.cuda.max_memory_allocated counts for the eager
column), with the device memory in use at its peak (cudaMemGetInfo: CUDA context and other processes too,
this script's included) in brackets.

Model FLOPs utilisation (after the training rows): model FLOPs per token (4 per frozen weight, 6 per adapter
weight, causal attention 6 T dim per layer) times tok/s, against torch.mm's bf16 rate on 8192^3 measured in
the same run and against the datasheet's dense bf16 figure for H100/H200 (989 TFLOP/s).

--families [NAMES]: the model families' real-size shapes (issue 28), each alone: Qwen2.5-7B, Qwen3-8B, Gemma-2-9B,
Phi-3-mini (their configs' layers, dims, heads, head_dim, vocab, rope_theta, soft-caps, windows; random bf16
weights written by transformers' own class), B1 T2048, all-linear r8, 5 steps, peft.c against transformers + PEFT
eager and torch.compile; the table prints each side's attention (peft.c: tensor cores at head sizes 96 and 128,
its fp32 flash kernels at 256; transformers: sdpa, or eager for Gemma 2, whose soft-capping sdpa skips). Each
folder (8-19 GB) is written before its row and removed after it (--keep-models keeps them in bench/cache/).
  python3 bench/bench_cuda.py --families                 # the four rows (an estimate: 20-25 minutes on an H100)
  python3 bench/bench_cuda.py --families Gemma-2-9B      # one row (an estimate: 4-7 minutes, mostly writing the
                                                         # folder, both sides' loading and torch.compile's compilation;
                                                         # the device tool's 10-minute calls take one row each)

--att-rows (default the TinyLlama-1.1B and Llama-2-7B shapes): attention forward + backward, bf16, causal:
peft.c's attention kernels (PEFT_CUDA_PROFILE's times in `peft train` on a 2-layer model of the shape, per
layer) against PyTorch's sdpa on the flash backend (with GQA the faster of enable_gqa and K, V repeated).
"""
import argparse, os, re, statistics, subprocess, sys, time

ROWS = {
    # name: (config, batch, T, targets)
    "stories110M": (dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12, vocab_size=32000),
                    16, 1024, "all-linear"),
    "TinyLlama-1.1B": (dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
                       8, 1024, "q_proj,v_proj"),
    "Llama-2-7B": (dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
                   4, 1024, "q_proj,v_proj"),
}
# the families' real-size shapes (config.json values of Qwen/Qwen2.5-7B, Qwen/Qwen3-8B, google/gemma-2-9b,
# microsoft/Phi-3-mini-4k-instruct): B1 T2048, all-linear (Phi-3: its fused qkv_proj and gate_up_proj)
FAMILIES = {
    # name: (transformers class prefix, attention implementation on the transformers side)
    "Qwen2.5-7B": ("Qwen2", "sdpa"),
    "Qwen3-8B": ("Qwen3", "sdpa"),
    "Gemma-2-9B": ("Gemma2", "eager"),  # sdpa would skip attn_logit_softcapping
    "Phi-3-mini": ("Phi3", "sdpa"),
}
FAMILY_ROWS = list(FAMILIES)  # --families' default
# a small Gemma 2 for tests/cuda/check.sh families (compute-sanitizer): the tensor-core attention (head_dim 128) with
# soft-capping, the score scale and a window of 64 on layer 0 (layer 1 global)
FAMILIES["Gemma-2-tiny"] = ("Gemma2", "eager")
ROWS.update({
    "Qwen2.5-7B": (dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, head_dim=128,
                        vocab_size=152064, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768, tie_word_embeddings=False,
                        use_sliding_window=False), 1, 2048, "all-linear"),
    "Qwen3-8B": (dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                      vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=40960, tie_word_embeddings=False,
                      use_sliding_window=False), 1, 2048, "all-linear"),
    "Gemma-2-9B": (dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                        vocab_size=256000, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=8192, tie_word_embeddings=True,
                        query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096,
                        hidden_activation="gelu_pytorch_tanh"), 1, 2048, "all-linear"),
    "Phi-3-mini": (dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                        vocab_size=32064, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=4096, tie_word_embeddings=False,
                        sliding_window=2047), 1, 2048, "all-linear"),
    "Gemma-2-tiny": (dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=128,
                          vocab_size=32000, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=True,
                          query_pre_attn_scalar=96, attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=64,
                          hidden_activation="gelu_pytorch_tanh"), 2, 200, "all-linear"),
})
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def model_folder(name, layers=None):
    import torch
    import transformers
    path = os.path.join(HERE, "cache", name + (f"-{layers}L" if layers else "") + "-hf-bf16")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    cfg = dict(ROWS[name][0])
    if layers:
        cfg["num_hidden_layers"] = layers
    torch.manual_seed(0)
    if name in FAMILIES:  # the family's own classes, made in bf16 (a 9B model in fp32 would take 37 GB)
        arch = FAMILIES[name][0]
        config = getattr(transformers, arch + "Config")(**cfg)
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device("cuda"):
                model = getattr(transformers, arch + "ForCausalLM")(config)
        finally:
            torch.set_default_dtype(torch.float32)
    else:
        config = transformers.LlamaConfig(**cfg, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    del model
    torch.cuda.empty_cache()
    return path


GEN_TOKENS = 256
PROMPT_IDS = [1, 9038, 2501, 263, 931]  # BOS "Once upon a time" in the Llama 2 tokenizer


def bench_peft(path, B, T, targets, steps, data, tok, extra=()):
    cmd = [os.path.join(ROOT, "peft"), "train", path, data, "-z", tok, "-b", str(B), "-T", str(T), "--targets", targets,
           "-r", "8", "--alpha", "16", "--steps", str(steps), "--val-frac", "0", "--bench", "--device", "cuda", "-o", "/tmp/bench_cuda_out"] + list(extra)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit("peft failed: " + p.stderr[-2000:])
    m = re.search(r"median step ([0-9.]+) s \| ([0-9.]+) tok/s", p.stderr)
    mem = re.search(r"GPU memory peak ([0-9.]+) GiB \(allocations ([0-9.]+) GiB\)", p.stderr)
    return float(m.group(2)), (float(mem.group(1)), float(mem.group(2))) if mem else (float("nan"), float("nan")), time.time() - t0


def linear_shapes(cfg):
    """(in, out) of each linear layer of a block, by PEFT's module names"""
    d, h = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim", d // cfg["num_attention_heads"])
    qd, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return {"q_proj": (d, qd), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (qd, d), "gate_proj": (d, h), "up_proj": (d, h), "down_proj": (h, d)}


def flops_per_token(name, T):
    """Model FLOPs of a LoRA step per token: 4 per frozen linear weight (forward, input gradient; the
    classifier included), 6 per adapter weight, and causal attention 6 T dim per layer (QK^T and PV
    forward, dV dP dQ dK backward, each 2 T^2 dim / 2 per sequence). No recomputation counted."""
    cfg, _, _, targets = ROWS[name]
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    shapes = linear_shapes(cfg)
    qd = shapes["q_proj"][1]
    frozen = L * sum(i * o for i, o in shapes.values()) + d * V
    tm = ALL_LINEAR if targets == "all-linear" else targets.split(",")  # (Phi-3's fused modules: the same products)
    lora = L * sum(8 * (shapes[m][0] + shapes[m][1]) for m in tm)
    return 4 * frozen + 6 * lora + 6 * T * qd * L


def bf16_peak():
    """TFLOP/s of torch.mm on 8192^3 bf16 (cuBLAS), the best of 20 after warm-up."""
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    best = 0.0
    for i in range(25):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.mm(a, b)
        e.record()
        torch.cuda.synchronize()
        if i >= 5:
            best = max(best, 2 * 8192**3 / (s.elapsed_time(e) / 1000) * 1e-12)
    del a, b
    torch.cuda.empty_cache()
    return best


ATT_KERNELS = ("attention_forward_tc_kernel", "attention_backward_dq_tc_kernel", "attention_backward_dkv_tc_kernel",
               "attention_group_sum_kernel", "attention_rowdot_kernel", "attention_backward_d_kernel")


def attention_peft(name, data, tok):
    """peft.c's attention, forward + backward, ms per layer: PEFT_CUDA_PROFILE's times of the attention kernels
    in `peft train` on a 2-layer model of the row's shape (the bf16 copies of q, k, v and dO that the kernels
    read are made by RoPE or the copy pass: not counted here, as sdpa's inputs are bf16 already)."""
    cfg, B, T, targets = ROWS[name]
    path = model_folder(name, layers=2)
    cmd = [os.path.join(ROOT, "peft"), "train", path, data, "-z", tok, "-b", str(B), "-T", str(T), "--targets", "q_proj,v_proj",
           "-r", "8", "--alpha", "16", "--steps", "6", "--val-frac", "0", "--device", "cuda", "-o", "/tmp/bench_cuda_att"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PEFT_CUDA_PROFILE="1"))
    if p.returncode:
        sys.exit("peft failed: " + p.stderr[-2000:])
    secs, fwd_calls, parts = 0.0, 0, {}
    for line in p.stderr.splitlines():
        m = re.match(r"\s+(\S+)\s+(\d+) calls\s+([0-9.]+) s", line)
        if m and m.group(1) in ATT_KERNELS:
            secs += float(m.group(3))
            parts[m.group(1)] = float(m.group(3))
            if m.group(1) == "attention_forward_tc_kernel":
                fwd_calls = int(m.group(2))
    if not fwd_calls:
        sys.exit("peft: no tensor-core attention in the profile:\n" + p.stderr[-2000:])
    return secs / fwd_calls * 1e3, {k: v / fwd_calls * 1e3 for k, v in parts.items()}


def attention_sdpa(name):
    """PyTorch's sdpa (flash backend), causal, forward + backward, ms: median of 20 after 5 warm-up. With GQA both
    ways PyTorch offers: enable_gqa, and K, V repeated to the query heads beforehand (not timed); the faster counts."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel, SDPBackend
    cfg, B, T, _ = ROWS[name]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg["hidden_size"] // H
    q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
    results = []
    for how in (["flash, enable_gqa", "flash, K V repeated"] if KV != H else ["flash"]):
        heads = H if how == "flash, K V repeated" else KV
        k = torch.randn(B, heads, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, heads, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)

        def run():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads != H)
            o.backward(do)
        try:
            run()
        except RuntimeError as e:
            print(f"sdpa {how}: {str(e)[:200]}", file=sys.stderr)
            continue
        times = []
        for i in range(25):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            run()
            e.record()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(s.elapsed_time(e))
            q.grad = k.grad = v.grad = None
        results.append((statistics.median(times), how))
        del k, v
    del q, do
    torch.cuda.empty_cache()
    ms, how = min(results)
    return ms, f"B{B} H{H} KV{KV} T{T} D{D}", how + (f" ({', '.join(f'{h} {t:.3f}' for t, h in results)})" if len(results) > 1 else "")


def gen_peft(path, tok, extra=()):
    cmd = [os.path.join(ROOT, "peft"), "generate", path, "-z", tok, "-n", str(GEN_TOKENS), "-t", "0", "-p", "Once upon a time", "--device", "cuda"] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit("peft generate failed: " + p.stderr[-2000:])
    m = re.search(r"achieved tok/s: ([0-9.]+) \(([0-9]+) tokens\)", p.stderr)
    return float(m.group(1)), int(m.group(2))


def gen_peft_batch(path, tok, batch):
    """`peft generate -f` with `batch` copies of the prompt decoded together: tok/s sampled, tokens sampled."""
    prompts = os.path.join(HERE, "cache", "gen_prompts.jsonl")
    with open(prompts, "w") as f:
        f.write('{"prompt": "Once upon a time"}\n' * batch)
    cmd = [os.path.join(ROOT, "peft"), "generate", path, "-z", tok, "-n", str(GEN_TOKENS), "-t", "0", "-f", prompts, "--batch", str(batch),
           "--device", "cuda", "-o", os.path.join(HERE, "cache", "gen_out.jsonl")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit("peft generate -f failed: " + p.stderr[-2000:])
    m = re.search(r"([0-9]+) tokens sampled, .* ([0-9.]+) tok/s sampled", p.stderr)
    return float(m.group(2)), int(m.group(1))


def gen_torch(path, batch=1, static=False):
    """transformers' generate, greedy, GEN_TOKENS new tokens for each of `batch` copies of the prompt; static: with
    cache_implementation="static" (transformers compiles the decoding step itself; two warm-up calls of the full
    length, so that the timed one runs compiled). Returns tok/s over all sequences, tokens."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.cuda.empty_cache()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    ids = torch.tensor([PROMPT_IDS] * batch, device="cuda")
    kw = dict(do_sample=False, cache_implementation="static") if static else dict(do_sample=False)
    with torch.no_grad():
        for _ in range(2 if static else 1):  # warm-up
            model.generate(ids, max_new_tokens=GEN_TOKENS if static else 16, min_new_tokens=GEN_TOKENS if static else 16, **kw)
        torch.cuda.synchronize()
        t0 = time.time()
        out = model.generate(ids, max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS, **kw)
        torch.cuda.synchronize()
        dt = time.time() - t0
    n = (out.shape[1] - ids.shape[1]) * batch
    del model
    torch.cuda.empty_cache()
    return n / dt, n


def copy_bandwidth():
    """The device-copy bandwidth (bytes read + written per second) of a 2 GiB copy, median of 10, by CUDA events."""
    import torch
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for _ in range(12):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        dst.copy_(src)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1000)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * 2**30 / statistics.median(times[2:])


def gen_weight_bytes(name, nf4=False):
    """Bytes of weights one decoding step reads: every linear layer and the classifier (bf16; with nf4 the linear
    layers' 4-bit codes and one fp32 absmax a block of 64), the embedding's one row and the norms left out."""
    cfg = ROWS[name][0]
    d, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    linear = L * sum(i * o for i, o in linear_shapes(cfg).values())
    return linear * (0.5 + 4 / 64 if nf4 else 2) + 2 * V * d


def median_step(fwd, opt, B, T, steps, warm, seed):
    """Median seconds of a LoRA step (forward on random tokens, backward, AdamW) after warm steps, by CUDA events."""
    import torch
    g = torch.Generator(device="cuda").manual_seed(seed)
    times = []
    for step in range(steps):
        ids = torch.randint(0, 32000, (B, T + 1), device="cuda", generator=g)  # (the Llama 2 tokenizer's ids, as peft.c's data)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fwd(input_ids=ids[:, :-1], labels=ids[:, 1:].contiguous())  # (HF shifts labels itself; same work)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times[warm:])


def bench_torch(path, B, T, targets, steps, compile_, attn="sdpa", family=False):
    import torch
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation=attn).cuda()
    # all-linear: PEFT's own rule for a family (every linear layer but the classifier: Phi-3's fused ones)
    tm = ("all-linear" if family else ALL_LINEAR) if targets == "all-linear" else targets.split(",")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=tm, lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    fwd = torch.compile(model) if compile_ else model
    med = median_step(fwd, opt, B, T, steps, 3 if compile_ else 2, seed=0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, opt, fwd
    torch.cuda.empty_cache()
    return B * T / med, peak


def bench_families(names, steps, compile_, data, tok, keep, gpu):
    """The families' real-size rows: each folder written, peft.c and transformers + PEFT (eager, compiled) trained on
    it, the folder removed (unless keep). A side that runs out of memory prints OOM in its column."""
    import shutil
    import torch
    rows = []
    for name in names:
        cfg, B, T, targets = ROWS[name]
        arch, attn = FAMILIES[name]
        t0 = time.time()
        path = model_folder(name)
        made = time.time() - t0
        tp, mp, wall = bench_peft(path, B, T, targets, steps, data, tok)
        res = []
        for comp in (False, True) if compile_ else (False,):
            try:
                res.append(bench_torch(path, B, T, targets, steps + (2 if comp else 0), comp, attn=attn, family=True))
            except torch.cuda.OutOfMemoryError:
                res.append((float("nan"), float("nan")))
                torch.cuda.empty_cache()
        (te, me), (tc, mc) = res[0], res[1] if len(res) > 1 else (float("nan"), float("nan"))
        hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        rows.append((name, arch, hd, attn, B, T, targets, tp, mp, te, me, tc, mc))
        print(f"{name}: folder {made:.0f} s; peft.c {tp:.0f} tok/s (peak {mp[1]:.2f} GiB allocated, run {wall:.0f} s), transformers+PEFT eager {te:.0f} tok/s (peak {me:.2f} GiB),"
              f" compiled {tc:.0f} tok/s (peak {mc:.2f} GiB); {time.time() - t0:.0f} s in all", flush=True)
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
    print(f"\nThe families' real-size shapes (random weights, bf16) on {gpu}: LoRA all-linear r 8 alpha 16, AdamW, {steps} steps (median after warm-up);"
          " transformers+PEFT with target_modules=\"all-linear\"")
    print("| shape | class | head_dim | peft.c attention | transformers attention | B x T | peft.c tok/s | eager tok/s | ratio | compiled tok/s | ratio |"
          " peft.c peak GiB (in use) | eager peak GiB | compiled peak GiB |")
    print("| --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, arch, hd, attn, B, T, targets, tp, mp, te, me, tc, mc in rows:
        pa = "tensor cores" if hd in (64, 96, 128) else "tensor-core GEMMs (T x T scores a head)" if hd > 128 and hd % 8 == 0 else "fp32 flash kernels"
        print(f"| {name} | {arch}ForCausalLM | {hd} | {pa} | {attn} | {B} x {T} | {tp:.0f} | {te:.0f} | {tp / te:.2f} | {tc:.0f} | {tp / tc:.2f} |"
              f" {mp[1]:.2f} ({mp[0]:.2f}) | {me:.2f} | {mc:.2f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="stories110M,TinyLlama-1.1B", help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="also transformers + PEFT with torch.compile")
    ap.add_argument("--gen-rows", default="stories110M,TinyLlama-1.1B", help="generation rows (empty: none)")
    ap.add_argument("--gen-batch", type=int, default=32, help="batched generation: this many sequences decoded together (0: none)")
    ap.add_argument("--att-rows", default="TinyLlama-1.1B,Llama-2-7B", help="attention forward + backward against sdpa on these rows' shapes (empty: none)")
    ap.add_argument("--qlora-7b", action="store_true", help="also QLoRA NF4 on the Llama-2-7B shape, B1 T1024, checkpointed activations")
    ap.add_argument("--families", nargs="?", const=",".join(FAMILY_ROWS), default=None,
                    help="only the families' real-size rows (default all: " + ", ".join(FAMILY_ROWS) + "), 5 steps unless --steps")
    ap.add_argument("--keep-models", action="store_true", help="--families: keep the written folders in bench/cache/ (else removed after each row)")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--tok", default=os.path.join(ROOT, "..", "shared", "tokenizers", "llama2", "tokenizer.bin"))
    a = ap.parse_args()
    import torch
    gpu = torch.cuda.get_device_name(0)
    if a.families is not None:
        families = [f for f in a.families.split(",") if f]
        bad = [f for f in families if f not in FAMILIES]
        if bad:
            sys.exit("bench_cuda.py: unknown family row %s (known: %s)" % (", ".join(bad), ", ".join(FAMILIES)))
        bench_families(families, 5 if "--steps" not in sys.argv else a.steps, True, a.data, a.tok, a.keep_models, gpu)  # (torch.compile always: the issue asks for both columns)
        return
    rows = []
    for name in [r for r in a.rows.split(",") if r]:
        cfg, B, T, targets = ROWS[name]
        path = model_folder(name)
        tp, mp, wall = bench_peft(path, B, T, targets, a.steps, a.data, a.tok)
        te, me = bench_torch(path, B, T, targets, a.steps, False)
        tc = bench_torch(path, B, T, targets, a.steps + 2, True)[0] if a.compile else float("nan")
        rows.append((name, B, T, targets, tp, mp, te, me, tc))
        print(f"{name}: peft.c {tp:.0f} tok/s (peak {mp[0]:.2f} GiB in use, {mp[1]:.2f} GiB allocated, run {wall:.0f} s), transformers+PEFT eager {te:.0f} tok/s (peak {me:.2f} GiB)"
              + (f", compiled {tc:.0f}" if a.compile else ""), flush=True)
    if rows:
        print(f"\nLoRA training on {gpu}, bf16 (peft.c: bf16 matmul operands, fp32 accumulation and master weights), r 8 alpha 16, AdamW")
        print("GPU memory: peft.c's peak of its own allocations (like torch.cuda.max_memory_allocated, which the eager column is) and,"
              " in brackets, the device memory in use at its peak as cudaMemGetInfo sees it (CUDA context and other processes included)")
        print("| workload | B x T | targets | peft.c tok/s | transformers+PEFT eager tok/s | ratio | compiled tok/s | ratio | peft.c peak GiB (in use) | eager peak GiB |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, B, T, targets, tp, mp, te, me, tc in rows:
        print(f"| {name} | {B} x {T} | {targets} | {tp:.0f} | {te:.0f} | {tp / te:.2f} | {tc:.0f} | {tp / tc if tc == tc else float('nan'):.2f} | {mp[1]:.2f} ({mp[0]:.2f}) | {me:.2f} |")
    if rows:
        peak = bf16_peak()
        sheet = 989.0 if ("H100" in gpu or "H200" in gpu) else float("nan")  # dense bf16, SXM datasheet
        print(f"\nModel FLOPs utilisation on {gpu}: model FLOPs per token (4 per frozen weight, 6 per adapter weight, causal attention"
              f" 6 T dim per layer) x tok/s, against the bf16 peak measured here (torch.mm 8192^3: {peak:.0f} TFLOP/s) and the datasheet's dense {sheet:.0f}")
        print("| workload | GFLOP/token | peft.c TFLOP/s | MFU measured peak | MFU datasheet | eager MFU (datasheet) | compiled MFU (datasheet) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, B, T, targets, tp, mp, te, me, tc in rows:
            f = flops_per_token(name, T)
            print(f"| {name} | {f * 1e-9:.2f} | {tp * f * 1e-12:.0f} | {100 * tp * f * 1e-12 / peak:.1f}% | {100 * tp * f * 1e-12 / sheet:.1f}% |"
                  f" {100 * te * f * 1e-12 / sheet:.1f}% | {100 * tc * f * 1e-12 / sheet:.1f}% |")
    atts = [r for r in a.att_rows.split(",") if r]
    if atts:
        print(f"\nAttention forward + backward on {gpu}, bf16, causal (peft.c: its attention kernels in a 2-layer model of the shape, ms per layer; PyTorch: sdpa)")
        print("| shape | peft.c ms | sdpa ms | ratio (sdpa / peft.c) | sdpa backend | peft.c kernels (ms) |")
        print("| --- | ---: | ---: | ---: | --- | --- |")
        for name in atts:
            mp_, parts = attention_peft(name, a.data, a.tok)
            ms, shape, how = attention_sdpa(name)
            detail = ", ".join(f"{k.replace('attention_', '').replace('_kernel', '')} {v:.3f}" for k, v in parts.items())
            print(f"| {shape} | {mp_:.3f} | {ms:.3f} | {ms / mp_:.2f} | {how} | {detail} |", flush=True)
    if a.qlora_7b:
        path = model_folder("Llama-2-7B")
        tq, mq, wall = bench_peft(path, 1, 1024, "q_proj,v_proj", a.steps, a.data, a.tok, ("--quant", "nf4", "--checkpoint-activations"))
        print(f"\nQLoRA NF4 on the Llama-2-7B shape, B 1 x T 1024, q,v r8, checkpointed activations, on {gpu}: peft.c {tq:.0f} tok/s, "
              f"GPU memory peak {mq[0]:.2f} GiB in use ({mq[0] * 2**30 / 1e9:.2f} GB; bar <= 10 GB), {mq[1]:.2f} GiB allocated, run {wall:.0f} s")
    gens = [g for g in a.gen_rows.split(",") if g]
    if gens:
        bw = copy_bandwidth()
        print(f"\nGeneration on {gpu}: one stream, greedy, {GEN_TOKENS} tokens from \"Once upon a time\" (peft.c bf16 matmuls; transformers bf16, sdpa,"
              f" its default cache and cache_implementation=\"static\"). HBM limit: the weight bytes a token reads / the device-copy bandwidth"
              f" measured here ({bw / 1e12:.2f} TB/s, 2 GiB copied: read + written)")
        print("| model shape | peft.c tok/s | HBM limit tok/s | share of limit | transformers generate | ratio | transformers static cache | ratio |"
              " peft.c nf4 tok/s | nf4 / bf16 | share of nf4's limit |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in gens:
            path = model_folder(name)
            gp, np_ = gen_peft(path, a.tok)
            gq, _ = gen_peft(path, a.tok, ("--quant", "nf4"))
            gt, nt = gen_torch(path)
            gs, _ = gen_torch(path, static=True)
            lim, limq = bw / gen_weight_bytes(name), bw / gen_weight_bytes(name, nf4=True)
            print(f"| {name} | {gp:.1f} ({np_} tokens) | {lim:.0f} | {100 * gp / lim:.0f}% | {gt:.1f} ({nt} tokens) | {gp / gt:.2f} | {gs:.1f} | {gp / gs:.2f} |"
                  f" {gq:.1f} | {gq / gp:.2f} | {100 * gq / limq:.0f}% |", flush=True)
        if a.gen_batch:
            print(f"\nBatched generation on {gpu}: {a.gen_batch} copies of the prompt, greedy, {GEN_TOKENS} tokens each (peft.c: generate -f --batch {a.gen_batch};"
                  " transformers: generate on the batch, its default cache); tok/s over all sequences")
            print("| model shape | peft.c tok/s | transformers tok/s | ratio |")
            print("| --- | ---: | ---: | ---: |")
            for name in gens:
                path = model_folder(name)
                bp, nb = gen_peft_batch(path, a.tok, a.gen_batch)
                bt, ntb = gen_torch(path, batch=a.gen_batch)
                print(f"| {name} | {bp:.1f} ({nb} tokens) | {bt:.1f} ({ntb} tokens) | {bp / bt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
