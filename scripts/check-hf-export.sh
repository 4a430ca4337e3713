#!/usr/bin/env bash
# End-to-end check of `gptcuda export --format hf` against Hugging Face
# transformers: for each of two tiny model shapes (without and with a Q/K/V
# bias), train a few steps with our CLI, export the checkpoint, dump our
# logits for fixed token ids (GPTModel.load + forward + logits()), and have
# scripts/check-hf-export.py compare them with GPT2LMHeadModel's.
#
# The runs use a high learning rate (3e-2 for 10 steps) so that the weights
# move well away from their small initial values: with freshly initialised
# weights the activations are so small that even the wrong GELU variant
# changes the logits by less than the tolerance. A sensitivity check then
# confirms that exactly such a mismatch (config.json saying "gelu" instead of
# "gelu_new") is caught.
#
# Usage: scripts/check-hf-export.sh [work-dir]
#   work-dir  where runs, exports and logits go (default: a temporary
#             directory, removed afterwards)
# Environment: PYTHON (default python3) with torch, transformers and
#   safetensors installed (pip install torch transformers safetensors).
# Exit status: non-zero if any check fails (max |difference| > 1e-4).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [[ $# -ge 1 ]]; then
  WORK="$1"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/gptcuda-hf-check.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi
WORK="$(cd "$WORK" && pwd)"

cd "$ROOT"
if [[ ! -f dist/cli/main.js ]]; then
  echo "building dist/ (npx tsc -p tsconfig.json)" >&2
  npx tsc -p tsconfig.json
fi
if ! "$PYTHON" -c 'import torch, transformers, safetensors' 2>/dev/null; then
  echo "error: $PYTHON cannot import torch, transformers and safetensors (pip install torch transformers safetensors)" >&2
  exit 2
fi

GPTCUDA=(node "$ROOT/dist/cli/main.js")
TINY=(--n-layers 2 --emb-dim 32 --n-heads 4 --context-length 32 --batch-size 2 --drop-rate 0.1 --device cpu)

# Our logits for fixed ids: one full-context sequence (every position
# embedding row), including token 0 and <|endoftext|> (50256).
dump_logits() { # checkpoint out.json
  GPTCUDA_ROOT="$ROOT" node --input-type=module - "$1" "$2" <<'EOF'
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const { GPTModel, textToTokenIds } = await import(pathToFileURL(`${process.env.GPTCUDA_ROOT}/dist/index.js`).href);
const [ckpt, out] = process.argv.slice(2);
const model = await GPTModel.load(ckpt, { device: 'cpu' });
const T = model.config.contextLength, V = model.config.vocabSize;
let ids = textToTokenIds('Every effort moves you, as Gisburn said of the sketch of a donkey. ');
while (ids.length < T) ids = ids.concat(ids);
ids = ids.slice(0, T);
ids[T - 2] = 0;
ids[T - 1] = 50256;
model.forward(Int32Array.from(ids), 1, T);
const flat = model.logits().toFloat32Array();
const logits = [];
for (let t = 0; t < T; t++) logits.push(Array.from(flat.subarray(t * V, (t + 1) * V)));
writeFileSync(out, JSON.stringify({ ids, logits }));
model.dispose();
EOF
}

status=0
for variant in no-qkv-bias qkv-bias; do
  extra=()
  [[ "$variant" == qkv-bias ]] && extra=(--qkv-bias)
  dir="$WORK/$variant"
  rm -rf "$dir"
  echo "== $variant: train 10 steps, export, compare"
  "${GPTCUDA[@]}" train "${TINY[@]}" ${extra[@]+"${extra[@]}"} --max-steps 10 --lr 3e-2 --eval-freq 100 --out "$dir/run" --json > "$dir.train.jsonl"
  ckpt="$(ls "$dir"/run/ckpt-step*.tar | tail -n 1)"
  "${GPTCUDA[@]}" export --weights "$ckpt" --format hf --out "$dir/hf"
  dump_logits "$ckpt" "$dir/ours.json"
  if ! "$PYTHON" "$ROOT/scripts/check-hf-export.py" "$dir/hf" "$dir/ours.json"; then status=1; fi
done

echo "== sensitivity: the same export with the exact GELU (\"gelu\") in config.json must FAIL"
bad="$WORK/no-qkv-bias/hf-wrong-gelu"
rm -rf "$bad"
cp -r "$WORK/no-qkv-bias/hf" "$bad"
sed -i.orig 's/"gelu_new"/"gelu"/' "$bad/config.json" && rm -f "$bad/config.json.orig"
grep -q '"activation_function": "gelu"' "$bad/config.json"
if "$PYTHON" "$ROOT/scripts/check-hf-export.py" "$bad" "$WORK/no-qkv-bias/ours.json"; then
  echo "error: the check did not notice a GELU-variant mismatch; it is not sensitive enough" >&2
  status=1
else
  echo "(failed as it should: the comparison is sensitive enough)"
fi
[[ $status -eq 0 ]] && echo "HF export check: OK" || echo "HF export check: FAILED" >&2
exit $status
