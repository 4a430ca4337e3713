#include <algorithm>
#include <cmath>

#include "backend_cpu.h"
#include "gelu.h"
#include "parallel.h"
#include "storage.h"
#include "vec.h"

namespace gptcuda {

// GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// With e = exp(2u): 1 + tanh(u) = 2e / (e + 1) and sech^2(u) = 4e / (e + 1)^2,
// forms without cancellation in the tails, over the vectorisable exp (libm's
// tanhf is a scalar call that made GELU a fifth of a CPU training step).
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)

namespace {

void forward_f(float* out, const float* inp, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float x = inp[i];
    float e = exp_fast(2.0f * kGeluScale * (x + 0.044715f * x * x * x));
    out[i] = x * (e / (e + 1.0f));  // e / (e + 1) first: x * e can overflow
  }
}

inline float gelu_grad(float x) {
  float e = exp_fast(2.0f * kGeluScale * (x + 0.044715f * x * x * x));
  float r = 1.0f / (e + 1.0f);
  float half_one_plus_tanh = e * r;
  float half_sech2 = 2.0f * (half_one_plus_tanh * r);
  return half_one_plus_tanh + x * half_sech2 * kGeluScale * (1.0f + 3.0f * 0.044715f * x * x);
}

// dinp[i] += gelu'(inp[i]) * dout[i]; without kAccumulate dinp[i] = that
// product (dinp may then be dout itself: the fused op's in-place scaling).
template <bool kAccumulate>
void backward_f(float* dinp, const float* inp, const float* dout, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    const float g = gelu_grad(inp[i]) * dout[i];
    dinp[i] = kAccumulate ? dinp[i] + g : g;
  }
}

// bf16 runs the float loops on widened blocks (the vectorised widen/narrow of
// storage.h), which vectorise where per-element conversions inside them did not.
constexpr size_t kBlock = 512;

void forward(float* out, const float* inp, size_t n) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) { forward_f(out + lo, inp + lo, hi - lo); });
}
void forward(bf16* out, const bf16* inp, size_t n) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    float x[kBlock], y[kBlock];
    for (size_t b = lo; b < hi; b += kBlock) {
      const size_t m = std::min(kBlock, hi - b);
      widen(x, inp + b, m);
      forward_f(y, x, m);
      narrow(out + b, y, m);
    }
  });
}

template <bool kAccumulate>
void backward(float* dinp, const float* inp, const float* dout, size_t n) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    backward_f<kAccumulate>(dinp + lo, inp + lo, dout + lo, hi - lo);
  });
}
template <bool kAccumulate>
void backward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    float d[kBlock], x[kBlock], g[kBlock];
    for (size_t b = lo; b < hi; b += kBlock) {
      const size_t m = std::min(kBlock, hi - b);
      if (kAccumulate) widen(d, dinp + b, m);
      widen(x, inp + b, m);
      widen(g, dout + b, m);
      backward_f<kAccumulate>(d, x, g, m);
      narrow(dinp + b, d, m);
    }
  });
}

}  // namespace

void gelu_grad_scale(float* d, const float* inp, size_t n) { backward<false>(d, inp, d, n); }
void gelu_grad_scale(bf16* d, const bf16* inp, size_t n) { backward<false>(d, inp, d, n); }

void CpuBackend::gelu_forward(float* out, const float* inp, size_t n) { forward(out, inp, n); }
void CpuBackend::gelu_forward(bf16* out, const bf16* inp, size_t n) { forward(out, inp, n); }
void CpuBackend::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  backward<true>(dinp, inp, dout, n);
}
void CpuBackend::gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, size_t n) {
  backward<true>(dinp, inp, dout, n);
}

}  // namespace gptcuda
