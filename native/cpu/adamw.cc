#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "backend_cpu.h"
#include "parallel.h"
#include "philox.h"
#include "philox_lanes.h"

namespace gptcuda {

constexpr size_t kChunk = 1 << 15;

namespace {

template <class S>
void adamw_impl(CpuBackend& be, float* master, const S* grads, float* m, float* v, S* params, size_t n, float lr,
                float beta1, float beta2, float eps, float weight_decay, int t, DropoutRng rounding,
                uint64_t rounding_offset) {
  // Bias corrections in double: beta^t for large t loses precision in float.
  // PyTorch's formulation: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), which
  // needs one sqrt and one division per element.
  const double bc1 = 1.0 - std::pow(double(beta1), t);
  const double bc2 = 1.0 - std::pow(double(beta2), t);
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
#pragma omp simd
    for (size_t i = lo; i < hi; ++i) {
      float g = to_float(grads[i]);
      float mi = beta1 * m[i] + (1.0f - beta1) * g;
      float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      // Decoupled weight decay (Loshchilov & Hutter), applied first as PyTorch does.
      master[i] = master[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
    }
    if constexpr (std::is_same_v<S, bf16>) {
      if (!params) return;
      // philox_rounding_bits' layout, elements numbered from rounding_offset,
      // a window of Philox blocks at a time (philox_lanes.h): a scalar block
      // per four elements cost more than the whole update.
      alignas(64) uint32_t bits[kPhiloxWindow];
      for (size_t i = lo; i < hi;) {
        const uint64_t g = rounding_offset + i;
        const int skip = int(g & 3);
        const int m = int(std::min<size_t>(hi - i, size_t(kPhiloxWindow - skip)));
        philox_element_bits_lanes(rounding.seed, rounding.stream, g >> 2, bits);
        bf16* out = params + i;
        const float* w = master + i;
        for (int j = 0; j < m; ++j) out[j] = float_to_bf16_stochastic(w[j], bits[skip + j] & 0xffffu);
        i += size_t(m);
      }
    }
  });
  if constexpr (std::is_same_v<S, float>) {
    (void)rounding;
    (void)rounding_offset;
    if (params && params != master) be.copy(params, master, n * sizeof(float));
  }
}

// Per-chunk double partial sums combined in chunk order: deterministic and
// accurate for 10^8 elements.
template <class S>
void sum_squares_impl(float* out, const S* x, size_t n) {
  size_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
  parallel_for(chunks, 1, [&](size_t lo, size_t hi) {
    for (size_t c = lo; c < hi; ++c) {
      size_t b = c * kChunk, e = std::min(n, b + kChunk);
      float acc = 0.f;
      for (size_t i = b; i < e; ++i) {
        const float xi = to_float(x[i]);
        acc += xi * xi;
      }
      partial[c] = acc;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  out[0] = static_cast<float>(total);
}

}  // namespace

void CpuBackend::adamw(float* master, const float* grads, float* m, float* v, float* params, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int t, DropoutRng rounding,
                       uint64_t rounding_offset) {
  adamw_impl(*this, master, grads, m, v, params, n, lr, beta1, beta2, eps, weight_decay, t, rounding, rounding_offset);
}
void CpuBackend::adamw(float* master, const bf16* grads, float* m, float* v, bf16* params, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int t, DropoutRng rounding,
                       uint64_t rounding_offset) {
  adamw_impl(*this, master, grads, m, v, params, n, lr, beta1, beta2, eps, weight_decay, t, rounding, rounding_offset);
}

void CpuBackend::sum_squares(float* out, const float* x, size_t n) { sum_squares_impl(out, x, n); }
void CpuBackend::sum_squares(float* out, const bf16* x, size_t n) { sum_squares_impl(out, x, n); }

void CpuBackend::clip_by_norm(float* x, size_t n, const float* norm_sq, float max_norm) {
  float norm = std::sqrt(norm_sq[0]);
  float factor = max_norm / (norm + 1e-6f);
  if (factor >= 1.0f) return;
  scale(x, n, factor);
}
void CpuBackend::clip_by_norm(bf16* x, size_t n, const float* norm_sq, float max_norm) {
  float norm = std::sqrt(norm_sq[0]);
  float factor = max_norm / (norm + 1e-6f);
  if (factor >= 1.0f) return;
  scale(x, n, factor);
}

}  // namespace gptcuda
