#!/usr/bin/env python3
"""
make bench-cuda: peft.c's LoRA training on the GPU next to transformers + PEFT on the same GPU, same
shapes, same LoRA setup, random weights, in one run. Needs torch, transformers and peft (the GPU
machine has them) and ./peft built with `make CUDA=1`.

  python3 bench/bench_cuda.py                      # the table (stories110M and TinyLlama-1.1B shapes)
  python3 bench/bench_cuda.py --rows stories110M   # one row
  python3 bench/bench_cuda.py --compile            # transformers + PEFT with torch.compile too
  python3 bench/bench_cuda.py --rows Llama-2-7B --qlora-7b --gen-rows ""   # the 7B row, and QLoRA NF4 on it

Each workload writes a random LlamaForCausalLM of that shape once (bf16 safetensors, bench/cache/),
which both sides load. peft.c: `peft train --bench` on tinyshakespeare tokenized with the Llama 2
tokenizer (median step time after warm-up; GPU memory peak as peft reports it). transformers + PEFT:
the model in bf16 with sdpa attention, get_peft_model with the same LoRA config, AdamW on the adapter,
random tokens; median of CUDA-event step times after warm-up; torch.cuda.max_memory_allocated.
Prints one table; ratio = peft.c tok/s / transformers tok/s.

Generation (--gen-rows, default the stories110M and TinyLlama shapes): one stream, greedy, from "Once upon a
time", GEN_TOKENS tokens: `peft generate --device cuda` (its "achieved tok/s", timed from the first step as
llama2.c does) against transformers' `generate` (bf16, sdpa, KV cache; min_new_tokens = max_new_tokens so
that both make the same number of tokens; wall time of one call after a warm-up call).

--qlora-7b: `peft train --quant nf4 --checkpoint-activations` on the Llama-2-7B shape, B1 T1024, q,v r8:
tok/s and the GPU memory peak (the issue's bar: <= 10 GB).
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
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def model_folder(name):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    path = os.path.join(HERE, "cache", name + "-hf-bf16")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    cfg, _, _, _ = ROWS[name]
    config = LlamaConfig(**cfg, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
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
    mem = re.search(r"GPU memory peak ([0-9.]+) GiB", p.stderr)
    return float(m.group(2)), float(mem.group(1)) if mem else float("nan"), time.time() - t0


def gen_peft(path, tok):
    cmd = [os.path.join(ROOT, "peft"), "generate", path, "-z", tok, "-n", str(GEN_TOKENS), "-t", "0", "-p", "Once upon a time", "--device", "cuda"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit("peft generate failed: " + p.stderr[-2000:])
    m = re.search(r"achieved tok/s: ([0-9.]+) \(([0-9]+) tokens\)", p.stderr)
    return float(m.group(1)), int(m.group(2))


def gen_torch(path):
    import torch
    from transformers import AutoModelForCausalLM
    torch.cuda.empty_cache()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    ids = torch.tensor([PROMPT_IDS], device="cuda")
    with torch.no_grad():
        model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False)  # warm-up
        torch.cuda.synchronize()
        t0 = time.time()
        out = model.generate(ids, max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS, do_sample=False)
        torch.cuda.synchronize()
        dt = time.time() - t0
    n = out.shape[1] - ids.shape[1]
    del model
    torch.cuda.empty_cache()
    return n / dt, n


def median_step(fwd, opt, B, T, steps, warm, seed):
    """Median seconds of a LoRA step (forward on random tokens, backward, AdamW) after warm steps, by CUDA events."""
    import torch
    g = torch.Generator(device="cuda").manual_seed(seed)
    times = []
    for step in range(steps):
        ids = torch.randint(0, 32000, (B, T + 1), device="cuda", generator=g)
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


def bench_torch(path, B, T, targets, steps, compile_):
    import torch
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    tm = ALL_LINEAR if targets == "all-linear" else targets.split(",")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=tm, lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    fwd = torch.compile(model) if compile_ else model
    med = median_step(fwd, opt, B, T, steps, 3 if compile_ else 2, seed=0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, opt, fwd
    torch.cuda.empty_cache()
    return B * T / med, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="stories110M,TinyLlama-1.1B", help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="also transformers + PEFT with torch.compile")
    ap.add_argument("--gen-rows", default="stories110M,TinyLlama-1.1B", help="generation rows (empty: none)")
    ap.add_argument("--qlora-7b", action="store_true", help="also QLoRA NF4 on the Llama-2-7B shape, B1 T1024, checkpointed activations")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--tok", default=os.path.join(ROOT, "..", "shared", "tokenizers", "llama2", "tokenizer.bin"))
    a = ap.parse_args()
    import torch
    gpu = torch.cuda.get_device_name(0)
    rows = []
    for name in [r for r in a.rows.split(",") if r]:
        cfg, B, T, targets = ROWS[name]
        path = model_folder(name)
        tp, mp, wall = bench_peft(path, B, T, targets, a.steps, a.data, a.tok)
        te, me = bench_torch(path, B, T, targets, a.steps, False)
        tc = bench_torch(path, B, T, targets, a.steps + 2, True)[0] if a.compile else float("nan")
        rows.append((name, B, T, targets, tp, mp, te, me, tc))
        print(f"{name}: peft.c {tp:.0f} tok/s (peak {mp:.2f} GiB, run {wall:.0f} s), transformers+PEFT eager {te:.0f} tok/s (peak {me:.2f} GiB)"
              + (f", compiled {tc:.0f}" if a.compile else ""), flush=True)
    if rows:
        print(f"\nLoRA training on {gpu}, bf16 (peft.c: bf16 matmul operands, fp32 accumulation and master weights), r 8 alpha 16, AdamW")
        print("| workload | B x T | targets | peft.c tok/s | transformers+PEFT eager tok/s | ratio | compiled tok/s | ratio | peft.c GPU peak GiB | eager peak GiB |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, B, T, targets, tp, mp, te, me, tc in rows:
        print(f"| {name} | {B} x {T} | {targets} | {tp:.0f} | {te:.0f} | {tp / te:.2f} | {tc:.0f} | {tp / tc if tc == tc else float('nan'):.2f} | {mp:.2f} | {me:.2f} |")
    if a.qlora_7b:
        path = model_folder("Llama-2-7B")
        tq, mq, wall = bench_peft(path, 1, 1024, "q_proj,v_proj", a.steps, a.data, a.tok, ("--quant", "nf4", "--checkpoint-activations"))
        print(f"\nQLoRA NF4 on the Llama-2-7B shape, B 1 x T 1024, q,v r8, checkpointed activations, on {gpu}: peft.c {tq:.0f} tok/s, "
              f"GPU memory peak {mq:.2f} GiB ({mq * 2**30 / 1e9:.2f} GB; bar <= 10 GB), run {wall:.0f} s")
    gens = [g for g in a.gen_rows.split(",") if g]
    if gens:
        print(f"\nGeneration on {gpu}: one stream, greedy, {GEN_TOKENS} tokens from \"Once upon a time\" (peft.c bf16 matmuls; transformers bf16, sdpa)")
        print("| model shape | peft.c tok/s | transformers generate tok/s | ratio |")
        print("| --- | ---: | ---: | ---: |")
        for name in gens:
            path = model_folder(name)
            gp, np_ = gen_peft(path, a.tok)
            gt, nt = gen_torch(path)
            print(f"| {name} | {gp:.1f} ({np_} tokens) | {gt:.1f} ({nt} tokens) | {gp / gt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
