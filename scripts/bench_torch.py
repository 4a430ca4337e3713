#!/usr/bin/env python3
"""PyTorch CPU peer of `npm run bench` (ts/bench/main.ts), measured the same way.

GEMM GFLOP/s at GPT-2 training shapes with M = 512 tokens (batch 2 x context 256):
    fwd   out[M,N]  = inp[M,K] . W[N,K]^T      torch.matmul(inp, W.t(), out=out)  (F.linear without bias)
    dinp  dinp[M,K] = dout[M,N] . W[N,K]       torch.matmul(dout, W)
    dW    dW[N,K]  += dout[M,N]^T . inp[M,K]   dW.addmm_(dout.t(), inp)   (accumulates, as the backward does)
for (K,N) = (768,2304) qkv, (768,768) attn proj, (768,3072) fc, (3072,768) fc proj, (768,50257) lm head;
median of several repetitions after a warmup.

Training tokens/s of the book's GPTModel (chapter 4 of "Build a Large Language Model (From
Scratch)", written out below) with chapter 5's GPT_CONFIG_124M (vocab 50257, context 256,
emb 768, 12 heads, 12 layers, dropout 0.1, qkv_bias False): batch 2 x 256, forward +
cross-entropy + backward + AdamW(lr 4e-4, weight_decay 0.1), one warmup step then --train-steps
timed steps (median). torch.set_num_threads(2), as the native backend's 2 threads.

    python3 scripts/bench_torch.py [--only gemm,train,generate] [--gen-dir DIR] [--json] [--quick] [--train-steps N]
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# The book's GPT (chapter 4)
# ---------------------------------------------------------------------------

GPT_CONFIG_124M = {
    "vocab_size": 50257,
    "context_length": 256,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)

        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        attn_scores = queries @ keys.transpose(2, 3)
        mask_bool = self.mask.bool()[:num_tokens, :num_tokens]
        attn_scores.masked_fill_(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)

        context_vec = (attn_weights @ values).transpose(1, 2)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)


class LayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        x = self.att(x)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        batch_size, seq_len = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))
        x = tok_embeds + pos_embeds
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        return self.out_head(x)


# ---------------------------------------------------------------------------
# Timing and tables (the layout of ts/bench/util.ts)
# ---------------------------------------------------------------------------

GEMM_M = 512
GEMM_SHAPES = [
    ("qkv", 768, 2304),
    ("attn proj", 768, 768),
    ("fc", 768, 3072),
    ("fc proj", 3072, 768),
    ("lm head", 768, 50257),
]


def time_it(fn, warmup=1, min_reps=3, max_reps=20, min_seconds=0.5):
    """Median and count of wall times of fn() after warmup, repeating until min_seconds (or max_reps)."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < min_reps or (sum(times) < min_seconds and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def fmt(x):
    if isinstance(x, str):
        return x
    if isinstance(x, int) or (isinstance(x, float) and math.isfinite(x) and x == int(x) and abs(x) >= 1000):
        return str(int(x))
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 1000:
        return f"{x:.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 10:
        return f"{x:.2f}"
    if a >= 1:
        return f"{x:.3f}"
    return f"{x:.3g}"


def format_table(headers, rows):
    text = [[fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(not isinstance(r[i], str) for r in rows) for i in range(len(headers))]

    def line(cells):
        return "  ".join(c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in text])


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def bench_gemm(timing):
    g = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.rand(*shape, generator=g) * 2 - 1
    M = GEMM_M
    results = []
    with torch.no_grad():
        for layer, K, N in GEMM_SHAPES:
            inp, W, dout = rand(M, K), rand(N, K), rand(M, N)
            out, dinp, dW = torch.empty(M, N), torch.empty(M, K), torch.zeros(N, K)
            flop = 2 * M * N * K
            cases = [
                # F.linear(inp, W) without its fresh output allocation: the same product into `out`.
                ("fwd", lambda: torch.matmul(inp, W.t(), out=out)),
                ("dinp", lambda: torch.matmul(dout, W, out=dinp)),
                ("dW", lambda: dW.addmm_(dout.t(), inp)),
            ]
            for op, fn in cases:
                t, reps = time_it(fn, **timing)
                results.append({
                    "name": f"{op} {K}x{N}", "layer": layer, "op": op, "M": M, "N": N, "K": K,
                    "ms": round(t * 1e3, 4), "gflops": round(flop / t / 1e9, 2), "reps": reps,
                })
            del inp, W, dout, out, dinp, dW
    return results


def bench_train(steps, batch=2, context=256):
    torch.manual_seed(123)
    cfg = dict(GPT_CONFIG_124M)
    model = GPTModel(cfg)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    g = torch.Generator().manual_seed(7)

    def step():
        ids = torch.randint(0, cfg["vocab_size"], (batch, context + 1), generator=g)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        optimizer.zero_grad()
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        return loss.item()

    step()  # warmup: allocations, AdamW state
    times, loss = [], float("nan")
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "batch": batch, "context": context,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps, "ms_per_step": round(t * 1e3, 1), "tokens_per_s": round(batch * context / t, 1),
        "loss": round(loss, 4), "max_rss_mb": round(max_rss_mb(), 1),
    }


