// Causal multi-head attention, FlashAttention-style in its saved state: the
// forward keeps only the log-sum-exp of each score row, and the backward
// recomputes the probabilities from it (same contract as the CUDA kernels).
// Work is split over (batch, head) pairs, which touch disjoint parts of every
// output, so no two threads ever write the same value.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend_cpu.h"
#include "parallel.h"
#include "philox.h"
#include "storage.h"
#include "vec.h"

namespace gptcuda {

namespace {

struct Layout {
  int T, C, NH, hs;
  size_t row3() const { return size_t(3) * C; }  // stride between positions in qkv
  template <class S>
  const S* q(const S* qkv, int b, int t, int h) const {
    return qkv + (size_t(b) * T + t) * row3() + size_t(h) * hs;
  }
  template <class S>
  const S* k(const S* qkv, int b, int t, int h) const { return q(qkv, b, t, h) + C; }
  template <class S>
  const S* v(const S* qkv, int b, int t, int h) const { return q(qkv, b, t, h) + 2 * C; }
  size_t o(int b, int t, int h) const { return (size_t(b) * T + t) * C + size_t(h) * hs; }
  uint64_t drop_index(int b, int h, int t, int s) const {
    return ((uint64_t(b) * NH + h) * T + t) * T + s;
  }
};

}  // namespace

// Per (batch, head) the keys and values are first transposed into [hs, T]
// panels, so score rows (q . k_s for all s) and their gradients become long
// axpy/dot loops over s that vectorise without a horizontal reduction per
// score. Dropout multipliers for a row are drawn in one loop (vectorisable
// Philox) before they are used.

namespace {

// Kt[c * T + s] = k_s[c]  (likewise for V), widened to float.
template <class S>
void load_transposed(float* Kt, float* Vt, const S* qkv, const Layout& L, int b, int h) {
  for (int s = 0; s < L.T; ++s) {
    const S* k = L.k(qkv, b, s, h);
    const S* v = L.v(qkv, b, s, h);
    for (int c = 0; c < L.hs; ++c) {
      Kt[size_t(c) * L.T + s] = to_float(k[c]);
      Vt[size_t(c) * L.T + s] = to_float(v[c]);
    }
  }
}

// row[s] = scale * q . k_s for s in [0, n)
void score_row(float* row, const float* q, const float* Kt, int T, int hs, int n, float scale) {
  float qs[256];  // hs <= 256 (checked by the binding)
  for (int c = 0; c < hs; ++c) qs[c] = q[c] * scale;
  for (int s = 0; s < n; ++s) row[s] = 0.f;
  panel_axpy(row, qs, Kt, T, hs, n);
}

// out[c] += dot(y, panel row c) for every row c of a [rows, T] panel.
void panel_dots(float* out, const float* y, const float* panel, int T, int rows, int n) {
  int c = 0;
  for (; c + 4 <= rows; c += 4) dot4(out + c, y, panel + size_t(c) * T, T, n);
  for (; c < rows; ++c) out[c] += dot(y, panel + size_t(c) * T, n);
}

// mult[s] = 1/(1-p) where element (t, s) is kept, else 0.
void dropout_row(float* mult, const Layout& L, int b, int h, int t, int n, float p, DropoutRng rng) {
  const float keep_scale = 1.0f / (1.0f - p);
  const uint64_t base = L.drop_index(b, h, t, 0);
#pragma omp simd
  for (int s = 0; s < n; ++s) mult[s] = dropout_keep(rng.seed, rng.stream, base + s, p) ? keep_scale : 0.f;
}

template <class S>
void forward(S* out, float* lse, const S* qkv, int B, int T, int C, int NH, float dropout_p, DropoutRng rng) {
  Layout L{T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(float(L.hs));
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    std::vector<float> Kt(size_t(L.hs) * T), Vt(size_t(L.hs) * T), row(T), mult(T), qbuf;
    FloatRow<S> orow;
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      load_transposed(Kt.data(), Vt.data(), qkv, L, b, h);
      for (int t = 0; t < T; ++t) {
        const int n = t + 1;
        score_row(row.data(), as_float(L.q(qkv, b, t, h), L.hs, qbuf), Kt.data(), T, L.hs, n, scale);
        float mx = -INFINITY;
        for (int s = 0; s < n; ++s) mx = row[s] > mx ? row[s] : mx;
#pragma omp simd
        for (int s = 0; s < n; ++s) row[s] = exp_fast(row[s] - mx);
        const float total = sum(row.data(), n);
        lse[bh * T + t] = mx + std::log(total);
        const float inv = 1.0f / total;
        if (dropout_p > 0.f) {
          dropout_row(mult.data(), L, b, h, t, n, dropout_p, rng);
          for (int s = 0; s < n; ++s) row[s] *= inv * mult[s];
        } else {
          for (int s = 0; s < n; ++s) row[s] *= inv;
        }
        // o_t[c] = sum_s row[s] v_s[c], as long dot products over s.
        float* o = orow.overwrite(out + L.o(b, t, h), L.hs);
        for (int c = 0; c < L.hs; ++c) o[c] = 0.f;
        panel_dots(o, row.data(), Vt.data(), T, L.hs, n);
        orow.store();
      }
    }
  });
}

