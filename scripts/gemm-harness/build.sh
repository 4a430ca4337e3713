#!/bin/sh
# Builds the standalone GEMM harness (not part of the addon build) into ./build:
#   build/test_gemm   correctness of sgemm_blocked against a double reference
#   build/bench_gemm  GFLOP/s of sgemm_blocked vs OpenBLAS cblas_sgemm
# Flags match the addon's CPU build; PORTABLE=1 drops -march=native (the addon's
# GPTCUDA_PORTABLE=1 build). Usage: scripts/gemm-harness/build.sh && build/test_gemm
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cpu="$here/../../native/cpu"
out="$here/build"
mkdir -p "$out"

flags="-std=c++17 -O3 -fno-math-errno -Wall -Wextra"
if [ "${PORTABLE:-0}" != "1" ]; then flags="$flags -march=native"; fi
cxx=${CXX:-g++}
srcs="$cpu/gemm_blocked.cc $cpu/parallel.cc"

$cxx $flags -I"$cpu" "$here/test_gemm.cc" $srcs -pthread -o "$out/test_gemm"
echo "built $out/test_gemm"

# The benchmark needs OpenBLAS's cblas.h (Debian: libopenblas-dev).
cblas_dir=""
for d in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread \
         /usr/include/openblas /usr/include; do
  if [ -f "$d/cblas.h" ]; then cblas_dir=$d; break; fi
done
if [ -n "$cblas_dir" ]; then
  $cxx $flags -I"$cpu" -I"$cblas_dir" "$here/bench_gemm.cc" $srcs -lopenblas -pthread \
    -o "$out/bench_gemm"
  echo "built $out/bench_gemm"
else
  echo "cblas.h not found: skipping bench_gemm (install libopenblas-dev)"
fi
