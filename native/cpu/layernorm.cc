#include <cmath>
#include <type_traits>
#include <vector>

#include "backend_cpu.h"
#include "parallel.h"
#include "storage.h"

namespace gptcuda {

constexpr float kEps = 1e-5f;

namespace {

// R rows' statistics and outputs from their float values x[k]. Each row's sums
// run in the serial order of one row alone, so the bits do not depend on R;
// a row's sum alone waits on the float add latency at every element, R
// independent chains overlap. Shared by both forwards, so that the fused one
// computes exactly what add + layernorm_forward give.
template <int R>
void normalize_rows(float* const* o, float* mean, float* rstd, const float* const* x, const float* weight,
                    const float* bias, int C) {
  float m[R], var[R], s[R];
  for (int k = 0; k < R; ++k) m[k] = var[k] = 0.f;
  for (int c = 0; c < C; ++c)
    for (int k = 0; k < R; ++k) m[k] += x[k][c];
  for (int k = 0; k < R; ++k) m[k] /= C;
  for (int c = 0; c < C; ++c)
    for (int k = 0; k < R; ++k) {
      float d = x[k][c] - m[k];
      var[k] += d * d;
    }
  for (int k = 0; k < R; ++k) {
    var[k] /= C;  // biased, as PyTorch's LayerNorm
    s[k] = 1.0f / std::sqrt(var[k] + kEps);
    mean[k] = m[k];
    rstd[k] = s[k];
  }
  for (int k = 0; k < R; ++k)
    for (int c = 0; c < C; ++c) o[k][c] = (x[k][c] - m[k]) * s[k] * weight[c] + bias[c];
}

constexpr int kGroup = 8;  // 8 chains cover a 4-cycle add issued twice per cycle

// Rows [lo, hi) in groups of kGroup (the rest one by one): row(k, i) prepares
// row i in slot k and returns its float values, out(k, i) the float row its
// output goes to, done(k) stores slot k's output.
template <class Row, class Out, class Done>
void row_groups(size_t lo, size_t hi, float* mean, float* rstd, const float* weight, const float* bias, int C,
                Row row, Out out, Done done) {
  const float* x[kGroup];
  float* o[kGroup];
  for (size_t i = lo; i < hi;) {
    const int n = hi - i >= size_t(kGroup) ? kGroup : 1;
    for (int k = 0; k < n; ++k) {
      x[k] = row(k, i + k);
      o[k] = out(k, i + k);
    }
    if (n == kGroup) normalize_rows<kGroup>(o, mean + i, rstd + i, x, weight, bias, C);
    else normalize_rows<1>(o, mean + i, rstd + i, x, weight, bias, C);
    for (int k = 0; k < n; ++k) done(k);
    i += n;
  }
}

template <class S>
void forward(S* out, float* mean, float* rstd, const S* inp, const S* weight_s, const S* bias_s, int N, int C) {
  std::vector<float> wbuf, bbuf;
  const float* weight = as_float(weight_s, C, wbuf);
  const float* bias = as_float(bias_s, C, bbuf);
  parallel_for(size_t(N), 8, [&](size_t lo, size_t hi) {
    std::vector<float> xbuf[kGroup];
    FloatRow<S> orow[kGroup];
    row_groups(
        lo, hi, mean, rstd, weight, bias, C, [&](int k, size_t i) { return as_float(inp + i * C, C, xbuf[k]); },
        [&](int k, size_t i) { return orow[k].overwrite(out + i * C, C); }, [&](int k) { orow[k].store(); });
  });
}

// Each residual row is summed, stored, and normalised while it is in L1; for
// bf16 the normalisation reads it back as stored (rounded), as a separate
// layernorm_forward would.
template <class S>
void residual_forward(S* res, S* out, float* mean, float* rstd, const S* a, const S* b, const S* weight_s,
                      const S* bias_s, int N, int C) {
  std::vector<float> wbuf, bbuf;
  const float* weight = as_float(weight_s, C, wbuf);
  const float* bias = as_float(bias_s, C, bbuf);
  parallel_for(size_t(N), 8, [&](size_t lo, size_t hi) {
    std::vector<float> abuf, bbuf2, rbuf[kGroup];
    FloatRow<S> orow[kGroup];
    auto residual = [&](int k, size_t i) -> const float* {
      const float* x = as_float(a + i * C, C, abuf);
      const float* y = as_float(b + i * C, C, bbuf2);
      float* r;
      if constexpr (std::is_same_v<S, float>) {
        r = res + i * C;  // x or y may be r itself: each element is read before it is written
      } else {
        if (rbuf[k].size() < size_t(C)) rbuf[k].resize(C);
        r = rbuf[k].data();
      }
      for (int c = 0; c < C; ++c) r[c] = x[c] + y[c];
      if constexpr (!std::is_same_v<S, float>) {
        narrow(res + i * C, r, C);
        widen(r, res + i * C, C);
      }
      return r;
    };
    row_groups(
        lo, hi, mean, rstd, weight, bias, C, residual,
        [&](int k, size_t i) { return orow[k].overwrite(out + i * C, C); }, [&](int k) { orow[k].store(); });
  });
}

// dinp is computed row-parallel; dweight/dbias need a sum over rows, done
// per thread into private float32 buffers and reduced in thread order
// (deterministic) onto the old values, which are stored once.
template <class S>
void backward(S* dinp, S* dweight, S* dbias, const S* dout, const S* inp, const S* weight_s, const float* mean,
              const float* rstd, int N, int C) {
  std::vector<float> wbuf;
  const float* weight = as_float(weight_s, C, wbuf);
  int threads = cpu_num_threads();
  std::vector<float> partial(size_t(threads) * 2 * C, 0.f);
  size_t per = (size_t(N) + threads - 1) / threads;
  parallel_for(size_t(threads), 1, [&](size_t t0, size_t t1) {
    std::vector<float> xbuf, gbuf;
    FloatRow<S> drow;
    for (size_t th = t0; th < t1; ++th) {
      float* pw = partial.data() + th * 2 * C;
      float* pb = pw + C;
      size_t lo = th * per, hi = std::min(size_t(N), lo + per);
      for (size_t i = lo; i < hi; ++i) {
        const float* x = as_float(inp + i * C, C, xbuf);
        const float* g = as_float(dout + i * C, C, gbuf);
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
          float* d = drow.load(dinp + i * C, C);
          for (int c = 0; c < C; ++c) {
            float norm = (x[c] - m) * s;
            d[c] += s * (g[c] * weight[c] - sum_g - norm * sum_gx);
          }
          drow.store();
        }
      }
    }
  });
  FloatRow<S> dw, db;
  float* dwf = dweight ? dw.load(dweight, C) : nullptr;
  float* dbf = dbias ? db.load(dbias, C) : nullptr;
  for (int th = 0; th < threads; ++th) {
    const float* pw = partial.data() + size_t(th) * 2 * C;
    const float* pb = pw + C;
    for (int c = 0; c < C; ++c) {
      if (dwf) dwf[c] += pw[c];
      if (dbf) dbf[c] += pb[c];
    }
  }
  if (dwf) dw.store();
  if (dbf) db.store();
}

}  // namespace

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                   const float* bias, int N, int C) {
  forward(out, mean, rstd, inp, weight, bias, N, C);
}
void CpuBackend::layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight,
                                   const bf16* bias, int N, int C) {
  forward(out, mean, rstd, inp, weight, bias, N, C);
}
void CpuBackend::residual_layernorm_forward(float* residual_out, float* ln_out, float* mean, float* rstd,
                                            const float* a, const float* b, const float* weight,
                                            const float* bias, int N, int C) {
  residual_forward(residual_out, ln_out, mean, rstd, a, b, weight, bias, N, C);
}
void CpuBackend::residual_layernorm_forward(bf16* residual_out, bf16* ln_out, float* mean, float* rstd,
                                            const bf16* a, const bf16* b, const bf16* weight, const bf16* bias,
                                            int N, int C) {
  residual_forward(residual_out, ln_out, mean, rstd, a, b, weight, bias, N, C);
}
void CpuBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                    const float* inp, const float* weight, const float* mean,
                                    const float* rstd, int N, int C) {
  backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void CpuBackend::layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const bf16* inp,
                                    const bf16* weight, const float* mean, const float* rstd, int N, int C) {
  backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}

}  // namespace gptcuda
