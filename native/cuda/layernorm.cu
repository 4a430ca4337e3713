// LayerNorm over the last dimension (eps 1e-5, biased variance).
//
// Forward: one warp per row. Pass 1 sums the row (mean), pass 2 sums squared
// deviations (variance; two passes are more accurate than E[x^2] - mean^2, and
// the re-read hits L1), pass 3 writes the output. The fused residual forward
// computes a + b in pass 1 and stores it, then the same passes 2 and 3. 16-byte packs (4 floats or
// 8 bf16) when C is a multiple of the pack and the buffers are aligned; bf16
// values are widened and every sum is float.
//
// Backward: dinp with one warp per row (the row's two reductions, then the
// write); dweight/dbias with the deterministic two-pass column reduction of
// column_reduce.cuh (no float atomics across rows).
#include "backend_cuda.cuh"
#include "column_reduce.cuh"

namespace gptcuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr float kEps = 1e-5f;

// The sum of one row's elements as lane `lane` of its warp reads them, before
// the warp's reduction; the fused kernel below accumulates in the same order.
template <class S>
__device__ __forceinline__ float row_part_sum(const S* x, int C, bool vec, int lane) {
  using cudak::Pack;
  constexpr int W = Pack<S>::kWidth;
  float sum = 0.f;
  if (vec) {
    for (int c = lane * W; c < C; c += 32 * W) {
      const Pack<S> v = cudak::load_pack(x + c);
      float part = 0.f;
#pragma unroll
      for (int j = 0; j < W; j += 2) part += v.get(j) + v.get(j + 1);
      sum += part;
    }
  } else {
    for (int c = lane; c < C; c += 32) sum += to_float(x[c]);
  }
  return sum;
}

// Given the row's mean m: the variance pass, the output pass and the saved
// statistics. Each lane reads only the elements it summed (the fused kernel
// relies on that: they are the ones it wrote itself).
template <class S>
__device__ __forceinline__ void normalize_row(S* y, float* mean, float* rstd, const S* x,
                                              const S* weight, const S* bias, int row, int C,
                                              bool vec, int lane, float m) {
  using cudak::Pack;
  constexpr int W = Pack<S>::kWidth;
  float sq = 0.f;
  if (vec) {
    for (int c = lane * W; c < C; c += 32 * W) {
      const Pack<S> v = cudak::load_pack(x + c);
      float part = 0.f;
#pragma unroll
      for (int j = 0; j < W; j += 2) {
        const float a = v.get(j) - m, b = v.get(j + 1) - m;
        part += a * a + b * b;
      }
      sq += part;
    }
  } else {
    for (int c = lane; c < C; c += 32) {
      const float d = to_float(x[c]) - m;
      sq += d * d;
    }
  }
  const float s = rsqrtf(cudak::warp_sum(sq) / C + kEps);

  if (vec) {
    for (int c = lane * W; c < C; c += 32 * W) {
      const Pack<S> v = cudak::load_pack(x + c);
      Pack<S> w, b, o;
      if (weight) w = cudak::load_pack(weight + c);
      if (bias) b = cudak::load_pack(bias + c);
#pragma unroll
      for (int j = 0; j < W; ++j)
        o.set(j, (v.get(j) - m) * s * (weight ? w.get(j) : 1.f) + (bias ? b.get(j) : 0.f));
      cudak::store_pack(y + c, o);
    }
  } else {
    for (int c = lane; c < C; c += 32) {
      const float w = weight ? to_float(weight[c]) : 1.f;
      const float b = bias ? to_float(bias[c]) : 0.f;
      y[c] = from_float<S>((to_float(x[c]) - m) * s * w + b);
    }
  }
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = s;
  }
}

