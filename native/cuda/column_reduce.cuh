// Deterministic column sums over a row-major [N, C] matrix, used for bias and
// LayerNorm parameter gradients: no float atomics, a fixed summation order.
//   pass 1: block (x: 32 columns, y: a chunk of kColRows rows) sums its chunk
//           with 8 row lanes, then adds the 8 lane sums in order -> partial[chunk, c]
//   pass 2: one thread per column adds the chunk partials in chunk order into dst.
// The chunking depends only on N, so results do not depend on the GPU model.
// S is the storage type of the matrices and of dst; sums are float32 and the
// destination is rounded to S once per column.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "bf16.h"

namespace gptcuda {
namespace cudak {

constexpr int kColRows = 256;  // rows per pass-1 block
constexpr int kColLanes = 8;   // row lanes (blockDim.y) per pass-1 block

inline int column_chunks(int N) { return (N + kColRows - 1) / kColRows; }

// Kernels have internal linkage: each translation unit that includes this
// header gets its own copy (no relocatable device code).
namespace {

// kLayerNorm = false: part_a[chunk, c] = sum_r dout[r, c].
// kLayerNorm = true:  part_a[chunk, c] = sum_r dout[r, c] * (inp[r, c] - mean[r]) * rstd[r]
//                     part_b[chunk, c] = sum_r dout[r, c].
template <bool kLayerNorm, class S>
__global__ void column_partials_kernel(float* part_a, float* part_b, const S* dout, const S* inp,
                                       const float* mean, const float* rstd, int N, int C) {
  __shared__ float sa[kColLanes][33];
  __shared__ float sb[kColLanes][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  const int r0 = blockIdx.y * kColRows;
  const int r1 = min(N, r0 + kColRows);
  float a = 0.f, b = 0.f;
  if (c < C) {
    for (int r = r0 + ty; r < r1; r += kColLanes) {
      const float g = to_float(dout[static_cast<size_t>(r) * C + c]);
      if (kLayerNorm) {
        const float norm = (to_float(inp[static_cast<size_t>(r) * C + c]) - mean[r]) * rstd[r];
        a += g * norm;
        b += g;
      } else {
        a += g;
      }
    }
  }
  sa[ty][tx] = a;
  sb[ty][tx] = b;
  __syncthreads();
  if (ty == 0 && c < C) {
    float ta = 0.f, tb = 0.f;
#pragma unroll
    for (int k = 0; k < kColLanes; ++k) {
      ta += sa[k][tx];
      tb += sb[k][tx];
    }
    part_a[static_cast<size_t>(blockIdx.y) * C + c] = ta;
    if (kLayerNorm) part_b[static_cast<size_t>(blockIdx.y) * C + c] = tb;
  }
}

// dst_a[c] += sum_k part_a[k, c] (= when !accumulate); same for b when dst_b is given.
template <class S>
__global__ void column_finish_kernel(S* dst_a, S* dst_b, const float* part_a, const float* part_b,
                                     int chunks, int C, bool accumulate) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  if (dst_a) {
    float a = 0.f;
    for (int k = 0; k < chunks; ++k) a += part_a[static_cast<size_t>(k) * C + c];
    dst_a[c] = from_float<S>(accumulate ? to_float(dst_a[c]) + a : a);
  }
  if (dst_b) {
    float b = 0.f;
    for (int k = 0; k < chunks; ++k) b += part_b[static_cast<size_t>(k) * C + c];
    dst_b[c] = from_float<S>(accumulate ? to_float(dst_b[c]) + b : b);
  }
}

}  // namespace
}  // namespace cudak
}  // namespace gptcuda
