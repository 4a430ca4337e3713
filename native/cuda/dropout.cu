// Inverted dropout with the shared Philox RNG (philox.h): element i is kept
// when dropout_keep(seed, stream, i, p), exactly as on the CPU, and kept values
// are scaled by 1/(1-p). The backward regenerates the mask from the indices,
// so nothing is stored between the passes.
#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {

// out[i] = keep(i) ? inp[i] * scale : 0. out may alias inp.
template <class S>
__global__ void dropout_forward_kernel(S* out, const S* inp, size_t n, float p, float scale,
                                       uint64_t seed, uint64_t stream) {
  cudak::grid_stride(n, [&](size_t i) {
    const float x = to_float(inp[i]);
    out[i] = from_float<S>(dropout_keep(seed, stream, i, p) ? x * scale : 0.0f);
  });
}

// dinp[i] += keep(i) ? dout[i] * scale : 0
template <class S>
__global__ void dropout_backward_kernel(S* dinp, const S* dout, size_t n, float p, float scale,
                                        uint64_t seed, uint64_t stream) {
  cudak::grid_stride(n, [&](size_t i) {
    if (dropout_keep(seed, stream, i, p))
      dinp[i] = from_float<S>(to_float(dinp[i]) + to_float(dout[i]) * scale);
  });
}

}  // namespace

template <class S>
void CudaBackend::dropout_forward_impl(S* out, const S* inp, size_t n, float p, DropoutRng rng) {
  if (p <= 0.0f) {  // identity: the mask would keep everything
    copy(out, inp, n * sizeof(S));
    return;
  }
  launch_grid_stride("dropout_forward", n, false, dropout_forward_kernel<S>, out, inp, n, p,
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
  launch_grid_stride("dropout_backward", n, false, dropout_backward_kernel<S>, dinp, dout, n, p,
                     1.0f / (1.0f - p), rng.seed, rng.stream);
}
void CudaBackend::dropout_backward(float* dinp, const float* dout, size_t n, float p, DropoutRng rng) {
  dropout_backward_impl(dinp, dout, n, p, rng);
}
void CudaBackend::dropout_backward(bf16* dinp, const bf16* dout, size_t n, float p, DropoutRng rng) {
  dropout_backward_impl(dinp, dout, n, p, rng);
}

}  // namespace gptcuda
