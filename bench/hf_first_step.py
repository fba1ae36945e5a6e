#!/usr/bin/env python3
"""transformers + PEFT's time to the first LoRA step, the figure `make bench-big` compares peft.c's startup line with:
from the start of this process (imports included, as peft.c's count from its main) through from_pretrained (bf16,
onto the GPU), get_peft_model (LoRA q_proj,v_proj r 8, alpha 16) and one AdamW step on B x T random tokens.

    python3 bench/hf_first_step.py FOLDER [-b B] [-T T] [--t0 EPOCH_SECONDS]

--t0: the launcher's clock when it started this process (else this interpreter's start, which leaves out the
exec). Prints one line: hf: first step done X s after the start (from_pretrained Y s, step Z s), host memory peak G GiB"""
import time
T_IMPORT = time.time()
import argparse  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("-b", type=int, default=1)
    ap.add_argument("-T", type=int, default=4096)
    ap.add_argument("--t0", type=float, default=None)
    a = ap.parse_args()
    t0 = a.t0 if a.t0 else T_IMPORT
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    t1 = time.time()
    dt = {"dtype": torch.bfloat16} if int(transformers.__version__.split(".")[0]) >= 5 else {"torch_dtype": torch.bfloat16}
    model = AutoModelForCausalLM.from_pretrained(a.folder, device_map="cuda", **dt)
    assert next(model.parameters()).dtype == torch.bfloat16
    t_load = time.time() - t1
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (a.b, a.T), generator=g).cuda()
    t2 = time.time()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    torch.cuda.synchronize()
    t3 = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    print(f"hf: first step done {t3 - t0:.2f} s after the start (from_pretrained {t_load:.2f} s, step {t3 - t2:.2f} s), "
          f"host memory peak {peak:.3f} GiB (loss {loss.item():.4f}; torch {torch.__version__}, transformers {transformers.__version__})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
