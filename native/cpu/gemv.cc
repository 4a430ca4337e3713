#include "gemv.h"

#include <algorithm>
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

// The float kernel's registers: one 16-lane vector with AVX-512; below it,
// two 8-lane halves (lanes 0-7, 8-15), lane for lane the same arithmetic:
// GCC kept arrays of a 64-byte vector type on the stack on AVX2, moving
// them with scalar shuffles (13 GFLOP/s on 2 cores).
#ifdef __AVX512F__
constexpr int kPartLanes = kLanes;
#else
constexpr int kPartLanes = kLanes / 2;
#endif
constexpr int kParts = kLanes / kPartLanes;
typedef float part __attribute__((vector_size(kPartLanes * sizeof(float))));
inline part load_part(const float* p) {
  part v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The 16 lanes of an accumulator summed as a tree: lane i + lane i + 8, then
// + 4, + 2, + 1. In registers with shuffles: summing through a float[16] on
// the stack (each store read back in pieces, which store forwarding cannot
// serve) took longer than the block's FMAs at 8 rows.
typedef float f8 __attribute__((vector_size(8 * sizeof(float))));
typedef float f4 __attribute__((vector_size(4 * sizeof(float))));
typedef float f2 __attribute__((vector_size(2 * sizeof(float))));
inline float hsum8(f8 h) {
  const f4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  const f2 d = __builtin_shufflevector(q, q, 0, 1) + __builtin_shufflevector(q, q, 2, 3);
  return d[0] + d[1];
}
inline float hsum(vec v) {
  return hsum8(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}
// The same sum of an accumulator held as kParts parts (lanes 0-7 and 8-15 below AVX-512).
inline float hsum(const part (&p)[kParts]) {
#ifdef __AVX512F__
  return hsum(p[0]);
#else
  return hsum8(p[0] + p[1]);
#endif
}

// A block's accumulators over k in [k0, k1) of a K-long sum: they start at
// zero (k0 = 0) or where the previous range left them in `saved` (kLanes
// floats per accumulator, in acc's order), and go back there unless the
// range ends the sum. Continuing the same lanes keeps each output's order.
// (Accumulator by accumulator: a memset or memcpy of the whole array was a
// libc call that kept the array in memory.)
template <int M, int J>
inline void resume(part (&acc)[M][J][kParts], int k0, const float* saved) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j)
      for (int q = 0; q < kParts; ++q) {
        if (k0 == 0)
          acc[i][j][q] = part{};
        else
          std::memcpy(&acc[i][j][q], saved + (i * J + j) * kLanes + q * kPartLanes, sizeof(part));
      }
}
#if defined(__AVX512BF16__)
template <int M, int J>
inline void resume(__m512 (&acc)[M][J], int k0, const float* saved) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j)
      acc[i][j] = k0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(saved + (i * J + j) * kLanes);
}
#endif
template <class V, int M, int J>
inline bool suspend(const V (&acc)[M][J], int k1, int K, float* saved) {
  if (k1 == K) return false;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < J; ++j) std::memcpy(saved + (i * J + j) * kLanes, &acc[i][j], sizeof(V));
  return true;
}

