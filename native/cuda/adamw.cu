// Optimizer helpers: AdamW over a flat buffer, the deterministic sum of squares
// used for the gradient norm, and clipping that reads the norm on the device.
#include <algorithm>
#include <cmath>

#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {

constexpr int kBlock = 256;
constexpr int kMaxReduceBlocks = 1024;

struct AdamParams {
  float lr, beta1, beta2, eps, weight_decay;
  float inv_bc1, inv_bc2;  // 1 / (1 - beta^t), bias corrections
};

__device__ __forceinline__ void adamw_update(float& p, float g, float& m, float& v,
                                             const AdamParams& a) {
  m = a.beta1 * m + (1.f - a.beta1) * g;
  v = a.beta2 * v + (1.f - a.beta2) * g * g;
  const float m_hat = m * a.inv_bc1;
  const float v_hat = v * a.inv_bc2;
  p -= a.lr * (m_hat / (sqrtf(v_hat) + a.eps) + a.weight_decay * p);
}

// One launch over the whole flat buffer (grid-stride), float4 when aligned.
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, size_t n,
                             AdamParams a, bool vec) {
  cudak::grid_stride(
      n, vec,
      [&](size_t i) {
        float4 p = reinterpret_cast<float4*>(params)[i];
        const float4 g = reinterpret_cast<const float4*>(grads)[i];
        float4 mm = reinterpret_cast<float4*>(m)[i];
        float4 vv = reinterpret_cast<float4*>(v)[i];
        adamw_update(p.x, g.x, mm.x, vv.x, a);
        adamw_update(p.y, g.y, mm.y, vv.y, a);
        adamw_update(p.z, g.z, mm.z, vv.z, a);
        adamw_update(p.w, g.w, mm.w, vv.w, a);
        reinterpret_cast<float4*>(params)[i] = p;
        reinterpret_cast<float4*>(m)[i] = mm;
        reinterpret_cast<float4*>(v)[i] = vv;
      },
      [&](size_t i) {
        float p = params[i], mm = m[i], vv = v[i];
        adamw_update(p, grads[i], mm, vv, a);
        params[i] = p;
        m[i] = mm;
        v[i] = vv;
      });
}

// bf16 parameters: the fp32 master is updated as above, then the bf16 copy is
// written from it by stochastic rounding with philox_rounding_bits (philox.h),
// element i taking word j % 4 of block j / 4, j = offset + i — one Philox block
// per group of four, which is what the vectorised path draws (it runs only for
// offsets that are multiples of 4). grads and params are bf16.
using cudak::Bf16x4;

__global__ void adamw_bf16_kernel(float* master, const bf16* grads, float* m, float* v,
                                  bf16* params, size_t n, AdamParams a, uint64_t seed,
                                  uint64_t stream, uint64_t offset, bool vec) {
  cudak::grid_stride(
      n, vec,
      [&](size_t i) {
        float4 p = reinterpret_cast<float4*>(master)[i];
        const Bf16x4 g = reinterpret_cast<const Bf16x4*>(grads)[i];
        float4 mm = reinterpret_cast<float4*>(m)[i];
        float4 vv = reinterpret_cast<float4*>(v)[i];
        adamw_update(p.x, bf16_to_float(g.v[0]), mm.x, vv.x, a);
        adamw_update(p.y, bf16_to_float(g.v[1]), mm.y, vv.y, a);
        adamw_update(p.z, bf16_to_float(g.v[2]), mm.z, vv.z, a);
        adamw_update(p.w, bf16_to_float(g.v[3]), mm.w, vv.w, a);
        reinterpret_cast<float4*>(master)[i] = p;
        reinterpret_cast<float4*>(m)[i] = mm;
        reinterpret_cast<float4*>(v)[i] = vv;
        if (params) {
          const Philox4 r = philox4(seed, stream, offset / 4 + i);  // elements offset + 4i .. +3
          Bf16x4 out;
          out.v[0] = float_to_bf16_stochastic(p.x, r.w[0]);
          out.v[1] = float_to_bf16_stochastic(p.y, r.w[1]);
          out.v[2] = float_to_bf16_stochastic(p.z, r.w[2]);
          out.v[3] = float_to_bf16_stochastic(p.w, r.w[3]);
          reinterpret_cast<Bf16x4*>(params)[i] = out;
        }
      },
      [&](size_t i) {
        float p = master[i], mm = m[i], vv = v[i];
        adamw_update(p, bf16_to_float(grads[i]), mm, vv, a);
        master[i] = p;
        m[i] = mm;
        v[i] = vv;
        if (params) params[i] = float_to_bf16_stochastic(p, philox_rounding_bits(seed, stream, offset + i));
      });
}