def bench_generate(gen_dir):
    """Hugging Face transformers' greedy generate on the model and prompts
    `npm run bench -- --gen-export DIR` wrote, batch 1 and the batch there, with
    the KV cache; ids are compared with ours from DIR/ids.json."""
    from transformers import GPT2LMHeadModel  # imported here: the other sections need only torch

    with open(os.path.join(gen_dir, "ids.json")) as f:
        rec = json.load(f)
    model = GPT2LMHeadModel.from_pretrained(gen_dir, torch_dtype=torch.float32)
    model.eval()
    n = rec["new_tokens"]

    def run(prompts, new):
        ids = torch.tensor(prompts, dtype=torch.long)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                                 min_new_tokens=new, eos_token_id=None, pad_token_id=0, use_cache=True)
        return time.perf_counter() - t0, out.tolist()

    rows = {}
    for key, prompts in (("cached", rec["prompts"][:1]), ("batched", rec["prompts"])):
        run(prompts, 3)  # warmup
        first, _ = run(prompts, 1)
        total, ids = run(prompts, n)
        b = len(prompts)
        ours = rec["batch1"] if key == "cached" else rec["batched"]
        rows[key] = {
            "batch": b, "new_tokens": b * n, "first_token_ms": round(first * 1e3, 1), "total_s": round(total, 3),
            "tokens_per_s": round(b * n / total, 2),
            # Tokens after the first, over the time beyond a 1-token run: the steady decode rate.
            "decode_tokens_per_s": round(b * (n - 1) / max(total - first, 1e-9), 2),
            "ids_identical": ids == ours,
            "first_difference": next(([r, i] for r in range(len(ids)) for i in range(len(ids[r]))
                                      if r >= len(ours) or i >= len(ours[r]) or ids[r][i] != ours[r][i]), None),
        }
    import transformers
    return {"transformers": transformers.__version__, **rows}


def main():
    ap = argparse.ArgumentParser(description="PyTorch CPU peer of npm run bench")
    ap.add_argument("--only", default="gemm,train", help="comma-separated: gemm,train,generate (default gemm,train)")
    ap.add_argument("--gen-dir", default=None, help="for generate: the directory npm run bench -- --gen-export wrote")
    ap.add_argument("--json", action="store_true", help="also print a one-line JSON summary (the last line)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke test)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed training steps after one warmup (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in ("gemm", "train", "generate")]
    if bad or not only:
        ap.error(f"--only takes gemm,train,generate (got {args.only})")
    if "generate" in only and not args.gen_dir:
        ap.error("generate needs --gen-dir DIR (written by npm run bench -- --only generate --gen-export DIR)")
    torch.set_num_threads(args.threads)
    steps = args.train_steps if args.train_steps is not None else (1 if args.quick else 3)
    timing = dict(warmup=1, min_reps=1, max_reps=2, min_seconds=0) if args.quick else dict(warmup=1, min_reps=3, max_reps=20, min_seconds=0.5)

    started = time.perf_counter()
    summary = {"bench": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(), "sections": only}
    print(f"torch bench: torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if "gemm" in only:
        t0 = time.perf_counter()
        print("\n== GEMM ==")
        rows = bench_gemm(timing)
        print(f"M = {GEMM_M} tokens; fwd out[M,N] = inp[M,K]·W[N,K]^T, dinp[M,K] = dout[M,N]·W[N,K], dW[N,K] += dout^T·inp; median ms")
        print(format_table(["op", "layer", "M", "K", "N", "ms", "GFLOP/s", "reps"],
                           [[r["op"], r["layer"], r["M"], r["K"], r["N"], r["ms"], r["gflops"], r["reps"]] for r in rows]))
        summary["gemm"] = rows
        print(f"(gemm: {time.perf_counter() - t0:.1f} s)")
    if "train" in only:
        t0 = time.perf_counter()
        print("\n== training ==")
        r = bench_train(steps)
        c = GPT_CONFIG_124M
        print(f"book's model: vocab {c['vocab_size']}, ctx {c['context_length']}, emb {c['emb_dim']}, {c['n_heads']} heads, "
              f"{c['n_layers']} layers, dropout {c['drop_rate']}, qkv_bias {str(c['qkv_bias']).lower()}, "
              f"{r['parameters'] / 1e6:.1f}M parameters; batch {r['batch']} x {r['context']}, forward+backward+AdamW, "
              f"median of {r['steps']} step(s) after 1 warmup")
        print(format_table(["device", "ms/step", "tokens/s", "loss", "peak RSS MB"],
                           [["cpu", r["ms_per_step"], r["tokens_per_s"], r["loss"], r["max_rss_mb"]]]))
        summary["train"] = r
        print(f"(train: {time.perf_counter() - t0:.1f} s)")
    if "generate" in only:
        t0 = time.perf_counter()
        print("\n== generation ==")
        r = bench_generate(args.gen_dir)
        print(f"Hugging Face transformers {r['transformers']} GPT2LMHeadModel, fp32, greedy, KV cache, the model and prompts of {args.gen_dir}")
        print(format_table(["batch", "new tokens", "first token ms", "total s", "tokens/s", "decode tokens/s", "ids = ours"],
                           [[x["batch"], x["new_tokens"], x["first_token_ms"], x["total_s"], x["tokens_per_s"], x["decode_tokens_per_s"],
                             "yes" if x["ids_identical"] else f"no (first at {x['first_difference']})"] for x in (r["cached"], r["batched"])]))
        summary["generate"] = r
        print(f"(generate: {time.perf_counter() - t0:.1f} s)")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json:
        print(json.dumps(summary, separators=(",", ":")))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
