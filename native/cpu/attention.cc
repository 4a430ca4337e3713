// Causal multi-head attention, FlashAttention-style in its saved state: the
// forward keeps only the log-sum-exp of each score row, and the backward
// recomputes the probabilities from it (same contract as the CUDA kernels).
// Work is split over (batch, head) pairs, which touch disjoint parts of every
// output, so no two threads ever write the same value.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend_cpu.h"
#include "gemm_blocked.h"
#include "parallel.h"
#include "philox.h"
#include "philox_lanes.h"
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

// mult[s] = 1/(1-p) where element (t, s) is kept, else 0 (dropout_keep's
// masks, a window of Philox blocks at a time).
void dropout_row(float* mult, const Layout& L, int b, int h, int t, int n, float p, DropoutRng rng) {
  const float keep_scale = 1.0f / (1.0f - p);
  const uint64_t base = L.drop_index(b, h, t, 0);
  for (int s = 0; s < n;) {
    const int m = std::min(n - s, kPhiloxWindow - int((base + uint64_t(s)) & 3));
    dropout_scales_lanes(rng.seed, rng.stream, base + uint64_t(s), m, p, keep_scale, mult + s);
    s += m;
  }
}

// Query rows in blocks of kQueryBlock: the block's scores against the keys it
// can see are one GEMM (Q_blk K^T), its outputs another (P_blk V), both with
// the internal blocked GEMM run serially inside the (batch, head) task, so the
// products run at GEMM speed instead of as row-by-row dot products.
constexpr int kQueryBlock = 64;

// Head h of batch b as float32 matrices [T, hs] with row stride ld: float
// storage is read in place from qkv (stride 3C), bf16 is widened into the
// task's own contiguous buffers.
struct HeadMats {
  const float *q, *k, *v;
  int ld;
};

inline HeadMats load_head(std::vector<float>&, std::vector<float>&, std::vector<float>&, const float* qkv,
                          const Layout& L, int b, int h) {
  return {L.q(qkv, b, 0, h), L.k(qkv, b, 0, h), L.v(qkv, b, 0, h), int(L.row3())};
}

inline HeadMats load_head(std::vector<float>& Qf, std::vector<float>& Kf, std::vector<float>& Vf, const bf16* qkv,
                          const Layout& L, int b, int h) {
  const size_t head = size_t(L.T) * L.hs;
  Qf.resize(head), Kf.resize(head), Vf.resize(head);
  for (int t = 0; t < L.T; ++t) {
    widen(Qf.data() + size_t(t) * L.hs, L.q(qkv, b, t, h), L.hs);
    widen(Kf.data() + size_t(t) * L.hs, L.k(qkv, b, t, h), L.hs);
    widen(Vf.data() + size_t(t) * L.hs, L.v(qkv, b, t, h), L.hs);
  }
  return {Qf.data(), Kf.data(), Vf.data(), L.hs};
}