// With P = softmax(S), P' = dropout(P), O = P'V:
//   dV = P'^T dO,  dP' = dO V^T,  dP = dropout_backward(dP'),
//   dS = P * (dP - D) with D_t = sum(dO_t * O_t)  (= rowsum(dP' * P')),
//   dQ = scale dS K,  dK = scale dS^T Q.
// For bf16 each row of dq, dk and dv is summed in float32 onto its old value
// and rounded once.
template <class S>
void backward(S* dqkv, const S* dout, const S* qkv, const S* out, const float* lse, int B, int T, int C, int NH,
              float dropout_p, DropoutRng rng) {
  Layout L{T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(float(L.hs));
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    const size_t panel = size_t(L.hs) * T;
    std::vector<float> Kt(panel), Vt(panel), dKt(panel), dVt(panel);
    std::vector<float> P(T), Pd(T), dP(T), dS(T), mult(T), qbuf, dObuf, obuf;
    FloatRow<S> drow;
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      load_transposed(Kt.data(), Vt.data(), qkv, L, b, h);
      std::fill(dKt.begin(), dKt.end(), 0.f);
      std::fill(dVt.begin(), dVt.end(), 0.f);
      for (int t = 0; t < T; ++t) {
        const int n = t + 1;
        const S* q_s = L.q(qkv, b, t, h);
        const float* q = as_float(q_s, L.hs, qbuf);
        const float* dO = as_float(dout + L.o(b, t, h), L.hs, dObuf);
        const float D = dot(dO, as_float(out + L.o(b, t, h), L.hs, obuf), L.hs);
        const float row_lse = lse[bh * T + t];
        score_row(P.data(), q, Kt.data(), T, L.hs, n, scale);
#pragma omp simd
        for (int s = 0; s < n; ++s) P[s] = exp_fast(P[s] - row_lse);
        for (int s = 0; s < n; ++s) dP[s] = 0.f;
        panel_axpy(dP.data(), dO, Vt.data(), T, L.hs, n);
        if (dropout_p > 0.f) {
          dropout_row(mult.data(), L, b, h, t, n, dropout_p, rng);
          for (int s = 0; s < n; ++s) {
            Pd[s] = P[s] * mult[s];
            dP[s] *= mult[s];
          }
        } else {
          for (int s = 0; s < n; ++s) Pd[s] = P[s];
        }
        for (int s = 0; s < n; ++s) dS[s] = P[s] * (dP[s] - D) * scale;
        float* dq = drow.load(dqkv + (q_s - qkv), L.hs);
        panel_dots(dq, dS.data(), Kt.data(), T, L.hs, n);
        drow.store();
        for (int c = 0; c < L.hs; ++c) {
          axpy(dKt.data() + size_t(c) * T, q[c], dS.data(), n);
          axpy(dVt.data() + size_t(c) * T, dO[c], Pd.data(), n);
        }
      }
      for (int s = 0; s < T; ++s) {
        S* dk = dqkv + (L.k(qkv, b, s, h) - qkv);
        S* dv = dqkv + (L.v(qkv, b, s, h) - qkv);
        for (int c = 0; c < L.hs; ++c) {
          dk[c] = from_float<S>(to_float(dk[c]) + dKt[size_t(c) * T + s]);
          dv[c] = from_float<S>(to_float(dv[c]) + dVt[size_t(c) * T + s]);
        }
      }
    }
  });
}

