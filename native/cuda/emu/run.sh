#!/usr/bin/env bash
# Checks the CUDA kernels without a GPU: extracts the kernel sections of the
# .cu files (between the emu:kernels-begin and emu:kernels-end markers),
# compiles them as C++ against the SIMT emulator in emu.h, and runs them
# against float64 references (attention forward/backward in both the CUDA-core
# and the TF32 tensor-core variants, decode, cross-entropy, LayerNorm, column
# reductions, embedding, optimizer, GELU, dropout, elementwise), plus the
# row-major -> cuBLAS column-major argument mapping.
# Usage: native/cuda/emu/run.sh [work-dir]     (needs g++ with C++20, python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cuda=$(dirname "$here")
inc=$(dirname "$cuda")/include
out=${1:-$(mktemp -d)}
mkdir -p "$out"

python3 "$here/extract.py" "$cuda/attention_common.cuh,$cuda/attention.cu,$cuda/attention_cuda_core.cu,$cuda/attention_tensor_core.cu,$cuda/attention_decode.cu" "$out/attention_k.h"
for f in crossentropy layernorm embedding adamw gelu dropout elementwise; do
  python3 "$here/extract.py" "$cuda/$f.cu" "$out/${f}_k.h" "k_$f"
done

build() { g++ -std=c++20 -O1 -pthread -U_FORTIFY_SOURCE -I"$out" -I"$here/shim" -I"$here" -I"$cuda" -I"$inc" "$here/$1.cc" -o "$out/$1"; }
build test_gemm_mapping
build test_attention
build test_ops
"$out/test_gemm_mapping"
"$out/test_attention"
"$out/test_ops"