// Pass 1 of sum_squares: block b writes the sum of squares of its grid-stride
// share to partial[b]. The grid size depends only on n, so the summation
// order (and the result) is the same on every run and every GPU.
template <class S>
__global__ void sum_squares_partial_kernel(float* partial, const S* x, size_t n, bool vec) {
  using cudak::Pack;
  __shared__ float shared[32];
  float acc = 0.f;
  cudak::grid_stride_packed<S>(
      n, vec,
      [&](size_t i) {
        const Pack<S> v = cudak::load_pack(x + i * Pack<S>::kWidth);
        float part = 0.f;
#pragma unroll
        for (int j = 0; j < Pack<S>::kWidth; j += 2) part += v.get(j) * v.get(j) + v.get(j + 1) * v.get(j + 1);
        acc += part;
      },
      [&](size_t i) {
        const float xi = to_float(x[i]);
        acc += xi * xi;
      });
  acc = cudak::block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Pass 2: out[0] = sum of the partials, in a fixed order (one block).
__global__ void sum_partials_kernel(float* out, const float* partial, int count) {
  __shared__ float shared[32];
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = cudak::block_sum(acc, shared);
  if (threadIdx.x == 0) out[0] = acc;
}

// x *= min(1, max_norm / (sqrt(norm_sq[0]) + 1e-6)); the norm never leaves the GPU.
template <class S>
__global__ void clip_by_norm_kernel(S* x, size_t n, const float* norm_sq, float max_norm) {
  const float s = max_norm / (sqrtf(norm_sq[0]) + 1e-6f);
  if (!(s < 1.f)) return;  // nothing to clip (uniform across the grid)
  cudak::grid_stride(n, [&](size_t i) { x[i] = from_float<S>(to_float(x[i]) * s); });
}

AdamParams adam_params(float lr, float beta1, float beta2, float eps, float weight_decay, int t) {
  AdamParams a;
  a.lr = lr;
  a.beta1 = beta1;
  a.beta2 = beta2;
  a.eps = eps;
  a.weight_decay = weight_decay;
  a.inv_bc1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(beta1), t)));
  a.inv_bc2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(beta2), t)));
  return a;
}

}  // namespace

void CudaBackend::adamw(float* master, const float* grads, float* m, float* v, float* params, size_t n,
                        float lr, float beta1, float beta2, float eps, float weight_decay, int t,
                        DropoutRng /*rounding: float needs none*/, uint64_t /*rounding_offset*/) {
  const AdamParams a = adam_params(lr, beta1, beta2, eps, weight_decay, t);
  const bool vec = cudak::aligned16(master) && cudak::aligned16(grads) && cudak::aligned16(m) &&
                   cudak::aligned16(v);
  launch_grid_stride("adamw", n, vec, adamw_kernel, master, grads, m, v, n, a, vec);
  if (params && params != master) copy(params, master, n * sizeof(float));
}

void CudaBackend::adamw(float* master, const bf16* grads, float* m, float* v, bf16* params,
                        size_t n, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int t, DropoutRng rounding,
                        uint64_t rounding_offset) {
  const AdamParams a = adam_params(lr, beta1, beta2, eps, weight_decay, t);
  const bool vec = cudak::aligned16(master) && cudak::aligned16(m) && cudak::aligned16(v) &&
                   reinterpret_cast<uintptr_t>(grads) % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(params) % 8 == 0 && rounding_offset % 4 == 0;
  launch_grid_stride("adamw", n, vec, adamw_bf16_kernel, master, grads, m, v, params, n, a,
                     rounding.seed, rounding.stream, rounding_offset, vec);
}

template <class S>
void CudaBackend::sum_squares_impl(float* out, const S* x, size_t n) {
  const char* op = "sum_squares";
  begin_op(op);
  if (n == 0) {
    fill(out, 1, 0.f);
    return;
  }
  const bool vec = cudak::aligned16(x);
  const size_t per_block = static_cast<size_t>(kBlock) * 8;  // ~8 elements per thread at least
  const int blocks = static_cast<int>(std::min<size_t>(kMaxReduceBlocks, (n + per_block - 1) / per_block));
  float* partial = static_cast<float*>(scratch(kScratchReduce, kMaxReduceBlocks * sizeof(float)));
  sum_squares_partial_kernel<S><<<blocks, kBlock, 0, stream_>>>(partial, x, n, vec);
  cudak::check_launch(op);
  sum_partials_kernel<<<1, 1024, 0, stream_>>>(out, partial, blocks);
  cudak::check_launch(op);
}

void CudaBackend::sum_squares(float* out, const float* x, size_t n) { sum_squares_impl(out, x, n); }
void CudaBackend::sum_squares(float* out, const bf16* x, size_t n) { sum_squares_impl(out, x, n); }

template <class S>
void CudaBackend::clip_by_norm_impl(S* x, size_t n, const float* norm_sq, float max_norm) {
  launch_grid_stride("clip_by_norm", n, false, clip_by_norm_kernel<S>, x, n, norm_sq, max_norm);
}
void CudaBackend::clip_by_norm(float* x, size_t n, const float* norm_sq, float max_norm) {
  clip_by_norm_impl(x, n, norm_sq, max_norm);
}
void CudaBackend::clip_by_norm(bf16* x, size_t n, const float* norm_sq, float max_norm) {
  clip_by_norm_impl(x, n, norm_sq, max_norm);
}

}  // namespace gptcuda
