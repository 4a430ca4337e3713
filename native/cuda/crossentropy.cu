// Fused classifier: softmax + cross-entropy (+ its gradient) per row of logits.
//
// One block per row. Pass 1 reads the row once, keeping a per-thread online
// (max, sum of exp) pair that is merged across the block; pass 2 reads it again
// and writes dlogits = dloss * (softmax - onehot(target)). Probabilities are
// never stored, and dlogits may be the logits buffer itself: each element is
// read and then written by the same thread, and the target's logit is read by
// every thread before the block's first barrier, i.e. before any write.
// Ignored rows (target == ignore_index) get loss 0 and a zero gradient; a
// target outside [0, V) is treated the same and reported at the next sync.
#include <cmath>

#include "backend_cuda.cuh"

namespace gptcuda {
namespace {

using cudak::DeviceError;

constexpr int kBlock = 512;

// Merges the online-softmax pair (m2, s2) into (m, s). A side with no elements
// yet has m = -inf and s = 0; the guards keep -inf - -inf from making a NaN.
__device__ __forceinline__ void merge_max_sum(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  const float a = m == -INFINITY ? 0.f : s * __expf(m - mm);
  const float b = m2 == -INFINITY ? 0.f : s2 * __expf(m2 - mm);
  m = mm;
  s = a + b;
}

// Adds x to the online pair (m, s).
__device__ __forceinline__ void online_add(float& m, float& s, float x) {
  if (x > m) {
    s = s * __expf(m - x) + 1.f;  // m == -inf: exp(-inf) = 0
    m = x;
  } else {
    s += __expf(x - m);
  }
}

// S: the storage type of logits and dlogits; the softmax and the loss are float.
template <bool kBackward, class S>
__global__ void __launch_bounds__(kBlock)
    crossentropy_kernel(float* losses, S* dlogits, const S* logits, const int32_t* targets, int V,
                        float dloss, int ignore_index, bool vec, DeviceError* err) {
  using cudak::Pack;
  constexpr int W = Pack<S>::kWidth;
  __shared__ float s_m[32], s_s[32];
  const int row = blockIdx.x;
  const int tid = threadIdx.x;
  const S* x = logits + static_cast<size_t>(row) * V;
  S* dx = kBackward ? dlogits + static_cast<size_t>(row) * V : nullptr;
  const int target = targets[row];
  bool skip = target == ignore_index;
  if (!skip && (target < 0 || target >= V)) {
    if (tid == 0) cudak::report_device_error(err, cudak::kTargetOutOfRange, target, V);
    skip = true;
  }
  if (skip) {  // uniform over the block
    if (tid == 0) losses[row] = 0.f;
    if (kBackward)
      for (int i = tid; i < V; i += blockDim.x) dx[i] = from_float<S>(0.f);
    return;
  }
  const float x_target = to_float(x[target]);  // before the barrier below: dx may alias x

  // Pass 1: online max and sum of exp.
  float m = -INFINITY, s = 0.f;
  if (vec) {
    for (int i = tid; i < V / W; i += blockDim.x) {
      const Pack<S> v = cudak::load_pack(x + i * W);
      float mx = v.get(0);
#pragma unroll
      for (int j = 1; j < W; ++j) mx = fmaxf(mx, v.get(j));
      if (mx > m) {
        s *= __expf(m - mx);
        m = mx;
      }
      float part = 0.f;
#pragma unroll
      for (int j = 0; j < W; ++j) part += __expf(v.get(j) - m);
      s += part;
    }
  } else {
    for (int i = tid; i < V; i += blockDim.x) online_add(m, s, to_float(x[i]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge_max_sum(m, s, m2, s2);
  }
  const int lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    s_m[warp] = m;
    s_s[warp] = s;
  }
  __syncthreads();
  m = lane < nwarps ? s_m[lane] : -INFINITY;
  s = lane < nwarps ? s_s[lane] : 0.f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge_max_sum(m, s, m2, s2);
  }
  const float lse = m + __logf(s);  // log sum exp of the row
  if (tid == 0) losses[row] = lse - x_target;
  if (!kBackward) return;

  // Pass 2: dlogits = dloss * (softmax - onehot).
  if (vec) {
    for (int i = tid; i < V / W; i += blockDim.x) {
      const Pack<S> v = cudak::load_pack(x + i * W);
      Pack<S> g;
#pragma unroll
      for (int j = 0; j < W; ++j)
        g.set(j, dloss * (__expf(v.get(j) - lse) - (W * i + j == target ? 1.f : 0.f)));
      cudak::store_pack(dx + i * W, g);
    }
  } else {
    for (int i = tid; i < V; i += blockDim.x)
      dx[i] = from_float<S>(dloss * (__expf(to_float(x[i]) - lse) - (i == target ? 1.f : 0.f)));
  }
}

}  // namespace

template <class S>
void CudaBackend::crossentropy_forward_impl(float* losses, const S* logits, const int32_t* targets,
                                            int N, int V, int ignore_index) {
  if (N <= 0) return;
  begin_op("crossentropy_forward");
  const bool vec = V % cudak::Pack<S>::kWidth == 0 && cudak::aligned16(logits);
  crossentropy_kernel<false, S><<<N, kBlock, 0, stream_>>>(losses, nullptr, logits, targets, V,
                                                           0.f, ignore_index, vec, d_error_);
  cudak::check_launch("crossentropy_forward");
}
void CudaBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets,
                                       int N, int V, int ignore_index) {
  crossentropy_forward_impl(losses, logits, targets, N, V, ignore_index);
}
void CudaBackend::crossentropy_forward(float* losses, const bf16* logits, const int32_t* targets,
                                       int N, int V, int ignore_index) {
  crossentropy_forward_impl(losses, logits, targets, N, V, ignore_index);
}

template <class S>
void CudaBackend::crossentropy_forward_backward_impl(float* losses, S* dlogits, const S* logits,
                                                     const int32_t* targets, int N, int V,
                                                     float dloss, int ignore_index) {
  if (N <= 0) return;
  begin_op("crossentropy_forward_backward");
  const bool vec = V % cudak::Pack<S>::kWidth == 0 && cudak::aligned16(logits) &&
                   cudak::aligned16(dlogits);
  crossentropy_kernel<true, S><<<N, kBlock, 0, stream_>>>(losses, dlogits, logits, targets, V,
                                                          dloss, ignore_index, vec, d_error_);
  cudak::check_launch("crossentropy_forward_backward");
}
void CudaBackend::crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                                const int32_t* targets, int N, int V, float dloss,
                                                int ignore_index) {
  crossentropy_forward_backward_impl(losses, dlogits, logits, targets, N, V, dloss, ignore_index);
}
void CudaBackend::crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                                const int32_t* targets, int N, int V, float dloss,
                                                int ignore_index) {
  crossentropy_forward_backward_impl(losses, dlogits, logits, targets, N, V, dloss, ignore_index);
}

}  // namespace gptcuda
