// Inverted dropout with the shared Philox RNG (philox.h): element i is kept
// when dropout_keep(seed, stream, i, p), exactly as on the CPU, and kept values
// are scaled by 1/(1-p). The backward regenerates the mask from the indices,
// so nothing is stored between the passes.
#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {
// emu:kernels-begin (native/cuda/emu/run.sh tests the code up to emu:kernels-end)

constexpr int kBlock = 256;

// out[i] = keep(i) ? inp[i] * scale : 0. out may alias inp.
__global__ void dropout_forward_kernel(float* out, const float* inp, size_t n, float p,
                                       float scale, uint64_t seed, uint64_t stream) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = inp[i];
    out[i] = dropout_keep(seed, stream, i, p) ? x * scale : 0.0f;
  }
}

// dinp[i] += keep(i) ? dout[i] * scale : 0
__global__ void dropout_backward_kernel(float* dinp, const float* dout, size_t n, float p,
                                        float scale, uint64_t seed, uint64_t stream) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (dropout_keep(seed, stream, i, p)) dinp[i] += dout[i] * scale;
  }
}

// emu:kernels-end
}  // namespace

void CudaBackend::dropout_forward(float* out, const float* inp, size_t n, float p,
                                  DropoutRng rng) {
  if (n == 0) return;
  if (p <= 0.0f) {  // identity: the mask would keep everything
    copy(out, inp, n * sizeof(float));
    return;
  }
  begin_op("dropout_forward");
  const float scale = 1.0f / (1.0f - p);
  const unsigned grid = cudak::grid_for(n, kBlock, sm_count_);
  dropout_forward_kernel<<<grid, kBlock, 0, stream_>>>(out, inp, n, p, scale, rng.seed, rng.stream);
  cudak::check_launch("dropout_forward");
}

void CudaBackend::dropout_backward(float* dinp, const float* dout, size_t n, float p,
                                   DropoutRng rng) {
  if (n == 0) return;
  if (p <= 0.0f) {
    accumulate(dinp, dout, n);
    return;
  }
  begin_op("dropout_backward");
  const float scale = 1.0f / (1.0f - p);
  const unsigned grid = cudak::grid_for(n, kBlock, sm_count_);
  dropout_backward_kernel<<<grid, kBlock, 0, stream_>>>(dinp, dout, n, p, scale, rng.seed, rng.stream);
  cudak::check_launch("dropout_backward");
}

}  // namespace gptcuda
