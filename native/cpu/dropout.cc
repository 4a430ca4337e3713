#include "backend_cpu.h"
#include "parallel.h"
#include "philox.h"
#include "philox_lanes.h"

namespace gptcuda {

namespace {

// Masks kPhiloxLanes at a time (dropout_scales_lanes); dropped elements are
// selected, not multiplied by 0, so results equal the scalar form (+0,
// untouched gradients, no NaN from inf * 0).
template <class S>
void forward(S* out, const S* inp, size_t n, float p, DropoutRng rng) {
  float keep_scale = 1.0f / (1.0f - p);
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    size_t i = lo;
    for (; i + kPhiloxLanes <= hi; i += kPhiloxLanes) {
      float scale[kPhiloxLanes];
      dropout_scales_lanes(rng.seed, rng.stream, i, p, keep_scale, scale);
#pragma omp simd
      for (int l = 0; l < kPhiloxLanes; ++l) out[i + l] = from_float<S>(scale[l] != 0.0f ? to_float(inp[i + l]) * scale[l] : 0.0f);
    }
    for (; i < hi; ++i)
      out[i] = from_float<S>(dropout_keep(rng.seed, rng.stream, i, p) ? to_float(inp[i]) * keep_scale : 0.0f);
  });
}

template <class S>
void backward(S* dinp, const S* dout, size_t n, float p, DropoutRng rng) {
  float keep_scale = 1.0f / (1.0f - p);
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    size_t i = lo;
    for (; i + kPhiloxLanes <= hi; i += kPhiloxLanes) {
      float scale[kPhiloxLanes];
      dropout_scales_lanes(rng.seed, rng.stream, i, p, keep_scale, scale);
#pragma omp simd
      for (int l = 0; l < kPhiloxLanes; ++l)
        dinp[i + l] = scale[l] != 0.0f ? from_float<S>(to_float(dinp[i + l]) + to_float(dout[i + l]) * scale[l]) : dinp[i + l];
    }
    for (; i < hi; ++i)
      if (dropout_keep(rng.seed, rng.stream, i, p))
        dinp[i] = from_float<S>(to_float(dinp[i]) + to_float(dout[i]) * keep_scale);
  });
}

}  // namespace

void CpuBackend::dropout_forward(float* out, const float* inp, size_t n, float p, DropoutRng rng) {
  forward(out, inp, n, p, rng);
}
void CpuBackend::dropout_forward(bf16* out, const bf16* inp, size_t n, float p, DropoutRng rng) {
  forward(out, inp, n, p, rng);
}
void CpuBackend::dropout_backward(float* dinp, const float* dout, size_t n, float p, DropoutRng rng) {
  backward(dinp, dout, n, p, rng);
}
void CpuBackend::dropout_backward(bf16* dinp, const bf16* dout, size_t n, float p, DropoutRng rng) {
  backward(dinp, dout, n, p, rng);
}

}  // namespace gptcuda
