// Seeded normal initialisation with the shared Philox RNG (philox.h), the
// same formula as native/cpu/random.cc.
#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {

__global__ void fill_normal_kernel(float* x, size_t n, float mean, float std, uint64_t seed,
                                   uint64_t stream) {
  cudak::grid_stride(n, [&](size_t i) { x[i] = mean + std * philox_normal(seed, stream, i); });
}

__global__ void fill_uniform_kernel(float* x, size_t n, float lo, float hi, uint64_t seed,
                                    uint64_t stream) {
  cudak::grid_stride(n, [&](size_t i) { x[i] = lo + (hi - lo) * philox_uniform(seed, stream, i); });
}

}  // namespace

void CudaBackend::fill_uniform(float* x, size_t n, float lo, float hi, DropoutRng rng) {
  launch_grid_stride("fill_uniform", n, false, fill_uniform_kernel, x, n, lo, hi, rng.seed,
                     rng.stream);
}

void CudaBackend::fill_normal(float* x, size_t n, float mean, float std, DropoutRng rng) {
  launch_grid_stride("fill_normal", n, false, fill_normal_kernel, x, n, mean, std, rng.seed,
                     rng.stream);
}

}  // namespace gptcuda