template <class S>
void forward(S* out, float* lse, const S* qkv, int B, int T, int C, int NH, float dropout_p, DropoutRng rng) {
  Layout L{T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(float(L.hs));
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    std::vector<float> Qf, Kf, Vf, P(size_t(kQueryBlock) * T), O(size_t(kQueryBlock) * L.hs), mult(T);
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      const HeadMats H = load_head(Qf, Kf, Vf, qkv, L, b, h);
      for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
        const int rows = std::min(kQueryBlock, T - t0), n = t0 + rows;  // keys 0..n-1 are visible to some row
        sgemm_blocked(false, true, rows, n, L.hs, scale, H.q + size_t(t0) * H.ld, H.ld, H.k, H.ld, 0.0f, P.data(), n);
        for (int r = 0; r < rows; ++r) {
          const int t = t0 + r, visible = t + 1;
          float* row = P.data() + size_t(r) * n;
          float mx = -INFINITY;
          for (int s = 0; s < visible; ++s) mx = row[s] > mx ? row[s] : mx;
#pragma omp simd
          for (int s = 0; s < visible; ++s) row[s] = exp_fast(row[s] - mx);
          const float total = sum(row, visible);
          lse[bh * T + t] = mx + std::log(total);
          const float inv = 1.0f / total;
          if (dropout_p > 0.f) {
            dropout_row(mult.data(), L, b, h, t, visible, dropout_p, rng);
            for (int s = 0; s < visible; ++s) row[s] *= inv * mult[s];
          } else {
            for (int s = 0; s < visible; ++s) row[s] *= inv;
          }
          for (int s = visible; s < n; ++s) row[s] = 0.f;  // the causal mask
        }
        sgemm_blocked(false, false, rows, L.hs, n, 1.0f, P.data(), n, H.v, H.ld, 0.0f, O.data(), L.hs);
        for (int r = 0; r < rows; ++r) narrow(out + L.o(b, t0 + r, h), O.data() + size_t(r) * L.hs, L.hs);
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
// dst[c] += src[c], in float32, rounded once into the storage type.
template <class S>
void accumulate_row(S* dst, const float* src, int n) {
  for (int c = 0; c < n; ++c) dst[c] = from_float<S>(to_float(dst[c]) + src[c]);
}

// By query blocks as the forward: per block, S and dP' are GEMMs, and so are
// dQ_blk = dS K, dK += dS^T Q_blk and dV += P'^T dO_blk. dK and dV of the head
// are summed in float32 over the blocks and added to dqkv once.
template <class S>
void backward(S* dqkv, const S* dout, const S* qkv, const S* out, const float* lse, int B, int T, int C, int NH,
              float dropout_p, DropoutRng rng) {
  Layout L{T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(float(L.hs));
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    const size_t head = size_t(T) * L.hs, block = size_t(kQueryBlock) * T;
    std::vector<float> Qf, Kf, Vf, dOf(head), dKf(head), dVf(head), D(T), orow(L.hs);
    std::vector<float> P(block), dP(block), dQ(size_t(kQueryBlock) * L.hs), mult(T);
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      const HeadMats H = load_head(Qf, Kf, Vf, qkv, L, b, h);
      for (int t = 0; t < T; ++t) {
        widen(dOf.data() + size_t(t) * L.hs, dout + L.o(b, t, h), L.hs);
        widen(orow.data(), out + L.o(b, t, h), L.hs);
        D[t] = dot(dOf.data() + size_t(t) * L.hs, orow.data(), L.hs);
      }
      std::fill(dKf.begin(), dKf.end(), 0.f);
      std::fill(dVf.begin(), dVf.end(), 0.f);
      for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
        const int rows = std::min(kQueryBlock, T - t0), n = t0 + rows;
        const float* Qb = H.q + size_t(t0) * H.ld;
        const float* dOb = dOf.data() + size_t(t0) * L.hs;
        sgemm_blocked(false, true, rows, n, L.hs, scale, Qb, H.ld, H.k, H.ld, 0.0f, P.data(), n);
        sgemm_blocked(false, true, rows, n, L.hs, 1.0f, dOb, L.hs, H.v, H.ld, 0.0f, dP.data(), n);
        for (int r = 0; r < rows; ++r) {
          const int t = t0 + r, visible = t + 1;
          float* p = P.data() + size_t(r) * n;  // P, then (after dS is formed) P'
          float* dp = dP.data() + size_t(r) * n;  // dP', then dS
          const float row_lse = lse[bh * T + t];
#pragma omp simd
          for (int s = 0; s < visible; ++s) p[s] = exp_fast(p[s] - row_lse);
          if (dropout_p > 0.f) {
            dropout_row(mult.data(), L, b, h, t, visible, dropout_p, rng);
            for (int s = 0; s < visible; ++s) {
              dp[s] *= mult[s];                    // dP = dropout_backward(dP')
              const float ds = p[s] * (dp[s] - D[t]) * scale;
              p[s] *= mult[s];                     // P' for dV
              dp[s] = ds;
            }
          } else {
            for (int s = 0; s < visible; ++s) dp[s] = p[s] * (dp[s] - D[t]) * scale;
          }
          for (int s = visible; s < n; ++s) p[s] = dp[s] = 0.f;  // the causal mask
        }
        sgemm_blocked(false, false, rows, L.hs, n, 1.0f, dP.data(), n, H.k, H.ld, 0.0f, dQ.data(), L.hs);
        sgemm_blocked(true, false, n, L.hs, rows, 1.0f, dP.data(), n, Qb, H.ld, 1.0f, dKf.data(), L.hs);
        sgemm_blocked(true, false, n, L.hs, rows, 1.0f, P.data(), n, dOb, L.hs, 1.0f, dVf.data(), L.hs);
        for (int r = 0; r < rows; ++r)
          accumulate_row(dqkv + (L.q(qkv, b, t0 + r, h) - qkv), dQ.data() + size_t(r) * L.hs, L.hs);
      }
      for (int s = 0; s < T; ++s) {
        accumulate_row(dqkv + (L.k(qkv, b, s, h) - qkv), dKf.data() + size_t(s) * L.hs, L.hs);
        accumulate_row(dqkv + (L.v(qkv, b, s, h) - qkv), dVf.data() + size_t(s) * L.hs, L.hs);
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
    // bf16: the cache rows a head reads, widened once per head in one vectorised pass (float: read in place)
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
      const float* kf = as_float(kc, size_t(pos0 + Tn) * hs, kbuf);
      const float* vf = as_float(vc, size_t(pos0 + Tn) * hs, vbuf);
      for (int i = 0; i < Tn; ++i) {
        const float* q = as_float(qkv + (size_t(b) * Tn + i) * 3 * C + size_t(h) * hs, hs, qbuf);
        int last = pos0 + i;
        float mx = -INFINITY;
        for (int s = 0; s <= last; ++s) {
          scores[s] = dot(q, kf + size_t(s) * hs, hs) * scale;
          mx = scores[s] > mx ? scores[s] : mx;
        }
        float total = 0.f;
        for (int s = 0; s <= last; ++s) {
          scores[s] = std::exp(scores[s] - mx);
          total += scores[s];
        }
        float* o = orow.overwrite(out + (size_t(b) * Tn + i) * C + size_t(h) * hs, hs);
        for (int c = 0; c < hs; ++c) o[c] = 0.f;
        for (int s = 0; s <= last; ++s) axpy(o, scores[s] / total, vf + size_t(s) * hs, hs);
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
