#include "gemv.h"

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bf16.h"
#include "parallel.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace gptcuda {
namespace {

// 16 lanes whatever the target (one AVX-512 register, two AVX2 ones):
// vector extensions compute lane by lane, so a fixed width keeps the
// summation order, and so the results, the same across machines and across M.
constexpr int kLanes = 16;
// A block's J weight rows are J short streams (K values each), which the
// hardware prefetcher does not run far enough ahead on: each block also
// prefetches the rows kPrefetchBlocks blocks on (bf16 rows are half as long:
// 17 -> 24 GB/s streaming a 77 MB bf16 matrix on the 2-core VM; a prefetch
// past the end of the matrix is harmless).
constexpr int kPrefetchBlocks = 2;
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

typedef uint32_t word_lanes __attribute__((vector_size(kLanes * sizeof(uint32_t))));

inline float hsum(vec v) {
  float s[kLanes];
  std::memcpy(s, &v, sizeof s);
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) s[i] += s[i + w];
  return s[0];
}

// Outputs j0..j0+J-1 of all M rows: J weight rows stream once through
// registers while the M input rows (at most 8 x K floats) stay in L1.
template <int M, int J>
inline void block(float* out, const float* x, const float* w, const float* bias, int K, int N, size_t j0) {
  vec acc[M][J];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) acc[i][j] = vec{};
  const float* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  int k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    vec wv[J];
    for (int j = 0; j < J; ++j) {
      wv[j] = load(wr[j] + k);
      __builtin_prefetch(wr[j] + k + kPrefetchBlocks * size_t(J) * K);
    }
    for (int i = 0; i < M; ++i) {
      const vec xv = load(x + size_t(i) * K + k);
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

// bf16 weights are widened in registers, so the matrix streams from memory
// at half the bytes of float, which is what bounds a GEMV. 32 at a time: one
// 64-byte load holds them as 16 pairs, and a shift (even elements) and a mask
// (odd ones) widen them without a lane shuffle (zero-extending 16 at a time
// measured 10-30% slower). The inputs are reordered to match (xp: per block
// of 32, the even elements then the odd ones), so the FMAs see matching
// lanes. Per output the summation order is fixed (even half, then odd half,
// block by block, then the scalar tail), the same whatever M is.
inline void split_pairs(vec* even, vec* odd, const bf16* p) {
  word_lanes u;
  std::memcpy(&u, p, sizeof u);
  const word_lanes e = u << 16, o = u & 0xffff0000u;
  std::memcpy(even, &e, sizeof e);
  std::memcpy(odd, &o, sizeof o);
}

constexpr int kPair = 2 * kLanes;

template <int M, int J>
inline void block_pairs(float* out, const float* x, const float* xp, const bf16* w, const float* bias, int K, int N,
                        size_t j0) {
  vec acc[M][J];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) acc[i][j] = vec{};
  const bf16* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  const int kp = K / kPair * kPair;
  for (int k = 0; k < kp; k += kPair) {
    vec even[J], odd[J];
    for (int j = 0; j < J; ++j) {
      split_pairs(&even[j], &odd[j], wr[j] + k);
      __builtin_prefetch(wr[j] + k + kPrefetchBlocks * size_t(J) * K);
    }
    for (int i = 0; i < M; ++i) {
      const vec xe = load(xp + size_t(i) * kp + k), xo = load(xp + size_t(i) * kp + k + kLanes);
      for (int j = 0; j < J; ++j) {
        acc[i][j] += xe * even[j];
        acc[i][j] += xo * odd[j];
      }
    }
  }
  for (int i = 0; i < M; ++i) {
    const float* xi = x + size_t(i) * K;
    for (int j = 0; j < J; ++j) {
      float s = hsum(acc[i][j]);
      for (int kk = kp; kk < K; ++kk) s += xi[kk] * bf16_to_float(wr[j][kk]);
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

#if defined(__AVX512BF16__)
// With AVX512_BF16 one vdpbf16ps multiplies 32 bf16 pairs and adds them into
// 16 float32 lanes, so bf16 weights cost one instruction per 32 instead of a
// widening and two FMAs: the products are exact (bf16 x bf16 fits a float),
// the inputs are the bf16 activations themselves (xb: x rounded, which is
// exact for widened bf16 values, the only kind the bf16 matmul passes), and
// per output the order is fixed (pairs within a lane, lanes block by block,
// then the scalar tail), the same whatever M is.
template <int M, int J>
inline void block_dpbf16(float* out, const float* x, const bf16* xb, const bf16* w, const float* bias, int K, int N,
                         size_t j0) {
  __m512 acc[M][J];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) acc[i][j] = _mm512_setzero_ps();
  const bf16* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  const int kp = K / kPair * kPair;
  for (int k = 0; k < kp; k += kPair) {
    __m512bh wv[J];
    for (int j = 0; j < J; ++j) {
      wv[j] = (__m512bh)_mm512_loadu_si512(wr[j] + k);
      __builtin_prefetch(wr[j] + k + kPrefetchBlocks * size_t(J) * K);
    }
    for (int i = 0; i < M; ++i) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xb + size_t(i) * K + k);
      for (int j = 0; j < J; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  for (int i = 0; i < M; ++i) {
    const float* xi = x + size_t(i) * K;
    for (int j = 0; j < J; ++j) {
      vec lanes;
      std::memcpy(&lanes, &acc[i][j], sizeof lanes);
      float s = hsum(lanes);
      for (int kk = kp; kk < K; ++kk) s += xi[kk] * bf16_to_float(wr[j][kk]);
      out[size_t(i) * N + j0 + j] = bias ? bias[j0 + j] + s : s;
    }
  }
}
#endif

template <int M>
void rows_bf16(float* out, const float* x, const bf16* w, const float* bias, int K, int N) {
  constexpr int J = cols<M>();
#if defined(__AVX512BF16__)
  std::vector<bf16> xb(static_cast<size_t>(M) * K);
  for (size_t i = 0; i < xb.size(); ++i) xb[i] = float_to_bf16(x[i]);
  parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
    size_t j = lo;
    for (; j + J <= hi; j += J) block_dpbf16<M, J>(out, x, xb.data(), w, bias, K, N, j);
    for (; j < hi; ++j) block_dpbf16<M, 1>(out, x, xb.data(), w, bias, K, N, j);
  });
  return;
#endif
  const int kp = K / kPair * kPair;
  std::vector<float> xp(static_cast<size_t>(M) * kp);
  for (int i = 0; i < M; ++i)
    for (int k = 0; k < kp; k += kPair)
      for (int l = 0; l < kLanes; ++l) {
        xp[size_t(i) * kp + k + l] = x[size_t(i) * K + k + 2 * l];
        xp[size_t(i) * kp + k + kLanes + l] = x[size_t(i) * K + k + 2 * l + 1];
      }
  parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
    size_t j = lo;
    for (; j + J <= hi; j += J) block_pairs<M, J>(out, x, xp.data(), w, bias, K, N, j);
    for (; j < hi; ++j) block_pairs<M, 1>(out, x, xp.data(), w, bias, K, N, j);
  });
}

}  // namespace

namespace {

// run(std::integral_constant<int, M>) for M in 1..kGemvMaxRows: the kernels
// are compiled per row count, so their accumulators stay in registers.
template <class Run>
void with_rows(int M, Run run) {
  switch (M) {
    case 1: return run(std::integral_constant<int, 1>{});
    case 2: return run(std::integral_constant<int, 2>{});
    case 3: return run(std::integral_constant<int, 3>{});
    case 4: return run(std::integral_constant<int, 4>{});
    case 5: return run(std::integral_constant<int, 5>{});
    case 6: return run(std::integral_constant<int, 6>{});
    case 7: return run(std::integral_constant<int, 7>{});
    case 8: return run(std::integral_constant<int, 8>{});
    default: return;
  }
}

}  // namespace

void gemv_rows(float* out, const float* inp, const float* weight, const float* bias, int M, int K, int N) {
  with_rows(M, [&](auto m) { rows<decltype(m)::value>(out, inp, weight, bias, K, N); });
}

void gemv_rows(float* out, const float* inp, const bf16* weight, const float* bias, int M, int K, int N) {
  with_rows(M, [&](auto m) { rows_bf16<decltype(m)::value>(out, inp, weight, bias, K, N); });
}

}  // namespace gptcuda
