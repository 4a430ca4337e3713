#include "backend_cpu.h"
#include "parallel.h"
#include "philox.h"

namespace gptcuda {

// Counter-based, so the values do not depend on how the work is split.
void CpuBackend::fill_normal(float* x, size_t n, float mean, float std, DropoutRng rng) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) x[i] = mean + std * philox_normal(rng.seed, rng.stream, i);
  });
}

void CpuBackend::fill_uniform(float* x, size_t n, float lo, float hi, DropoutRng rng) {
  parallel_for(n, 1 << 14, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) x[i] = lo + (hi - lo) * philox_uniform(rng.seed, rng.stream, i);
  });
}

}  // namespace gptcuda
