#include "backend_cpu.h"
#include "parallel.h"
#include "philox.h"

namespace gptcuda {

void CpuBackend::dropout_forward(float* out, const float* inp, size_t n, float p, DropoutRng rng) {
  float keep_scale = 1.0f / (1.0f - p);
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i)
      out[i] = dropout_keep(rng.seed, rng.stream, i, p) ? inp[i] * keep_scale : 0.0f;
  });
}

void CpuBackend::dropout_backward(float* dinp, const float* dout, size_t n, float p, DropoutRng rng) {
  float keep_scale = 1.0f / (1.0f - p);
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i)
      if (dropout_keep(rng.seed, rng.stream, i, p)) dinp[i] += dout[i] * keep_scale;
  });
}

}  // namespace gptcuda
