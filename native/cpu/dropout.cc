#include <algorithm>

#include "backend_cpu.h"
#include "parallel.h"
#include "philox.h"
#include "philox_lanes.h"

namespace gptcuda {

namespace {

// Masks a window at a time (dropout_scales_lanes); dropped elements are
// selected, not multiplied by 0, so results equal the scalar form (+0,
// untouched gradients, no NaN from inf * 0). f(i0, n, scale) handles elements
// i0..i0+n-1 of [lo, hi).
template <class F>
void for_each_window(size_t lo, size_t hi, float p, DropoutRng rng, F f) {
  const float keep_scale = 1.0f / (1.0f - p);
  alignas(64) float scale[kPhiloxWindow];
  for (size_t i = lo; i < hi;) {
    const int n = int(std::min<size_t>(hi - i, size_t(kPhiloxWindow) - (i & 3)));
    dropout_scales_lanes(rng.seed, rng.stream, i, n, p, keep_scale, scale);
    f(i, n, scale);
    i += size_t(n);
  }
}

template <class S>
void forward(S* out, const S* inp, size_t n, float p, DropoutRng rng) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    for_each_window(lo, hi, p, rng, [&](size_t i0, int m, const float* scale) {
      // Local pointers: through the captured references the loop stays scalar.
      S* o = out + i0;
      const S* x = inp + i0;
#pragma omp simd
      for (int j = 0; j < m; ++j) o[j] = from_float<S>(scale[j] != 0.0f ? to_float(x[j]) * scale[j] : 0.0f);
    });
  });
}

template <class S>
void backward(S* dinp, const S* dout, size_t n, float p, DropoutRng rng) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    for_each_window(lo, hi, p, rng, [&](size_t i0, int m, const float* scale) {
      S* dx = dinp + i0;
      const S* dy = dout + i0;
#pragma omp simd
      for (int j = 0; j < m; ++j) dx[j] = scale[j] != 0.0f ? from_float<S>(to_float(dx[j]) + to_float(dy[j]) * scale[j]) : dx[j];
    });
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
