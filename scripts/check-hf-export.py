#!/usr/bin/env python3
"""Check a `gptcuda export --format hf` directory against gptcuda's own logits.

Usage:
    python3 scripts/check-hf-export.py EXPORT_DIR LOGITS_JSON [--tol 1e-4]

EXPORT_DIR   what `gptcuda export --weights <ckpt> --format hf --out EXPORT_DIR`
             wrote (model.safetensors + config.json).
LOGITS_JSON  {"ids": [...], "logits": [...]} from gptcuda for the same
             weights: ids is one sequence [T] or a batch [B][T]; logits is
             [T][V] or [B][T][V] (GPTModel.forward(ids) then model.logits()).
             scripts/check-hf-export.sh writes one.

Loads EXPORT_DIR with Hugging Face transformers' GPT2LMHeadModel.from_pretrained
(torch, CPU, float32), runs the same ids, and prints the largest absolute
difference between the two sets of logits. Exit status: 0 when it is within
--tol (default 1e-4), 1 when it is not, 2 when the export does not load
cleanly (missing, unexpected or mismatched tensors: transformers would have
filled them with random values).
"""
import argparse
import json
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("logits_json")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest allowed |difference| (default 1e-4)")
    args = ap.parse_args()

    # Quiet: no progress bars or advisory logging around the one result line.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers
    from transformers import GPT2LMHeadModel

    transformers.utils.logging.disable_progress_bar()

    with open(args.logits_json) as f:
        ref = json.load(f)
    ids = torch.tensor(ref["ids"], dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    expected = torch.tensor(ref["logits"], dtype=torch.float32)
    if expected.dim() == 2:
        expected = expected.unsqueeze(0)
    B, T = ids.shape
    if expected.shape[:2] != (B, T):
        print(f"error: {args.logits_json}: logits have shape {tuple(expected.shape)}, ids {tuple(ids.shape)}", file=sys.stderr)
        return 2

    model, info = GPT2LMHeadModel.from_pretrained(
        args.export_dir, output_loading_info=True, attn_implementation="eager"
    )
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        print(f"error: {args.export_dir} does not load cleanly into GPT2LMHeadModel: {problems}", file=sys.stderr)
        return 2
    model = model.float().eval()
    if model.config.vocab_size != expected.shape[2]:
        print(f"error: vocab size {model.config.vocab_size} in config.json, {expected.shape[2]} in the logits", file=sys.stderr)
        return 2

    with torch.no_grad():
        got = model(ids).logits.float()
    diff = (got - expected).abs()
    max_diff = diff.max().item()
    where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    same_argmax = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
    ok = max_diff <= args.tol
    print(
        f"transformers {transformers.__version__}, torch {torch.__version__}: "
        f"GPT2LMHeadModel.from_pretrained({args.export_dir}) "
        f"(n_layer {model.config.n_layer}, n_embd {model.config.n_embd}, n_head {model.config.n_head}, "
        f"n_positions {model.config.n_positions}, vocab {model.config.vocab_size}, "
        f"tie_word_embeddings {model.config.tie_word_embeddings})"
    )
    print(
        f"max |logits difference| = {max_diff:.3e} over {B}x{T}x{expected.shape[2]} logits "
        f"(at {where}; |logits| up to {expected.abs().max().item():.3f}); "
        f"greedy next-token agreement {same_argmax * 100:.1f}%; tolerance {args.tol:g}: {'OK' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
