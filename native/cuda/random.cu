// Seeded normal initialisation with the shared Philox RNG (philox.h), the
// same formula as native/cpu/random.cc.
#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {

constexpr int kBlock = 256;

__global__ void fill_normal_kernel(float* x, size_t n, float mean, float std, uint64_t seed,
                                   uint64_t stream) {
  const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    x[i] = mean + std * philox_normal(seed, stream, i);
}

__global__ void fill_uniform_kernel(float* x, size_t n, float lo, float hi, uint64_t seed,
                                    uint64_t stream) {
  const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    x[i] = lo + (hi - lo) * philox_uniform(seed, stream, i);
}

}  // namespace

void CudaBackend::fill_uniform(float* x, size_t n, float lo, float hi, DropoutRng rng) {
  if (n == 0) return;
  begin_op("fill_uniform");
  const unsigned grid = cudak::grid_for(n, kBlock, sm_count_);
  fill_uniform_kernel<<<grid, kBlock, 0, stream_>>>(x, n, lo, hi, rng.seed, rng.stream);
  cudak::check_launch("fill_uniform");
}

void CudaBackend::fill_normal(float* x, size_t n, float mean, float std, DropoutRng rng) {
  if (n == 0) return;
  begin_op("fill_normal");
  const unsigned grid = cudak::grid_for(n, kBlock, sm_count_);
  fill_normal_kernel<<<grid, kBlock, 0, stream_>>>(x, n, mean, std, rng.seed, rng.stream);
  cudak::check_launch("fill_normal");
}

}  // namespace gptcuda