// Outputs j0..j0+J-1 of all M rows over k in [k0, k1): J weight rows stream
// once through registers while the M input rows' range stays in L1.
template <int M, int J, bool kRanged>
inline void block(float* out, const float* x, const float* w, const float* bias, int K, int N, size_t j0, int k0,
                  int k1, float* saved) {
  if constexpr (!kRanged) k0 = 0, k1 = K;  // the whole sum, with bounds the compiler knows
  part acc[M][J][kParts];
  resume(acc, k0, saved);
  const float* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  const int kv = K / kLanes * kLanes;
  for (int k = k0; k < std::min(k1, kv); k += kLanes) {
    part wv[J][kParts];
    for (int j = 0; j < J; ++j) {
      for (int q = 0; q < kParts; ++q) wv[j][q] = load_part(wr[j] + k + q * kPartLanes);
      __builtin_prefetch(wr[j] + k + kPrefetchBlocks * size_t(J) * K);
    }
    for (int i = 0; i < M; ++i)
      for (int q = 0; q < kParts; ++q) {
        const part xv = load_part(x + size_t(i) * K + k + q * kPartLanes);
        for (int j = 0; j < J; ++j) acc[i][j][q] += xv * wv[j][q];
      }
  }
  if (suspend(acc, k1, K, saved)) return;
  for (int i = 0; i < M; ++i) {
    const float* xi = x + size_t(i) * K;
    for (int j = 0; j < J; ++j) {
      float s = hsum(acc[i][j]);
      for (int kk = kv; kk < K; ++kk) s += xi[kk] * wr[j][kk];
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
// Part q of the even and odd elements of the 32 bf16 at p (words q * kPartLanes ..).
inline void split_pairs(part* even, part* odd, const bf16* p, int q) {
  typedef uint32_t words __attribute__((vector_size(kPartLanes * sizeof(uint32_t))));
  words u;
  std::memcpy(&u, p + 2 * q * kPartLanes, sizeof u);
  const words e = u << 16, o = u & 0xffff0000u;
  std::memcpy(even, &e, sizeof e);
  std::memcpy(odd, &o, sizeof o);
}

constexpr int kPair = 2 * kLanes;

template <int M, int J, bool kRanged>
inline void block_pairs(float* out, const float* x, const float* xp, const bf16* w, const float* bias, int K, int N,
                        size_t j0, int k0, int k1, float* saved) {
  if constexpr (!kRanged) k0 = 0, k1 = K;  // the whole sum, with bounds the compiler knows
  part acc[M][J][kParts];
  resume(acc, k0, saved);
  const bf16* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  const int kp = K / kPair * kPair;
  for (int k = k0; k < std::min(k1, kp); k += kPair) {
    for (int j = 0; j < J; ++j) __builtin_prefetch(wr[j] + k + kPrefetchBlocks * size_t(J) * K);
    for (int q = 0; q < kParts; ++q) {
      part even[J], odd[J];
      for (int j = 0; j < J; ++j) split_pairs(&even[j], &odd[j], wr[j] + k, q);
      for (int i = 0; i < M; ++i) {
        const part xe = load_part(xp + size_t(i) * kp + k + q * kPartLanes);
        const part xo = load_part(xp + size_t(i) * kp + k + kLanes + q * kPartLanes);
        for (int j = 0; j < J; ++j) {
          acc[i][j][q] += xe * even[j];
          acc[i][j][q] += xo * odd[j];
        }
      }
    }
  }
  if (suspend(acc, k1, K, saved)) return;
  for (int i = 0; i < M; ++i) {
    const float* xi = x + size_t(i) * K;
    for (int j = 0; j < J; ++j) {
      float s = hsum(acc[i][j]);
      for (int kk = kp; kk < K; ++kk) s += xi[kk] * bf16_to_float(wr[j][kk]);
      out[size_t(i) * N + j0 + j] = bias ? bias[j0 + j] + s : s;
    }
  }
}

// Register budget: M * J accumulators plus J weight vectors (bf16: an even
// and an odd one) and an input vector, in 32 registers of a whole vec with
// AVX-512, or 16 of a part (half a vec) below it. A block takes at most
// kRowGroup = 4 input rows; more rows run as groups of 4 over the same J
// weight rows, which are still in L1 for the next group (with AVX-512, 8 rows
// as two groups of 4 x 4 outputs ran 1.3x faster than one block of 8 x 3 on a
// 2-core Xeon). Neither choice changes results (each output's sum is the same
// whatever M is). One row reads 4 weight rows a block, not the 8 its
// registers allow: streaming the 50257 x 768 LM head (and any K = 768
// matrix from memory) took 0.89-0.93x the time, fp32 and bf16, with fewer
// rows in flight; K = 3072 was the same either way.
constexpr int kRowGroup = 4;
#ifdef __AVX512F__
template <int M>
constexpr int cols() { return M == 1 ? 4 : (M == 2 ? 6 : 4); }
#else
template <int M>
constexpr int cols() { return M == 1 ? 3 : (M == 2 ? 2 : 1); }
#endif
constexpr int group_rows(int M) { return M < kRowGroup ? M : kRowGroup; }

// block<M, J> over the M rows in groups of at most kRowGroup (saved: the
// groups' accumulators one after another, as acc[M][J] would hold them).
template <int M, int J, bool kRanged>
inline void block_groups(float* out, const float* x, const float* w, const float* bias, int K, int N, size_t j0,
                         int k0, int k1, float* saved) {
  if constexpr (M > kRowGroup) {
    block<kRowGroup, J, kRanged>(out, x, w, bias, K, N, j0, k0, k1, saved);
    block_groups<M - kRowGroup, J, kRanged>(out + kRowGroup * size_t(N), x + kRowGroup * size_t(K), w, bias, K, N, j0,
                                            k0, k1, kRanged ? saved + kRowGroup * J * kLanes : nullptr);
  } else {
    block<M, J, kRanged>(out, x, w, bias, K, N, j0, k0, k1, saved);
  }
}

// block_pairs<M, J> over the M rows in groups of at most kRowGroup (xp: the
// reordered inputs, row stride kp).
template <int M, int J, bool kRanged>
inline void block_pairs_groups(float* out, const float* x, const float* xp, const bf16* w, const float* bias, int K,
                               int N, size_t j0, int k0, int k1, float* saved) {
  if constexpr (M > kRowGroup) {
    const size_t kp = size_t(K) / kPair * kPair;
    block_pairs<kRowGroup, J, kRanged>(out, x, xp, w, bias, K, N, j0, k0, k1, saved);
    block_pairs_groups<M - kRowGroup, J, kRanged>(out + kRowGroup * size_t(N), x + kRowGroup * size_t(K),
                                                  xp + kRowGroup * kp, w, bias, K, N, j0, k0, k1,
                                                  kRanged ? saved + kRowGroup * J * kLanes : nullptr);
  } else {
    block_pairs<M, J, kRanged>(out, x, xp, w, bias, K, N, j0, k0, k1, saved);
  }
}

// The inputs the FMAs read (M rows of a K range) must stay in L1 while the
// weight rows stream past them: from L2 they are more bytes per FMA than L2
// delivers (8 rows of K = 3072 ran at half the GFLOP/s of K = 768 with AVX2;
// 24 KB of inputs, 8 rows of K = 768, still ran best whole on the 48 KB L1
// of the Xeon measured, hence 32 KB). Where M rows of K do not fit
// kInputBytes, a thread sweeps its outputs kSweepRows at a time, over one K
// range after another, parking each block's accumulators between ranges
// (kSweepRows x M x 64 bytes, on the stack of sweep_ranges, a function of its
// own so that the whole-sum path does not carry that frame).
constexpr size_t kInputBytes = 32 * 1024;
constexpr int kSweepRows = 64;

// The K range one pass covers: all of K, or the most the M rows' inputs of
// `bytes` each fit in kInputBytes (a multiple of kPair, so bf16 pairs stay whole).
inline int range_length(int M, int K, size_t bytes) {
  const size_t fit = kInputBytes / (size_t(M) * bytes) / kPair * kPair;
  return fit >= size_t(K) ? K : static_cast<int>(std::max<size_t>(fit, kPair));
}

// Outputs [lo, hi) by blocks of J (then single outputs), each block run as
// run(integral_constant J, ranged, j0, k0, k1, saved) over K ranges of length
// kr; ranged (a bool_constant) is false where one range is all of K, so those
// blocks compile to plain whole sums.
template <int M, int J, class Run>
__attribute__((noinline)) void sweep_ranges(size_t lo, size_t hi, int K, int kr, Run run) {
  constexpr std::integral_constant<int, J> block_cols;
  constexpr std::integral_constant<int, 1> one_col;
  alignas(64) float saved[kSweepRows * M * kLanes];
  for (size_t r0 = lo; r0 < hi; r0 += kSweepRows) {
    const size_t r1 = std::min(hi, r0 + kSweepRows);
    for (int k0 = 0; k0 < K; k0 += kr) {
      const int k1 = std::min(K, k0 + kr);
      size_t j = r0;
      for (; j + J <= r1; j += J) run(block_cols, std::true_type{}, j, k0, k1, saved + (j - r0) * M * kLanes);
      for (; j < r1; ++j) run(one_col, std::true_type{}, j, k0, k1, saved + (j - r0) * M * kLanes);
    }
  }
}
template <int M, int J, class Run>
inline void sweep(size_t lo, size_t hi, int K, int kr, Run run) {
  if (kr < K) return sweep_ranges<M, J>(lo, hi, K, kr, run);
  size_t j = lo;
  for (; j + J <= hi; j += J) run(std::integral_constant<int, J>{}, std::false_type{}, j, 0, K, nullptr);
  for (; j < hi; ++j) run(std::integral_constant<int, 1>{}, std::false_type{}, j, 0, K, nullptr);
}

template <int M>
void rows(float* out, const float* x, const float* w, const float* bias, int K, int N) {
  constexpr int J = cols<group_rows(M)>();
  const int kr = range_length(M, K, sizeof(float));
  // A chunk of at least 64 weight rows (>= 192 KiB for K = 768) outweighs waking a thread.
  parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
    sweep<M, J>(lo, hi, K, kr, [&](auto cols, auto ranged, size_t j0, int k0, int k1, float* saved) {
      block_groups<M, decltype(cols)::value, decltype(ranged)::value>(out, x, w, bias, K, N, j0, k0, k1, saved);
    });
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
template <int M, int J, bool kRanged>
inline void block_dpbf16(float* out, const float* x, const bf16* xb, const bf16* w, const float* bias, int K, int N,
                         size_t j0, int k0, int k1, float* saved) {
  if constexpr (!kRanged) k0 = 0, k1 = K;
  __m512 acc[M][J];
  resume(acc, k0, saved);
  const bf16* wr[J];
  for (int j = 0; j < J; ++j) wr[j] = w + (j0 + j) * size_t(K);
  const int kp = K / kPair * kPair;
  for (int k = k0; k < std::min(k1, kp); k += kPair) {
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
  if (suspend(acc, k1, K, saved)) return;
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
  constexpr int J = cols<group_rows(M)>();
#if defined(__AVX512BF16__)
  std::vector<bf16> xb(static_cast<size_t>(M) * K);
  for (size_t i = 0; i < xb.size(); ++i) xb[i] = float_to_bf16(x[i]);
  const int kr = range_length(M, K, sizeof(bf16));
  parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
    sweep<M, J>(lo, hi, K, kr, [&](auto cols, auto ranged, size_t j0, int k0, int k1, float* saved) {
      block_dpbf16<M, decltype(cols)::value, decltype(ranged)::value>(out, x, xb.data(), w, bias, K, N, j0, k0, k1,
                                                                      saved);
    });
  });
#else
  const int kp = K / kPair * kPair;
  std::vector<float> xp(static_cast<size_t>(M) * kp);
  for (int i = 0; i < M; ++i)
    for (int k = 0; k < kp; k += kPair)
      for (int l = 0; l < kLanes; ++l) {
        xp[size_t(i) * kp + k + l] = x[size_t(i) * K + k + 2 * l];
        xp[size_t(i) * kp + k + kLanes + l] = x[size_t(i) * K + k + 2 * l + 1];
      }
  const int kr = range_length(M, K, sizeof(float));
  parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
    sweep<M, J>(lo, hi, K, kr, [&](auto cols, auto ranged, size_t j0, int k0, int k1, float* saved) {
      block_pairs_groups<M, decltype(cols)::value, decltype(ranged)::value>(out, x, xp.data(), w, bias, K, N, j0, k0,
                                                                            k1, saved);
    });
  });
#endif
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
