#include "gemv.h"

#include <cstddef>
#include <cstring>

#include "bf16.h"
#include "parallel.h"

namespace gptcuda {
namespace {

// 16 lanes whatever the target (one AVX-512 register, two AVX2 ones):
// vector extensions compute lane by lane, so a fixed width keeps the
// summation order, and so the results, the same across machines and across M.
constexpr int kLanes = 16;
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// bf16 weights are widened in the register (a shift of each 16-bit lane into
// the top half of a 32-bit one): the matrix streams from memory at half the
// bytes of float, which is what bounds a GEMV.
typedef uint16_t half_lanes __attribute__((vector_size(kLanes * sizeof(uint16_t))));
typedef uint32_t word_lanes __attribute__((vector_size(kLanes * sizeof(uint32_t))));
inline vec load(const bf16* p) {
  half_lanes h;
  std::memcpy(&h, p, sizeof h);
  const word_lanes w = __builtin_convertvector(h, word_lanes) << 16;
  vec v;
  std::memcpy(&v, &w, sizeof v);
  return v;
}

inline float hsum(vec v) {
  float s[kLanes];
  std::memcpy(s, &v, sizeof s);
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) s[i] += s[i + w];
  return s[0];
}

// Outputs j0..j0+J-1 of all M rows: J weight rows stream once through
// registers while the M input rows (at most 8 x K floats) stay in L1.
template <int M, int J, class W>
inline void block(float* out, const float* x, const W* w, const float* bias, int K, int N, size_t j0) {
  vec acc[M][J];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) acc[i][j] = vec{};
  const W* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  int k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    vec wv[J];
    for (int j = 0; j < J; ++j) wv[j] = load(wr[j] + k);
    for (int i = 0; i < M; ++i) {
      const vec xv = load(x + size_t(i) * K + k);
      for (int j = 0; j < J; ++j) acc[i][j] += xv * wv[j];
    }
  }
  for (int i = 0; i < M; ++i) {
    const float* xi = x + size_t(i) * K;
    for (int j = 0; j < J; ++j) {
      float s = hsum(acc[i][j]);
      for (int kk = k; kk < K; ++kk) s += xi[kk] * to_float(wr[j][kk]);
      out[size_t(i) * N + j0 + j] = bias ? bias[j0 + j] + s : s;
    }
  }
}

// Register budget: M * J accumulators plus J weight vectors (32 registers
// with AVX-512, 16 half-width ones with AVX2). The choice does not change results.
template <int M>
constexpr int cols() {
#ifdef __AVX512F__
  return M == 1 ? 8 : (M <= 2 ? 6 : (M <= 4 ? 4 : 3));
#else
  return M <= 2 ? 4 : (M <= 4 ? 2 : 1);
#endif
}

template <int M, class W>
void rows(float* out, const float* x, const W* w, const float* bias, int K, int N) {
  constexpr int J = cols<M>();
  // A chunk of at least 64 weight rows (>= 192 KiB for K = 768) outweighs waking a thread.
  parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
    size_t j = lo;
    for (; j + J <= hi; j += J) block<M, J, W>(out, x, w, bias, K, N, j);
    for (; j < hi; ++j) block<M, 1, W>(out, x, w, bias, K, N, j);
  });
}

template <class W>
void gemv_dispatch(float* out, const float* inp, const W* weight, const float* bias, int M, int K, int N) {
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

}  // namespace

void gemv_rows(float* out, const float* inp, const float* weight, const float* bias, int M, int K, int N) {
  gemv_dispatch(out, inp, weight, bias, M, K, N);
}
void gemv_rows(float* out, const float* inp, const bf16* weight, const float* bias, int M, int K, int N) {
  gemv_dispatch(out, inp, weight, bias, M, K, N);
}

}  // namespace gptcuda
