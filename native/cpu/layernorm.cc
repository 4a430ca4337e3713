#include <cmath>
#include <vector>

#include "backend_cpu.h"
#include "parallel.h"

namespace gptcuda {

constexpr float kEps = 1e-5f;

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C) {
  parallel_for(size_t(N), 8, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      const float* x = inp + i * C;
      float m = 0.f;
      for (int c = 0; c < C; ++c) m += x[c];
      m /= C;
      float var = 0.f;
      for (int c = 0; c < C; ++c) {
        float d = x[c] - m;
        var += d * d;
      }
      var /= C;  // biased, as PyTorch's LayerNorm
      float s = 1.0f / std::sqrt(var + kEps);
      float* o = out + i * C;
      for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
      mean[i] = m;
      rstd[i] = s;
    }
  });
}

// dinp is computed row-parallel; dweight/dbias need a sum over rows, done
// per thread into private buffers and reduced in thread order (deterministic).
void CpuBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C) {
  int threads = cpu_num_threads();
  std::vector<float> partial(size_t(threads) * 2 * C, 0.f);
  size_t per = (size_t(N) + threads - 1) / threads;
  parallel_for(size_t(threads), 1, [&](size_t t0, size_t t1) {
    for (size_t th = t0; th < t1; ++th) {
      float* pw = partial.data() + th * 2 * C;
      float* pb = pw + C;
      size_t lo = th * per, hi = std::min(size_t(N), lo + per);
      for (size_t i = lo; i < hi; ++i) {
        const float* x = inp + i * C;
        const float* g = dout + i * C;
        float m = mean[i], s = rstd[i];
        float sum_g = 0.f, sum_gx = 0.f;  // mean of dnorm and of dnorm * norm
        for (int c = 0; c < C; ++c) {
          float norm = (x[c] - m) * s;
          float dnorm = g[c] * weight[c];
          sum_g += dnorm;
          sum_gx += dnorm * norm;
          pb[c] += g[c];
          pw[c] += g[c] * norm;
        }
        sum_g /= C;
        sum_gx /= C;
        if (dinp) {
          float* d = dinp + i * C;
          for (int c = 0; c < C; ++c) {
            float norm = (x[c] - m) * s;
            d[c] += s * (g[c] * weight[c] - sum_g - norm * sum_gx);
          }
        }
      }
    }
  });
  for (int th = 0; th < threads; ++th) {
    const float* pw = partial.data() + size_t(th) * 2 * C;
    const float* pb = pw + C;
    for (int c = 0; c < C; ++c) {
      if (dweight) dweight[c] += pw[c];
      if (dbias) dbias[c] += pb[c];
    }
  }
}

}  // namespace gptcuda
