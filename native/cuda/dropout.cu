// Inverted dropout with the shared Philox RNG (philox.h): element i is kept
// when dropout_keep(seed, stream, i, p), exactly as on the CPU, and kept values
// are scaled by 1/(1-p). The backward regenerates the mask from the indices,
// so nothing is stored between the passes.
#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {

// One thread per four consecutive elements: one Philox block gives all four
// their bits (philox_element_bits' layout), a quarter of the RNG work of one
// block per element.
// out[i] = keep(i) ? inp[i] * scale : 0. out may alias inp.
template <class S>
__global__ void dropout_forward_kernel(S* out, const S* inp, size_t n, float p, float scale,
                                       uint64_t seed, uint64_t stream) {
  cudak::grid_stride((n + 3) / 4, [&](size_t g) {
    const Philox4 r = philox4(seed, stream, g);
    for (int k = 0; k < 4; ++k) {
      const size_t i = 4 * g + k;
      if (i < n) out[i] = from_float<S>(dropout_keep_bits(r.w[k], p) ? to_float(inp[i]) * scale : 0.0f);
    }
  });
}

// dinp[i] += keep(i) ? dout[i] * scale : 0
template <class S>
__global__ void dropout_backward_kernel(S* dinp, const S* dout, size_t n, float p, float scale,
                                        uint64_t seed, uint64_t stream) {
  cudak::grid_stride((n + 3) / 4, [&](size_t g) {
    const Philox4 r = philox4(seed, stream, g);
    for (int k = 0; k < 4; ++k) {
      const size_t i = 4 * g + k;
      if (i < n && dropout_keep_bits(r.w[k], p))
        dinp[i] = from_float<S>(to_float(dinp[i]) + to_float(dout[i]) * scale);
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
  // vec: the grid is sized for one thread per four elements.
  launch_grid_stride("dropout_forward", n, true, dropout_forward_kernel<S>, out, inp, n, p,
                     1.0f / (1.0f - p), rng.seed, rng.stream);
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
  launch_grid_stride("dropout_backward", n, true, dropout_backward_kernel<S>, dinp, dout, n, p,
                     1.0f / (1.0f - p), rng.seed, rng.stream);
}
void CudaBackend::dropout_backward(float* dinp, const float* dout, size_t n, float p, DropoutRng rng) {
  dropout_backward_impl(dinp, dout, n, p, rng);
}
void CudaBackend::dropout_backward(bf16* dinp, const bf16* dout, size_t n, float p, DropoutRng rng) {
  dropout_backward_impl(dinp, dout, n, p, rng);
}

}  // namespace gptcuda
