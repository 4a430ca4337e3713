// Causal multi-head attention, FlashAttention-style in its saved state: the
// forward keeps only the log-sum-exp of each score row, and the backward
// recomputes the probabilities from it (same contract as the CUDA kernels).
// Work is split over (batch, head) pairs, which touch disjoint parts of every
// output, so no two threads ever write the same value.
#include <cmath>
#include <vector>

#include "kernels.h"
#include "parallel.h"
#include "philox.h"
#include "vec.h"

namespace gptcuda::cpu {

namespace {

struct Layout {
  int T, C, NH, hs;
  size_t row3() const { return size_t(3) * C; }  // stride between positions in qkv
  const float* q(const float* qkv, int b, int t, int h) const {
    return qkv + (size_t(b) * T + t) * row3() + size_t(h) * hs;
  }
  const float* k(const float* qkv, int b, int t, int h) const { return q(qkv, b, t, h) + C; }
  const float* v(const float* qkv, int b, int t, int h) const { return q(qkv, b, t, h) + 2 * C; }
  size_t o(int b, int t, int h) const { return (size_t(b) * T + t) * C + size_t(h) * hs; }
  uint64_t drop_index(int b, int h, int t, int s) const {
    return ((uint64_t(b) * NH + h) * T + t) * T + s;
  }
};

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                       float dropout_p, DropoutRng rng) {
  Layout L{T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(float(L.hs));
  const float keep_scale = 1.0f / (1.0f - dropout_p);
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    std::vector<float> scores(T);
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      for (int t = 0; t < T; ++t) {
        const float* q = L.q(qkv, b, t, h);
        float mx = -INFINITY;
        for (int s = 0; s <= t; ++s) {
          scores[s] = dot(q, L.k(qkv, b, s, h), L.hs) * scale;
          mx = scores[s] > mx ? scores[s] : mx;
        }
        float total = 0.f;
        for (int s = 0; s <= t; ++s) {
          scores[s] = std::exp(scores[s] - mx);
          total += scores[s];
        }
        lse[bh * T + t] = mx + std::log(total);
        float* o = out + L.o(b, t, h);
        for (int c = 0; c < L.hs; ++c) o[c] = 0.f;
        float inv = 1.0f / total;
        for (int s = 0; s <= t; ++s) {
          float p = scores[s] * inv;
          if (dropout_p > 0.f)
            p = dropout_keep(rng.seed, rng.stream, L.drop_index(b, h, t, s), dropout_p) ? p * keep_scale : 0.f;
          axpy(o, p, L.v(qkv, b, s, h), L.hs);
        }
      }
    }
  });
}

// With P = softmax(S), P' = dropout(P), O = P'V:
//   dV = P'^T dO,  dP' = dO V^T,  dP = dropout_backward(dP'),
//   dS = P * (dP - D) with D_t = sum(dO_t * O_t)  (= rowsum(dP' * P')),
//   dQ = scale dS K,  dK = scale dS^T Q.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int B, int T, int C, int NH, float dropout_p,
                        DropoutRng rng) {
  Layout L{T, C, NH, C / NH};
  const float scale = 1.0f / std::sqrt(float(L.hs));
  const float keep_scale = 1.0f / (1.0f - dropout_p);
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      for (int t = 0; t < T; ++t) {
        const float* q = L.q(qkv, b, t, h);
        const float* dO = dout + L.o(b, t, h);
        float D = dot(dO, out + L.o(b, t, h), L.hs);
        float row_lse = lse[bh * T + t];
        float* dq = dqkv + (L.q(qkv, b, t, h) - qkv);
        for (int s = 0; s <= t; ++s) {
          const float* k = L.k(qkv, b, s, h);
          const float* v = L.v(qkv, b, s, h);
          float p = std::exp(dot(q, k, L.hs) * scale - row_lse);
          float dp = dot(dO, v, L.hs);
          float p_dropped = p;
          if (dropout_p > 0.f) {
            bool keep = dropout_keep(rng.seed, rng.stream, L.drop_index(b, h, t, s), dropout_p);
            p_dropped = keep ? p * keep_scale : 0.f;
            dp = keep ? dp * keep_scale : 0.f;
          }
          float ds = p * (dp - D) * scale;
          axpy(dqkv + (v - qkv), p_dropped, dO, L.hs);  // dV
          axpy(dq, ds, k, L.hs);                          // dQ
          axpy(dqkv + (k - qkv), ds, q, L.hs);            // dK
        }
      }
    }
  });
}

void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int Tn,
                      int C, int NH, int Tmax, int pos0) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(float(hs));
  parallel_for(size_t(B) * NH, 1, [&](size_t lo, size_t hi) {
    std::vector<float> scores(size_t(pos0) + Tn);
    for (size_t bh = lo; bh < hi; ++bh) {
      int b = int(bh / NH), h = int(bh % NH);
      float* kc = kcache + bh * size_t(Tmax) * hs;
      float* vc = vcache + bh * size_t(Tmax) * hs;
      for (int i = 0; i < Tn; ++i) {
        const float* row = qkv + (size_t(b) * Tn + i) * 3 * C + size_t(h) * hs;
        for (int c = 0; c < hs; ++c) {
          kc[size_t(pos0 + i) * hs + c] = row[C + c];
          vc[size_t(pos0 + i) * hs + c] = row[2 * C + c];
        }
      }
      for (int i = 0; i < Tn; ++i) {
        const float* q = qkv + (size_t(b) * Tn + i) * 3 * C + size_t(h) * hs;
        int last = pos0 + i;
        float mx = -INFINITY;
        for (int s = 0; s <= last; ++s) {
          scores[s] = dot(q, kc + size_t(s) * hs, hs) * scale;
          mx = scores[s] > mx ? scores[s] : mx;
        }
        float total = 0.f;
        for (int s = 0; s <= last; ++s) {
          scores[s] = std::exp(scores[s] - mx);
          total += scores[s];
        }
        float* o = out + (size_t(b) * Tn + i) * C + size_t(h) * hs;
        for (int c = 0; c < hs; ++c) o[c] = 0.f;
        for (int s = 0; s <= last; ++s) axpy(o, scores[s] / total, vc + size_t(s) * hs, hs);
      }
    }
  });
}

}  // namespace gptcuda::cpu
