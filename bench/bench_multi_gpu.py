#!/usr/bin/env python3
"""
Data-parallel scaling on one host: peft.c on 1 and N GPUs (each process one GPU, batch B each, NCCL
sums the LoRA gradients) beside transformers + PEFT under PyTorch DDP on 1 and N GPUs, same shapes and
LoRA setup as bench/bench_cuda.py (random weights, bf16), in one run. Needs ./peft built with
`make CUDA=1 NCCL=1`, torch, transformers, peft, and torchrun.

  python3 bench/bench_multi_gpu.py --gpus 2 --rows TinyLlama-1.1B,Llama-2-7B

tokens/s counts every GPU's tokens (N x B x T per step); scaling = tok/s on N GPUs / (N x tok/s on 1).
peft.c: `peft train --bench` (median step after warm-up) under `torchrun --no-python`. DDP: the median
of CUDA-event step times on rank 0 after warm-up, under torchrun (this file with --worker).
"""
import argparse, os, re, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_cuda import ROWS, ALL_LINEAR, model_folder, median_step  # noqa: E402


def torchrun(n, args, env=None):
    cmd = ["torchrun", "--nproc-per-node", str(n), "--master-port", str(29700 + n)] + args
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit("failed: " + " ".join(cmd) + "\n" + p.stderr[-3000:])
    return p.stdout + p.stderr


def bench_peft(n, path, B, T, targets, steps, data, tok):
    args = ["--no-python", os.path.join(ROOT, "peft"), "train", path, data, "-z", tok, "-b", str(B), "-T", str(T), "--targets", targets,
            "-r", "8", "--alpha", "16", "--steps", str(steps), "--val-frac", "0", "--bench", "--device", "cuda", "-o", f"/tmp/bench_mgpu_{n}"]
    out = torchrun(n, args)
    m = re.search(r"median step ([0-9.]+) s \| ([0-9.]+) tok/s", out)
    mem = re.search(r"GPU memory peak ([0-9.]+) GiB", out)
    return float(m.group(2)), float(mem.group(1)) if mem else float("nan")


def bench_ddp(n, name, steps):
    out = torchrun(n, [os.path.abspath(__file__), "--worker", "--rows", name, "--steps", str(steps)])
    m = re.search(r"ddp: ([0-9.]+) tok/s, peak ([0-9.]+) GiB", out)
    return float(m.group(1)), float(m.group(2))


def worker(name, steps):
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    dist.init_process_group("nccl")
    rank, world, local = dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    cfg, B, T, targets = ROWS[name]
    path = os.path.join(HERE, "cache", name + "-hf-bf16")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    tm = ALL_LINEAR if targets == "all-linear" else targets.split(",")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=tm, lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    ddp = DDP(model, device_ids=[local])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    med = median_step(ddp, opt, B, T, steps, 2, seed=rank)
    if rank == 0:
        print(f"ddp: {world * B * T / med:.1f} tok/s, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="TinyLlama-1.1B,Llama-2-7B", help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--gpus", type=int, default=2, help="N, compared with 1")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--tok", default=os.path.join(ROOT, "..", "shared", "tokenizers", "llama2", "tokenizer.bin"))
    a = ap.parse_args()
    if a.worker:
        return worker(a.rows, a.steps)
    import torch
    gpu = torch.cuda.get_device_name(0)
    res = []
    for name in a.rows.split(","):
        cfg, B, T, targets = ROWS[name]
        path = model_folder(name)
        torch.cuda.empty_cache()
        p1, m1 = bench_peft(1, path, B, T, targets, a.steps, a.data, a.tok)
        pn, mn = bench_peft(a.gpus, path, B, T, targets, a.steps, a.data, a.tok)
        d1, _ = bench_ddp(1, name, a.steps)
        dn, dm = bench_ddp(a.gpus, name, a.steps)
        res.append((name, B, T, targets, p1, pn, d1, dn, mn, dm))
        print(f"{name}: peft.c {p1:.0f} -> {pn:.0f} tok/s ({pn / (a.gpus * p1):.3f}), DDP {d1:.0f} -> {dn:.0f} ({dn / (a.gpus * d1):.3f})", flush=True)
    n = a.gpus
    print(f"\nData-parallel LoRA training on {n} x {gpu} (one host, NCCL), bf16, r 8 alpha 16, batch B per GPU")
    print(f"| workload | B x T per GPU | targets | peft.c 1 GPU tok/s | peft.c {n} GPUs | scaling | DDP+PEFT 1 GPU | DDP+PEFT {n} GPUs | scaling | peft.c / DDP on {n} | peak GiB per GPU peft.c / DDP |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, B, T, targets, p1, pn, d1, dn, mn, dm in res:
        print(f"| {name} | {B} x {T} | {targets} | {p1:.0f} | {pn:.0f} | {pn / (n * p1):.3f} | {d1:.0f} | {dn:.0f} | {dn / (n * d1):.3f} | {pn / dn:.2f} | {mn:.1f} / {dm:.1f} |")


if __name__ == "__main__":
    main()