// The cache holds K and V in the storage type, copied unchanged from qkv;
// every product and the softmax are float32 (bf16 cache rows widened as read).
template <class S>
void decode(S* out, S* kcache, S* vcache, const S* qkv, int B, int Tn, int C, int NH, int Tmax, int pos0) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(float(hs));
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    std::vector<float> scores(size_t(pos0) + Tn), qbuf, kbuf, vbuf;
    FloatRow<S> orow;
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      S* kc = kcache + bh * size_t(Tmax) * hs;
      S* vc = vcache + bh * size_t(Tmax) * hs;
      for (int i = 0; i < Tn; ++i) {
        const S* row = qkv + (size_t(b) * Tn + i) * 3 * C + size_t(h) * hs;
        for (int c = 0; c < hs; ++c) {
          kc[size_t(pos0 + i) * hs + c] = row[C + c];
          vc[size_t(pos0 + i) * hs + c] = row[2 * C + c];
        }
      }
      for (int i = 0; i < Tn; ++i) {
        const float* q = as_float(qkv + (size_t(b) * Tn + i) * 3 * C + size_t(h) * hs, hs, qbuf);
        int last = pos0 + i;
        float mx = -INFINITY;
        for (int s = 0; s <= last; ++s) {
          scores[s] = dot(q, as_float(kc + size_t(s) * hs, hs, kbuf), hs) * scale;
          mx = scores[s] > mx ? scores[s] : mx;
        }
        float total = 0.f;
        for (int s = 0; s <= last; ++s) {
          scores[s] = std::exp(scores[s] - mx);
          total += scores[s];
        }
        float* o = orow.overwrite(out + (size_t(b) * Tn + i) * C + size_t(h) * hs, hs);
        for (int c = 0; c < hs; ++c) o[c] = 0.f;
        for (int s = 0; s <= last; ++s) axpy(o, scores[s] / total, as_float(vc + size_t(s) * hs, hs, vbuf), hs);
        orow.store();
      }
    }
  });
}

}  // namespace

void CpuBackend::attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                                   float dropout_p, DropoutRng rng) {
  forward(out, lse, qkv, B, T, C, NH, dropout_p, rng);
}
void CpuBackend::attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                                   float dropout_p, DropoutRng rng) {
  forward(out, lse, qkv, B, T, C, NH, dropout_p, rng);
}
void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                    const float* lse, int B, int T, int C, int NH, float dropout_p,
                                    DropoutRng rng) {
  backward(dqkv, dout, qkv, out, lse, B, T, C, NH, dropout_p, rng);
}
void CpuBackend::attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                                    const float* lse, int B, int T, int C, int NH, float dropout_p,
                                    DropoutRng rng) {
  backward(dqkv, dout, qkv, out, lse, B, T, C, NH, dropout_p, rng);
}
void CpuBackend::attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int Tn,
                                  int C, int NH, int Tmax, int pos0) {
  decode(out, kcache, vcache, qkv, B, Tn, C, NH, Tmax, pos0);
}
void CpuBackend::attention_decode(bf16* out, bf16* kcache, bf16* vcache, const bf16* qkv, int B, int Tn, int C,
                                  int NH, int Tmax, int pos0) {
  decode(out, kcache, vcache, qkv, B, Tn, C, NH, Tmax, pos0);
}

}  // namespace gptcuda
