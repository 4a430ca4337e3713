#!/usr/bin/env python3
"""PyTorch's side of `npm run gpu-check`, on the same GPU in the same call.

The book's GPT model (chapter 4: pre-LayerNorm blocks, tanh GELU, untied output
head) at GPT-2 124M's shape, trained with fused AdamW at context 1024 (batch 8
and 16): float32 with TF32 matmuls (eager), bf16 autocast with SDPA flash
attention (eager), and bf16 autocast under torch.compile when it compiles within
--compile-timeout seconds (run in a child process, so a slow compile costs only
its budget). Then Hugging Face's GPT2LMHeadModel.generate at batch 1 (greedy,
KV cache). Prints one JSON line {"bench": "torch-gpu", ...} last.

  python3 scripts/gpu_peer.py [--smoke] [--only train|compile|generate] [--compile-timeout S]

--smoke: a tiny model on whatever device torch has (the CPU here), for checking
the script itself. eos = 0 in generate, and min_new_tokens keeps every run the same length.
"""
import argparse
import json
import math
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GPT2_124M = dict(vocab=50257, ctx=1024, emb=768, heads=12, layers=12)
TINY = dict(vocab=503, ctx=64, emb=64, heads=2, layers=2)


class LayerNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d))
        self.shift = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.scale, self.shift, 1e-5)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.heads = c["emb"], c["heads"]
        self.norm1, self.norm2 = LayerNorm(d), LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.norm2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tok = nn.Embedding(c["vocab"], c["emb"])
        self.pos = nn.Embedding(c["ctx"], c["emb"])
        self.blocks = nn.Sequential(*[Block(c) for _ in range(c["layers"])])
        self.norm = LayerNorm(c["emb"])
        self.head = nn.Linear(c["emb"], c["vocab"], bias=False)

    def forward(self, ids, targets):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        logits = self.head(self.norm(self.blocks(x)))
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def train(c, B, mode, steps, dev):
    torch.manual_seed(1)
    model = GPT(c).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1, fused=dev.type == "cuda")
    step_model = torch.compile(model) if mode == "bf16-compile" else model
    ids = torch.randint(0, c["vocab"], (B, c["ctx"]), device=dev)
    targets = torch.randint(0, c["vocab"], (B, c["ctx"]), device=dev)
    bf16 = mode.startswith("bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = step_model(ids, targets)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    step()
    sync(dev)
    warm = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    return dict(mode=mode, B=B, T=c["ctx"], tokens_per_s=B * c["ctx"] * steps / seconds, peak_gib=peak, warmup_s=warm)


def generate(c, new_tokens, dev):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=c["vocab"], n_positions=c["ctx"], n_embd=c["emb"], n_layer=c["layers"], n_head=c["heads"],
                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(1)
    model = GPT2LMHeadModel(cfg).to(dev).eval()
    prompt = torch.randint(0, c["vocab"], (1, 20), device=dev)
    kw = dict(do_sample=False, use_cache=True, pad_token_id=0)
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=10, min_new_tokens=10, **kw)
        sync(dev)
        t0 = time.perf_counter()
        model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        sync(dev)
    return dict(batch=1, new_tokens=new_tokens, tokens_per_s=new_tokens / (time.perf_counter() - t0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--only", choices=["train", "compile", "generate"])
    ap.add_argument("--compile-timeout", type=float, help="seconds torch.compile may take (default 180; 30 with --smoke)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    c = TINY if args.smoke else GPT2_124M
    if args.compile_timeout is None:
        args.compile_timeout = 30 if args.smoke else 180
    batches = [2] if args.smoke else [8, 16]
    steps = 2 if args.smoke else 10
    out = dict(bench="torch-gpu", device=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", torch=torch.__version__, train=[], notes=[])

    if args.only == "compile":
        out["train"] = [train(c, B, "bf16-compile", steps, dev) for B in batches]
        print(json.dumps(out))
        return
    if args.only in (None, "train"):
        for mode in ["fp32", "bf16"]:
            for B in batches:
                out["train"].append(train(c, B, mode, steps, dev))
                print(f"torch {mode} {B}x{c['ctx']}: {out['train'][-1]['tokens_per_s']:,.0f} tokens/s", flush=True)
        # torch.compile in a child process: its budget is a wall-clock limit, not a hope.
        try:
            r = subprocess.run([sys.executable, __file__, "--only", "compile"] + (["--smoke"] if args.smoke else []),
                               capture_output=True, text=True, timeout=args.compile_timeout)
            lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
            if r.returncode == 0 and lines:
                out["train"] += json.loads(lines[-1])["train"]
            else:
                out["notes"].append(f"torch.compile failed (exit {r.returncode}): {(r.stderr.strip().splitlines() or [''])[-1][:200]}")
        except subprocess.TimeoutExpired:
            out["notes"].append(f"torch.compile did not finish within {args.compile_timeout:.0f} s")
    if args.only in (None, "generate"):
        try:
            out["generate"] = generate(c, 20 if args.smoke else 200, dev)
        except Exception as e:  # transformers missing or too old: the training rows still count
            out["notes"].append(f"Hugging Face generate failed: {type(e).__name__}: {e}"[:300])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
