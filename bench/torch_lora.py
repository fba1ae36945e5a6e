#!/usr/bin/env python3
"""
The PyTorch side of `make bench`: the same LoRA training step as `peft train` (Llama forward,
cross-entropy, backward, AdamW on the adapter only) in plain PyTorch with PEFT-style LoRA on
q_proj and v_proj, random weights of a llama2.c shape and random tokens.

  python3 bench/torch_lora.py --shape stories15M -b 4 -T 256 -r 8 --threads 2 --steps 8

Prints one line: "torch: threads N | steps K after W warm-up | median step S s | X tok/s".
Standard PyTorch modules only (torch 1.13 has no scaled_dot_product_attention: attention is
written out as Hugging Face's eager LlamaAttention does it).
"""
import argparse, math, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    "stories15M": dict(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000),
    "stories42M": dict(dim=512, hidden_dim=1376, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000),
    "stories110M": dict(dim=768, hidden_dim=2048, n_layers=12, n_heads=12, n_kv_heads=12, vocab_size=32000),
}

class LoraLinear(nn.Module):
    """ y = x W^T + scale * (x A^T) B^T, W frozen; PEFT's init (kaiming-uniform A, zero B) """
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.normal_(self.lora_B.weight, std=0.01)  # not zero, so that every gradient is non-trivial
        self.scale = alpha / r
    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale

class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H = c["dim"], c["hidden_dim"]
        self.nh, self.nkv, self.hs = c["n_heads"], c["n_kv_heads"], D // c["n_heads"]
        self.q_proj = nn.Linear(D, self.nh * self.hs, bias=False)
        self.k_proj = nn.Linear(D, self.nkv * self.hs, bias=False)
        self.v_proj = nn.Linear(D, self.nkv * self.hs, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hs, D, bias=False)
        self.gate_proj = nn.Linear(D, H, bias=False)
        self.up_proj = nn.Linear(D, H, bias=False)
        self.down_proj = nn.Linear(H, D, bias=False)
        self.input_layernorm = RMSNorm(D)
        self.post_attention_layernorm = RMSNorm(D)
    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.nh, self.hs).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.nkv, self.hs).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.nkv, self.hs).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.nkv != self.nh:
            k = k.repeat_interleave(self.nh // self.nkv, dim=1)
            v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs) + mask
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.o_proj(y)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

class Llama(nn.Module):
    def __init__(self, c, T):
        super().__init__()
        self.embed = nn.Embedding(c["vocab_size"], c["dim"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"])
        hs = c["dim"] // c["n_heads"]
        inv = 1.0 / (10000.0 ** (torch.arange(0, hs, 2).float() / hs))
        f = torch.outer(torch.arange(T).float(), inv)
        emb = torch.cat((f, f), dim=-1)
        self.register_buffer("cos", emb.cos()[None, None])
        self.register_buffer("sin", emb.sin()[None, None])
        self.register_buffer("mask", torch.full((T, T), float("-inf")).triu(1))
    def forward(self, idx):
        x = self.embed(idx)
        for blk in self.layers:
            x = blk(x, self.cos, self.sin, self.mask)
        return self.norm(x) @ self.embed.weight.t()  # tied classifier

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="stories15M", choices=sorted(SHAPES))
    p.add_argument("-b", type=int, default=4)
    p.add_argument("-T", type=int, default=256)
    p.add_argument("-r", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    c = SHAPES[a.shape]
    model = Llama(c, a.T)
    with torch.no_grad():
        for prm in model.parameters():
            if prm.dim() == 2:
                prm.uniform_(-0.01, 0.01)
    for prm in model.parameters():
        prm.requires_grad_(False)
    for blk in model.layers:  # LoRA r, alpha = r (scale 1) on q_proj and v_proj
        blk.q_proj = LoraLinear(blk.q_proj, a.r, a.r)
        blk.v_proj = LoraLinear(blk.v_proj, a.r, a.r)
    params = [prm for n, prm in model.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    V = c["vocab_size"]
    times = []
    for step in range(a.warmup + a.steps):
        idx = torch.randint(0, V, (a.b, a.T + 1))
        t0 = time.perf_counter()
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.view(-1, V), idx[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times[a.warmup:])
    print(f"torch: threads {a.threads} | steps {a.steps} after {a.warmup} warm-up | median step {s:.4f} s | "
          f"{a.b * a.T / s:.1f} tok/s | loss {loss.item():.4f}", flush=True)

if __name__ == "__main__":
    main()
