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

template <bool kBackward>
__global__ void __launch_bounds__(kBlock)
    crossentropy_kernel(float* losses, float* dlogits, const float* logits,
                        const int32_t* targets, int V, float dloss, int ignore_index, bool vec,
                        DeviceError* err) {
  __shared__ float s_m[32], s_s[32];
  const int row = blockIdx.x;
  const int tid = threadIdx.x;
  const float* x = logits + static_cast<size_t>(row) * V;
  float* dx = kBackward ? dlogits + static_cast<size_t>(row) * V : nullptr;
  const int target = targets[row];
  bool skip = target == ignore_index;
  if (!skip && (target < 0 || target >= V)) {
    if (tid == 0) cudak::report_device_error(err, cudak::kTargetOutOfRange, target, V);
    skip = true;
  }
  if (skip) {  // uniform over the block
    if (tid == 0) losses[row] = 0.f;
    if (kBackward)
      for (int i = tid; i < V; i += blockDim.x) dx[i] = 0.f;
    return;
  }
  const float x_target = x[target];  // before the barrier below: dx may alias x

  // Pass 1: online max and sum of exp.
  float m = -INFINITY, s = 0.f;
  if (vec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int i = tid; i < V / 4; i += blockDim.x) {
      const float4 v = x4[i];
      const float mx = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
      if (mx > m) {
        s *= __expf(m - mx);
        m = mx;
      }
      s += __expf(v.x - m) + __expf(v.y - m) + __expf(v.z - m) + __expf(v.w - m);
    }
  } else {
    for (int i = tid; i < V; i += blockDim.x) online_add(m, s, x[i]);
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
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* d4 = reinterpret_cast<float4*>(dx);
    for (int i = tid; i < V / 4; i += blockDim.x) {
      const float4 v = x4[i];
      float4 g;
      g.x = dloss * (__expf(v.x - lse) - (4 * i + 0 == target ? 1.f : 0.f));
      g.y = dloss * (__expf(v.y - lse) - (4 * i + 1 == target ? 1.f : 0.f));
      g.z = dloss * (__expf(v.z - lse) - (4 * i + 2 == target ? 1.f : 0.f));
      g.w = dloss * (__expf(v.w - lse) - (4 * i + 3 == target ? 1.f : 0.f));
      d4[i] = g;
    }
  } else {
    for (int i = tid; i < V; i += blockDim.x)
      dx[i] = dloss * (__expf(x[i] - lse) - (i == target ? 1.f : 0.f));
  }
}

}  // namespace

void CudaBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets,
                                       int N, int V, int ignore_index) {
  if (N <= 0) return;
  begin_op("crossentropy_forward");
  const bool vec = V % 4 == 0 && cudak::aligned16(logits);
  crossentropy_kernel<false><<<N, kBlock, 0, stream_>>>(losses, nullptr, logits, targets, V, 0.f,
                                                        ignore_index, vec, d_error_);
  cudak::check_launch("crossentropy_forward");
}

void CudaBackend::crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                                const int32_t* targets, int N, int V, float dloss,
                                                int ignore_index) {
  if (N <= 0) return;
  begin_op("crossentropy_forward_backward");
  const bool vec = V % 4 == 0 && cudak::aligned16(logits) && cudak::aligned16(dlogits);
  crossentropy_kernel<true><<<N, kBlock, 0, stream_>>>(losses, dlogits, logits, targets, V, dloss,
                                                       ignore_index, vec, d_error_);
  cudak::check_launch("crossentropy_forward_backward");
}

}  // namespace gptcuda
