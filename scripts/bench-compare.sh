#!/bin/sh
# Side by side: gptcuda's native CPU backend vs PyTorch on the CPU, in the same
# run, at the same GEMM shapes, on the book's model training step, and for
# GPT-2 124M greedy generation (batch 1 and 8; fp32, and bf16 against our
# fp32) vs Hugging Face transformers on the same random weights (exported to
# safetensors) and prompts, and tokenization vs tiktoken (2 threads).
#
#   scripts/bench-compare.sh [--quick] [--train-steps N] [--gen-tokens N]
#
# Runs `npm run bench -- --only gemm,train,generate --json --gen-export DIR` then
# `python3 scripts/bench_torch.py --only gemm,train,generate --gen-dir DIR --json`
# (one after the other, never together: they would share the cores), keeps
# both outputs, and prints a table of ours / PyTorch (> 1: we are faster) and
# whether the greedy ids are identical. Needs `npx tsc -p tsconfig.json` first
# (dist/bench/main.js) and a Python with torch and transformers (installed
# from the configured pip index when missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

extra=""
ours_extra=""
next_ours=0
for a in "$@"; do
  if [ "$next_ours" = 1 ]; then ours_extra="$ours_extra $a"; next_ours=0; continue; fi
  case "$a" in
    --quick|--train-steps|--train-steps=*|[0-9]*) extra="$extra $a" ;;
    --gen-tokens) ours_extra="$ours_extra $a"; next_ours=1 ;;
    --gen-tokens=*) ours_extra="$ours_extra $a" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-compare: unknown option $a" >&2; exit 2 ;;
  esac
done

if [ ! -f dist/bench/main.js ]; then
  echo "bench-compare: dist/bench/main.js is missing; run npx tsc -p tsconfig.json first" >&2
  exit 1
fi
python3 -c 'import torch' 2>/dev/null || { echo "bench-compare: python3 cannot import torch" >&2; exit 1; }
if ! python3 -c 'import transformers, safetensors' 2>/dev/null; then
  echo "bench-compare: installing transformers and safetensors from the configured pip index"
  python3 -m pip install --quiet transformers safetensors || { echo "bench-compare: could not install transformers" >&2; exit 1; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

mkdir -p "$tmp/gen"
echo "== ours: npm run bench -- --only gemm,train,generate --json --gen-export $tmp/gen$extra$ours_extra"
# shellcheck disable=SC2086
npm run --silent bench -- --only gemm,train,generate --json --gen-export "$tmp/gen" $extra $ours_extra | tee "$tmp/ours.txt"
echo
echo "== PyTorch: python3 scripts/bench_torch.py --only gemm,train,generate --gen-dir $tmp/gen --json$extra"
# shellcheck disable=SC2086
python3 scripts/bench_torch.py --only gemm,train,generate --gen-dir "$tmp/gen" --json $extra | tee "$tmp/torch.txt"
echo

# Tokenization against tiktoken (2 threads) on the same text, ids compared: its own script, run here
# so that one call prints every comparison; its table is printed with the others below.
if python3 -c 'import tiktoken' 2>/dev/null; then
  node scripts/bench-tokenizer.mjs --mb 8 --runs 3 > "$tmp/tokenizer.txt" 2>&1 || echo "(bench-tokenizer failed)" >> "$tmp/tokenizer.txt"
else
  echo "skipped: python3 cannot import tiktoken (pip install tiktoken)" > "$tmp/tokenizer.txt"
fi

python3 - "$tmp/ours.txt" "$tmp/torch.txt" <<'EOF'
import json, sys

def summary(path, bench):
    found = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{") and f'"bench":"{bench}"' in line.replace(" ", ""):
                found = json.loads(line)
    if found is None:
        sys.exit(f"bench-compare: no JSON summary from {bench} in {path}")
    return found

ours, torch = summary(sys.argv[1], "gptcuda"), summary(sys.argv[2], "torch")

def table(headers, rows, left=(0, 1)):
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))

def f(x, d=1):
    return "-" if x is None else f"{x:.{d}f}"