// S: the storage type of out, inp, weight and bias; statistics are float.
template <class S>
__global__ void layernorm_forward_kernel(S* out, float* mean, float* rstd, const S* inp,
                                         const S* weight, const S* bias, int N, int C, bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;  // whole warp leaves together
  const S* x = inp + static_cast<size_t>(row) * C;
  const float m = cudak::warp_sum(row_part_sum(x, C, vec, lane)) / C;
  normalize_row(out + static_cast<size_t>(row) * C, mean, rstd, x, weight, bias, row, C, vec, lane,
                m);
}

// Pass 1 writes the residual and sums it as stored (rounded to S) in
// row_part_sum's order; the later passes re-read the lane's own writes, which
// are still in cache. a and b are read once.
template <class S>
__global__ void residual_layernorm_forward_kernel(S* res, S* out, float* mean, float* rstd,
                                                  const S* a, const S* b, const S* weight,
                                                  const S* bias, int N, int C, bool vec) {
  using cudak::Pack;
  constexpr int W = Pack<S>::kWidth;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const size_t off = static_cast<size_t>(row) * C;
  S* r = res + off;
  const S* x = a + off;
  const S* y = b + off;
  float sum = 0.f;
  if (vec) {
    for (int c = lane * W; c < C; c += 32 * W) {
      const Pack<S> u = cudak::load_pack(x + c), v = cudak::load_pack(y + c);
      Pack<S> o;
#pragma unroll
      for (int j = 0; j < W; ++j) o.set(j, u.get(j) + v.get(j));
      cudak::store_pack(r + c, o);
      float part = 0.f;
#pragma unroll
      for (int j = 0; j < W; j += 2) part += o.get(j) + o.get(j + 1);
      sum += part;
    }
  } else {
    for (int c = lane; c < C; c += 32) {
      const S o = from_float<S>(to_float(x[c]) + to_float(y[c]));
      r[c] = o;
      sum += to_float(o);
    }
  }
  const float m = cudak::warp_sum(sum) / C;
  normalize_row(out + off, mean, rstd, r, weight, bias, row, C, vec, lane, m);
}

// dinp[row] += (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) * rstd, with
// norm = (x - mean) * rstd and dnorm = dout * weight.
template <class S>
__global__ void layernorm_backward_dinp_kernel(S* dinp, const S* dout, const S* inp,
                                               const S* weight, const float* mean,
                                               const float* rstd, int N, int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const size_t off = static_cast<size_t>(row) * C;
  const S* x = inp + off;
  const S* g = dout + off;
  S* dx = dinp + off;
  const float m = mean[row], s = rstd[row];

  float sum_dnorm = 0.f, sum_dnorm_norm = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float norm = (to_float(x[c]) - m) * s;
    const float dnorm = to_float(g[c]) * (weight ? to_float(weight[c]) : 1.f);
    sum_dnorm += dnorm;
    sum_dnorm_norm += dnorm * norm;
  }
  const float mean_dnorm = cudak::warp_sum(sum_dnorm) / C;
  const float mean_dnorm_norm = cudak::warp_sum(sum_dnorm_norm) / C;

  for (int c = lane; c < C; c += 32) {
    const float norm = (to_float(x[c]) - m) * s;
    const float dnorm = to_float(g[c]) * (weight ? to_float(weight[c]) : 1.f);
    dx[c] = from_float<S>(to_float(dx[c]) + (dnorm - mean_dnorm - norm * mean_dnorm_norm) * s);
  }
}

}  // namespace

template <class S>
void CudaBackend::layernorm_forward_impl(S* out, float* mean, float* rstd, const S* inp,
                                         const S* weight, const S* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  begin_op("layernorm_forward");
  const bool vec = C % cudak::Pack<S>::kWidth == 0 && cudak::aligned16(out) &&
                   cudak::aligned16(inp) && (!weight || cudak::aligned16(weight)) &&
                   (!bias || cudak::aligned16(bias));
  const unsigned grid = cudak::ceil_div(N, kWarpsPerBlock);
  layernorm_forward_kernel<S><<<grid, kWarpsPerBlock * 32, 0, stream_>>>(out, mean, rstd, inp,
                                                                         weight, bias, N, C, vec);
  cudak::check_launch("layernorm_forward");
}
void CudaBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                    const float* weight, const float* bias, int N, int C) {
  layernorm_forward_impl(out, mean, rstd, inp, weight, bias, N, C);
}
void CudaBackend::layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp,
                                    const bf16* weight, const bf16* bias, int N, int C) {
  layernorm_forward_impl(out, mean, rstd, inp, weight, bias, N, C);
}

