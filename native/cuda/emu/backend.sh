#!/usr/bin/env bash
# Builds the emulated CUDA backend: the real native/cuda sources, translated to
# C++ (translate.py) and compiled against the SIMT emulator (simt.h) and a fake
# CUDA toolkit (shim/ + runtime.cc), as a gptcuda_cuda.so the addon can load
# instead of the real one:
#   GPTCUDA_CUDA_LIBRARY=build/emu/gptcuda_cuda.so npx vitest run test/op-table.test.ts
# The library also holds an NCCL over MPI (nccl.cc), which collectives.cu finds
# in it before looking for libnccl.
# Usage: native/cuda/emu/backend.sh [out-dir]     (default build/emu; needs g++, python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cuda=$(dirname "$here")
root=$(dirname "$(dirname "$cuda")")
out=${1:-$root/build/emu}
mkdir -p "$out/src"
flags=(-std=c++20 -O2 -g0 -fPIC -pthread -U_FORTIFY_SOURCE -Wno-unknown-pragmas -Wno-unused-result
       -include "$here/simt.h" -I"$here/shim" -I"$here" -I"$cuda" -I"$root/native/include")
# Headers are translated too (a launch helper may live in one), next to the
# translated sources, where #include "..." finds them before the originals.
for cuh in "$cuda"/*.cuh; do python3 "$here/translate.py" "$cuh" "$out/src/$(basename "$cuh")"; done
objs=()
pids=()
for cu in "$cuda"/*.cu "$here/runtime.cc" "$here/nccl.cc"; do
  base=$(basename "$cu"); base=${base%.*}
  if [[ $cu == *.cu ]]; then
    python3 "$here/translate.py" "$cu" "$out/src/$base.cc"
    src="$out/src/$base.cc"
  else
    src=$cu
  fi
  obj="$out/src/$base.o"
  objs+=("$obj")
  # Rebuild only what changed (the translated file is rewritten every time).
  if [ ! -f "$obj" ] || [ -n "$(find "$cu" "$here/simt.h" "$here/shim" "$cuda"/*.cuh "$root/native/include" "$0" -newer "$obj" -print -quit)" ]; then
    g++ "${flags[@]}" -c "$src" -o "$obj" &
    pids+=($!)
  fi
  if [ ${#pids[@]} -ge "${GPTCUDA_EMU_JOBS:-2}" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
g++ -shared -pthread -o "$out/gptcuda_cuda.so" "${objs[@]}"
echo "emulated CUDA backend: $out/gptcuda_cuda.so"
