// Inverted dropout with the shared Philox RNG (philox.h): element i is kept
// when dropout_keep(seed, stream, i, p), exactly as on the CPU, and kept values
// are scaled by 1/(1-p). The backward regenerates the mask from the indices,
// so nothing is stored between the passes.
#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {

// One thread per 16 bytes (4 floats or 8 bf16: one or two Philox blocks,
// whose words give the elements their bits in philox_element_bits' layout),
// with one 16-byte load and store each when the buffers are aligned (vec);
// otherwise, and for the tail, element by element with the same bits.
template <class S>
struct DropoutPack {
  static constexpr int kWidth = cudak::Pack<S>::kWidth;
  uint32_t bits[kWidth];
  __device__ DropoutPack(uint64_t seed, uint64_t stream, size_t first) {
#pragma unroll
    for (int b = 0; b < kWidth / 4; ++b) {
      const Philox4 r = philox4(seed, stream, first / 4 + b);
#pragma unroll
      for (int k = 0; k < 4; ++k) bits[4 * b + k] = r.w[k];
    }
  }
};

// Forward (kAccumulate false): dst[i] = keep(i) ? src[i] * scale : 0; dst may alias src.
// Backward (kAccumulate true): dst[i] += src[i] * scale where kept, the rest untouched.
__device__ __forceinline__ float dropped(bool accumulate, bool keep, float dst, float src, float scale) {
  return keep ? (accumulate ? dst + src * scale : src * scale) : 0.0f;
}

template <class S, bool kAccumulate>
__global__ void dropout_kernel(S* dst, const S* src, size_t n, float p, float scale, uint64_t seed,
                               uint64_t stream, bool vec) {
  constexpr int W = DropoutPack<S>::kWidth;
  cudak::grid_stride((n + W - 1) / W, [&](size_t g) {
    const size_t i0 = g * W;
    const DropoutPack<S> m(seed, stream, i0);
    if (vec && i0 + W <= n) {
      const cudak::Pack<S> x = cudak::load_pack(src + i0);
      cudak::Pack<S> o;
      if (kAccumulate) o = cudak::load_pack(dst + i0);
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const bool keep = dropout_keep_bits(m.bits[j], p);
        if (kAccumulate && !keep) continue;  // a dropped gradient leaves dst's bits as they are
        o.set(j, dropped(kAccumulate, keep, kAccumulate ? o.get(j) : 0.0f, x.get(j), scale));
      }
      cudak::store_pack(dst + i0, o);
      return;
    }
    for (int j = 0; j < W && i0 + j < n; ++j) {
      const bool keep = dropout_keep_bits(m.bits[j], p);
      if (kAccumulate && !keep) continue;
      const float d = kAccumulate ? to_float(dst[i0 + j]) : 0.0f;
      dst[i0 + j] = from_float<S>(dropped(kAccumulate, keep, d, to_float(src[i0 + j]), scale));
    }
  });
}

}  // namespace

template <class S>
void CudaBackend::dropout_forward_impl(S* out, const S* inp, size_t n, float p, DropoutRng rng) {
  if (p <= 0.0f) {  // identity: the mask would keep everything
    copy(out, inp, n * sizeof(S));
    return;
  }
  const bool vec = cudak::aligned16(out) && cudak::aligned16(inp);
  // (the grid is sized for a thread per four elements: enough for packs of 4 or 8)
  launch_grid_stride("dropout_forward", n, true, dropout_kernel<S, false>, out, inp, n, p,
                     1.0f / (1.0f - p), rng.seed, rng.stream, vec);
}
void CudaBackend::dropout_forward(float* out, const float* inp, size_t n, float p, DropoutRng rng) {
  dropout_forward_impl(out, inp, n, p, rng);
}
void CudaBackend::dropout_forward(bf16* out, const bf16* inp, size_t n, float p, DropoutRng rng) {
  dropout_forward_impl(out, inp, n, p, rng);
}

template <class S>
void CudaBackend::dropout_backward_impl(S* dinp, const S* dout, size_t n, float p, DropoutRng rng) {
  if (p <= 0.0f) {
    accumulate(dinp, dout, n);
    return;
  }
  const bool vec = cudak::aligned16(dinp) && cudak::aligned16(dout);
  launch_grid_stride("dropout_backward", n, true, dropout_kernel<S, true>, dinp, dout, n, p,
                     1.0f / (1.0f - p), rng.seed, rng.stream, vec);
}
void CudaBackend::dropout_backward(float* dinp, const float* dout, size_t n, float p, DropoutRng rng) {
  dropout_backward_impl(dinp, dout, n, p, rng);
}
void CudaBackend::dropout_backward(bf16* dinp, const bf16* dout, size_t n, float p, DropoutRng rng) {
  dropout_backward_impl(dinp, dout, n, p, rng);
}

}  // namespace gptcuda