template <class S>
void CudaBackend::residual_layernorm_forward_impl(S* residual_out, S* ln_out, float* mean,
                                                  float* rstd, const S* a, const S* b,
                                                  const S* weight, const S* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  begin_op("residual_layernorm_forward");
  const bool vec = C % cudak::Pack<S>::kWidth == 0 && cudak::aligned16(residual_out) &&
                   cudak::aligned16(ln_out) && cudak::aligned16(a) && cudak::aligned16(b) &&
                   (!weight || cudak::aligned16(weight)) && (!bias || cudak::aligned16(bias));
  const unsigned grid = cudak::ceil_div(N, kWarpsPerBlock);
  residual_layernorm_forward_kernel<S><<<grid, kWarpsPerBlock * 32, 0, stream_>>>(
      residual_out, ln_out, mean, rstd, a, b, weight, bias, N, C, vec);
  cudak::check_launch("residual_layernorm_forward");
}
void CudaBackend::residual_layernorm_forward(float* residual_out, float* ln_out, float* mean,
                                             float* rstd, const float* a, const float* b,
                                             const float* weight, const float* bias, int N,
                                             int C) {
  residual_layernorm_forward_impl(residual_out, ln_out, mean, rstd, a, b, weight, bias, N, C);
}
void CudaBackend::residual_layernorm_forward(bf16* residual_out, bf16* ln_out, float* mean,
                                             float* rstd, const bf16* a, const bf16* b,
                                             const bf16* weight, const bf16* bias, int N, int C) {
  residual_layernorm_forward_impl(residual_out, ln_out, mean, rstd, a, b, weight, bias, N, C);
}

template <class S>
void CudaBackend::layernorm_backward_impl(S* dinp, S* dweight, S* dbias, const S* dout,
                                          const S* inp, const S* weight, const float* mean,
                                          const float* rstd, int N, int C) {
  if (N == 0 || C == 0) return;
  const char* op = "layernorm_backward";
  begin_op(op);
  if (dinp) {
    const unsigned grid = cudak::ceil_div(N, kWarpsPerBlock);
    layernorm_backward_dinp_kernel<S><<<grid, kWarpsPerBlock * 32, 0, stream_>>>(
        dinp, dout, inp, weight, mean, rstd, N, C);
    cudak::check_launch(op);
  }
  if (dweight || dbias) {
    const int chunks = cudak::column_chunks(N);
    float* part = static_cast<float*>(
        scratch(kScratchReduce, static_cast<size_t>(chunks) * C * 2 * sizeof(float)));
    float* part_a = part;
    float* part_b = part + static_cast<size_t>(chunks) * C;
    dim3 grid1(cudak::ceil_div(C, 32), chunks);
    dim3 block1(32, cudak::kColLanes);
    cudak::column_partials_kernel<true, S><<<grid1, block1, 0, stream_>>>(part_a, part_b, dout, inp,
                                                                          mean, rstd, N, C);
    cudak::check_launch(op);
    // dweight and dbias: float32 sums over the rows, rounded to S once
    cudak::column_finish_kernel<S><<<cudak::ceil_div(C, 256), 256, 0, stream_>>>(
        dweight, dbias, part_a, part_b, chunks, C, /*accumulate=*/true);
    cudak::check_launch(op);
  }
}
void CudaBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                     const float* inp, const float* weight, const float* mean,
                                     const float* rstd, int N, int C) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void CudaBackend::layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout,
                                     const bf16* inp, const bf16* weight, const float* mean,
                                     const float* rstd, int N, int C) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}

}  // namespace gptcuda