print(f"== ours (gptcuda, {ours['cpu']['threads']} threads, {ours['cpu']['gemm']}) vs PyTorch {torch['torch']} ({torch['threads']} threads), CPU")
print()
tg = {r["name"]: r for r in torch.get("gemm", [])}
rows = []
for r in ours.get("gemm", []):
    t = tg.get(r["name"])
    ratio = r["gflops"] / t["gflops"] if t else None
    rows.append([r["op"], r["layer"], f"{r['M']}x{r['K']}x{r['N']}", f(r["ms"], 2), f(t["ms"] if t else None, 2),
                 f(r["gflops"]), f(t["gflops"] if t else None), f(ratio, 2)])
if rows:
    print("GEMM (M x K x N; GFLOP/s, ratio = ours / PyTorch)")
    table(["op", "layer", "shape", "ours ms", "torch ms", "ours GFLOP/s", "torch GFLOP/s", "ratio"], rows)
    print()

if "train" in ours and "train" in torch:
    o, t = ours["train"], torch["train"]
    print(f"training: book's model ({o['parameters'] / 1e6:.1f}M parameters), batch {o['batch']} x {o['context']}, "
          "forward+backward+AdamW (ratio = ours / PyTorch; for ms and memory lower is better)")
    table(["metric", "ours", "PyTorch", "ratio"], [
        ["tokens/s", f(o["tokens_per_s"]), f(t["tokens_per_s"]), f(o["tokens_per_s"] / t["tokens_per_s"], 2)],
        ["ms/step", f(o["ms_per_step"]), f(t["ms_per_step"]), f(o["ms_per_step"] / t["ms_per_step"], 2)],
        ["peak RSS MB", f(o["max_rss_mb"]), f(t["max_rss_mb"]), f(o["max_rss_mb"] / t["max_rss_mb"], 2)],
        ["loss (sanity)", f(o["loss"], 3), f(t["loss"], 3), "-"],
    ], left=(0,))

if "generate" in ours and "generate" in torch:
    o, t = ours["generate"], torch["generate"]
    print()
    print(f"generation: GPT-2 124M config, random weights, fp32, greedy with the KV cache; ours vs Hugging Face transformers "
          f"{t['transformers']} on the same weights and prompts (decode tokens/s, ratio = ours / HF); "
          f"bound = bytes read per token at the measured {o['bandwidth_gbs']:.2f} GB/s")
    rows = []
    for key in ("cached", "batched"):
        a, b = o[key], t[key]
        rows.append([str(a["batch"]), f(a["decode_tokens_per_s"], 2), f(b["decode_tokens_per_s"], 2),
                     f(a["decode_tokens_per_s"] / b["decode_tokens_per_s"], 2), f(a["bound_tokens_per_s"], 1),
                     f"{100 * a['fraction_of_bound']:.0f}%", "yes" if b["ids_identical"] else f"no (first at {b['first_difference']})"])
    table(["batch", "ours tok/s", "HF tok/s", "ratio", "bound tok/s", "ours of bound", "greedy ids identical"], rows, left=(0,))
    print(f"ours batch {o['batched']['batch']} / batch 1: {o['batch_speedup']:.2f}x")
    if "bf16" in o:
        h = o["bf16"]
        print()
        print("generation with bf16 weights (ours; the same weights rounded; ratio = bf16 / our fp32 in this run)")
        table(["batch", "bf16 tok/s", "fp32 tok/s", "ratio", "bound tok/s", "of bound"], [
            [str(h[k]["batch"]), f(h[k]["decode_tokens_per_s"], 2), f(o[k]["decode_tokens_per_s"], 2),
             f(h[k]["decode_tokens_per_s"] / o[k]["decode_tokens_per_s"], 2), f(h[k]["bound_tokens_per_s"], 1),
             f"{100 * h[k]['fraction_of_bound']:.0f}%"] for k in ("cached", "batched")], left=(0,))
        print(f"bf16 greedy tokens equal to fp32's at batch 1: {100 * h['ids_agreement']:.0f}%")
EOF
echo
echo "tokenization: ours vs tiktoken, same text and run (node scripts/bench-tokenizer.mjs --mb 8 --runs 3)"
cat "$tmp/tokenizer.txt"
