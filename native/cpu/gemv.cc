#include "gemv.h"

#include <cstddef>
#include <cstring>

#include "parallel.h"

namespace gptcuda {
namespace {

// 8 lanes on every x86-64 target with AVX2 or better (and plain SSE pairs
// elsewhere): a fixed width keeps the summation order, and so the results,
// the same across machines and across M.
typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float hsum(v8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// Outputs j0..j0+J-1 of all M rows: J weight rows stream once through
// registers while the M input rows (at most 8 x K floats) stay in L1.
template <int M, int J>
inline void block(float* out, const float* x, const float* w, const float* bias, int K, int N, size_t j0) {
  v8 acc[M][J];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) acc[i][j] = v8{};
  const float* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    v8 wv[J];
    for (int j = 0; j < J; ++j) wv[j] = load8(wr[j] + k);
    for (int i = 0; i < M; ++i) {
      const v8 xv = load8(x + size_t(i) * K + k);
      for (int j = 0; j < J; ++j) acc[i][j] += xv * wv[j];
    }
  }
  for (int i = 0; i < M; ++i) {
    const float* xi = x + size_t(i) * K;
    for (int j = 0; j < J; ++j) {
      float s = hsum(acc[i][j]);
      for (int kk = k; kk < K; ++kk) s += xi[kk] * wr[j][kk];
      out[size_t(i) * N + j0 + j] = bias ? bias[j0 + j] + s : s;
    }
  }
}

// Register budget: M * J accumulators plus J weight vectors.
template <int M>
constexpr int cols() {
  return M == 1 ? 8 : (M <= 4 ? 4 : 2);
}

template <int M>
void rows(float* out, const float* x, const float* w, const float* bias, int K, int N) {
  constexpr int J = cols<M>();
  // A chunk of at least 64 weight rows (>= 192 KiB for K = 768) outweighs waking a thread.
  parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
    size_t j = lo;
    for (; j + J <= hi; j += J) block<M, J>(out, x, w, bias, K, N, j);
    for (; j < hi; ++j) block<M, 1>(out, x, w, bias, K, N, j);
  });
}

}  // namespace

void gemv_rows(float* out, const float* inp, const float* weight, const float* bias, int M, int K, int N) {
  switch (M) {
    case 1: return rows<1>(out, inp, weight, bias, K, N);
    case 2: return rows<2>(out, inp, weight, bias, K, N);
    case 3: return rows<3>(out, inp, weight, bias, K, N);
    case 4: return rows<4>(out, inp, weight, bias, K, N);
    case 5: return rows<5>(out, inp, weight, bias, K, N);
    case 6: return rows<6>(out, inp, weight, bias, K, N);
    case 7: return rows<7>(out, inp, weight, bias, K, N);
    case 8: return rows<8>(out, inp, weight, bias, K, N);
    default: return;
  }
}

}  // namespace gptcuda
