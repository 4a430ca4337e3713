// LayerNorm over the last dimension (eps 1e-5, biased variance).
//
// Forward: one warp per row. Pass 1 sums the row (mean), pass 2 sums squared
// deviations (variance; two passes are more accurate than E[x^2] - mean^2, and
// the re-read hits L1), pass 3 writes the output. float4 when C % 4 == 0 and
// the buffers are aligned.
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

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int N, int C,
                                         bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;  // whole warp leaves together
  const float* x = inp + static_cast<size_t>(row) * C;
  float* y = out + static_cast<size_t>(row) * C;

  float sum = 0.f;
  if (vec) {
    for (int c = lane * 4; c < C; c += 128) {
      const float4 v = *reinterpret_cast<const float4*>(x + c);
      sum += (v.x + v.y) + (v.z + v.w);
    }
  } else {
    for (int c = lane; c < C; c += 32) sum += x[c];
  }
  const float m = cudak::warp_sum(sum) / C;

  float sq = 0.f;
  if (vec) {
    for (int c = lane * 4; c < C; c += 128) {
      const float4 v = *reinterpret_cast<const float4*>(x + c);
      const float a = v.x - m, b = v.y - m, d = v.z - m, e = v.w - m;
      sq += (a * a + b * b) + (d * d + e * e);
    }
  } else {
    for (int c = lane; c < C; c += 32) {
      const float d = x[c] - m;
      sq += d * d;
    }
  }
  const float s = rsqrtf(cudak::warp_sum(sq) / C + kEps);

  if (vec) {
    for (int c = lane * 4; c < C; c += 128) {
      const float4 v = *reinterpret_cast<const float4*>(x + c);
      const float4 w = weight ? *reinterpret_cast<const float4*>(weight + c) : make_float4(1.f, 1.f, 1.f, 1.f);
      const float4 b = bias ? *reinterpret_cast<const float4*>(bias + c) : make_float4(0.f, 0.f, 0.f, 0.f);
      float4 o;
      o.x = (v.x - m) * s * w.x + b.x;
      o.y = (v.y - m) * s * w.y + b.y;
      o.z = (v.z - m) * s * w.z + b.z;
      o.w = (v.w - m) * s * w.w + b.w;
      *reinterpret_cast<float4*>(y + c) = o;
    }
  } else {
    for (int c = lane; c < C; c += 32) {
      const float w = weight ? weight[c] : 1.f;
      const float b = bias ? bias[c] : 0.f;
      y[c] = (x[c] - m) * s * w + b;
    }
  }
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = s;
  }
}

// dinp[row] += (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) * rstd, with
// norm = (x - mean) * rstd and dnorm = dout * weight.
__global__ void layernorm_backward_dinp_kernel(float* dinp, const float* dout, const float* inp,
                                               const float* weight, const float* mean,
                                               const float* rstd, int N, int C) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const size_t off = static_cast<size_t>(row) * C;
  const float* x = inp + off;
  const float* g = dout + off;
  float* dx = dinp + off;
  const float m = mean[row], s = rstd[row];

  float sum_dnorm = 0.f, sum_dnorm_norm = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float norm = (x[c] - m) * s;
    const float dnorm = g[c] * (weight ? weight[c] : 1.f);
    sum_dnorm += dnorm;
    sum_dnorm_norm += dnorm * norm;
  }
  const float mean_dnorm = cudak::warp_sum(sum_dnorm) / C;
  const float mean_dnorm_norm = cudak::warp_sum(sum_dnorm_norm) / C;

  for (int c = lane; c < C; c += 32) {
    const float norm = (x[c] - m) * s;
    const float dnorm = g[c] * (weight ? weight[c] : 1.f);
    dx[c] += (dnorm - mean_dnorm - norm * mean_dnorm_norm) * s;
  }
}

}  // namespace

void CudaBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                    const float* weight, const float* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  begin_op("layernorm_forward");
  const bool vec = C % 4 == 0 && cudak::aligned16(out) && cudak::aligned16(inp) &&
                   (!weight || cudak::aligned16(weight)) && (!bias || cudak::aligned16(bias));
  const unsigned grid = cudak::ceil_div(N, kWarpsPerBlock);
  layernorm_forward_kernel<<<grid, kWarpsPerBlock * 32, 0, stream_>>>(out, mean, rstd, inp, weight,
                                                                      bias, N, C, vec);
  cudak::check_launch("layernorm_forward");
}

void CudaBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                     const float* inp, const float* weight, const float* mean,
                                     const float* rstd, int N, int C) {
  if (N == 0 || C == 0) return;
  const char* op = "layernorm_backward";
  begin_op(op);
  if (dinp) {
    const unsigned grid = cudak::ceil_div(N, kWarpsPerBlock);
    layernorm_backward_dinp_kernel<<<grid, kWarpsPerBlock * 32, 0, stream_>>>(
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
    cudak::column_partials_kernel<true><<<grid1, block1, 0, stream_>>>(part_a, part_b, dout, inp,
                                                                       mean, rstd, N, C);
    cudak::check_launch(op);
    cudak::column_finish_kernel<<<cudak::ceil_div(C, 256), 256, 0, stream_>>>(
        dweight, dbias, part_a, part_b, chunks, C);
    cudak::check_launch(op);
  }
}

}  // namespace gptcuda
