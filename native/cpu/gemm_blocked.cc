// Internal SGEMM (see gemm_blocked.h). The structure follows Goto/BLIS:
//
//   for each NC-wide column panel of C            (jc)
//     for each KC-deep slice of K                 (pc)
//       pack op(B)[pc:pc+KC, jc:jc+NC]  -> B panel, NR-wide slivers (stays in L2)
//       for each MR-row sliver of C               (ir)
//         pack op(A)[ir:ir+MR, pc:pc+KC] -> A sliver (stays in L1)
//         for each NR-wide sliver of the panel    (jr)
//           micro-kernel: C[MR,NR] (+)= A sliver * B sliver, in registers
//
// Packing turns every transpose variant into the same contiguous, aligned
// layout, so one micro-kernel serves all four. The micro-kernel broadcasts MR
// values of A per k and multiplies them into NR/V vectors of B, keeping the
// MR x NR tile of C in vector registers for the whole KC loop.
//
// Threads: C is split into column strips (or row strips for tall, narrow
// problems), one per thread, and each thread runs the whole blocked loop on its
// strip with its own pack buffers; the split that packs less redundantly wins.
#include "gemm_blocked.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

#include "parallel.h"

#if defined(__AVX__)  // also set with AVX-512
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA)
#include <arm_neon.h>
#endif

namespace gptcuda {
namespace {

// ---- Vector type and micro-tile shape ------------------------------------------

#if defined(__AVX512F__)
// 32 zmm registers: 8 x 3 = 24 accumulators + 3 B vectors + broadcasts. MR = 8
// also divides the 512-row activations of GPT-2 training exactly.
constexpr int kVecLen = 16;
constexpr int kMR = 8;
constexpr int kNV = 3;
#elif defined(__AVX__)
// 16 ymm registers: 6 x 2 = 12 accumulators + 2 B vectors + 1 broadcast.
constexpr int kVecLen = 8;
constexpr int kMR = 6;
constexpr int kNV = 2;
#else
// SSE2 / NEON (16 or 32 128-bit registers): same 12-accumulator shape.
constexpr int kVecLen = 4;
constexpr int kMR = 6;
constexpr int kNV = 2;
#endif
constexpr int kNR = kVecLen * kNV;  // columns of C per micro-tile

typedef float vfloat __attribute__((vector_size(kVecLen * sizeof(float))));
typedef int vint __attribute__((vector_size(kVecLen * sizeof(int))));
// Types for accessing float arrays as vectors (may_alias: the memory is typed
// float): aligned (pack buffers) and at float alignment (C rows, sources).
typedef float vfloat_a __attribute__((vector_size(kVecLen * sizeof(float)), __may_alias__));
typedef float vfloat_u
    __attribute__((vector_size(kVecLen * sizeof(float)), aligned(4), __may_alias__));

// ---- Cache blocking ------------------------------------------------------------
// A sliver (KC x MR) stays in L1 while the kernel sweeps the B panel; the B
// panel (KC x NC) stays in L2 (2 MiB per core here) while the ir loop sweeps all
// rows of the thread's strip. KC = 384: A sliver 12 KiB of the 48 KiB L1; B panel
// 384 x 768 floats = 1.1 MiB. K and N are cut into near-equal blocks no larger
// than these, so e.g. K = 512 runs as 2 x 256 rather than 384 + 128.
#ifndef GPTCUDA_GEMM_KC  // overridable for tuning (scripts/gemm-harness)
#define GPTCUDA_GEMM_KC 384
#endif
#ifndef GPTCUDA_GEMM_NC
#define GPTCUDA_GEMM_NC 768
#endif
constexpr int kKC = GPTCUDA_GEMM_KC;
constexpr int kNC = GPTCUDA_GEMM_NC;  // multiple of kNR for every kernel shape above
static_assert(kNC % kNR == 0, "NC must be a multiple of NR");

// Below this many flops per thread, waking another thread costs more than it saves.
constexpr double kMinFlopsPerThread = 4e6;

// ---- Vector helpers ------------------------------------------------------------

inline vfloat broadcast(float x) {
#if defined(__AVX512F__)
  return (vfloat)_mm512_set1_ps(x);
#elif defined(__AVX__)
  return (vfloat)_mm256_set1_ps(x);
#else
  vfloat v;
  for (int i = 0; i < kVecLen; ++i) v[i] = x;
  return v;
#endif
}

// a * b + c, fused where the target has FMA (the build has no -ffp-contract
// guarantee: ISO modes turn contraction off).
inline vfloat fmadd(vfloat a, vfloat b, vfloat c) {
#if defined(__AVX512F__)
  return (vfloat)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__AVX__) && defined(__FMA__)
  return (vfloat)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA)
  return (vfloat)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);
#else
  return a * b + c;
#endif
}

inline vfloat load_u(const float* p) { return *reinterpret_cast<const vfloat_u*>(p); }
inline void store_u(float* p, vfloat v) { *reinterpret_cast<vfloat_u*>(p) = v; }
inline vfloat load_a(const float* p) { return *reinterpret_cast<const vfloat_a*>(p); }
inline void store_a(float* p, vfloat v) { *reinterpret_cast<vfloat_a*>(p) = v; }

// ---- Micro-kernel --------------------------------------------------------------

using Tile = vfloat[kMR][kNV];

// c = alpha * acc + beta * c over a full MR x NR tile; beta == 0 never reads c.
__attribute__((always_inline)) inline void store_tile(const Tile& acc, float* c, ptrdiff_t ldc,
                                                      float alpha, float beta) {
  const vfloat va = broadcast(alpha);
  if (beta == 0.0f) {
    for (int i = 0; i < kMR; ++i)
      for (int v = 0; v < kNV; ++v) store_u(c + i * ldc + v * kVecLen, va * acc[i][v]);
  } else if (beta == 1.0f) {
    for (int i = 0; i < kMR; ++i)
      for (int v = 0; v < kNV; ++v) {
        float* p = c + i * ldc + v * kVecLen;
        store_u(p, fmadd(va, acc[i][v], load_u(p)));
      }
  } else {
    const vfloat vb = broadcast(beta);
    for (int i = 0; i < kMR; ++i)
      for (int v = 0; v < kNV; ++v) {
        float* p = c + i * ldc + v * kVecLen;
        store_u(p, fmadd(va, acc[i][v], vb * load_u(p)));
      }
  }
}

// The same for the top-left mr x nr corner of a tile (edges of C), from the
// tile's values spilled to memory (tile[i * NR + j]). Out of line, so that
// the full-tile path keeps its accumulators in registers.
__attribute__((noinline)) void store_partial_tile(const float* tile, float* c, ptrdiff_t ldc,
                                                  int mr, int nr, float alpha, float beta) {
  for (int i = 0; i < mr; ++i) {
    const float* t = tile + i * kNR;
    float* row = c + i * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < nr; ++j) row[j] = alpha * t[j];
    } else {
      for (int j = 0; j < nr; ++j) row[j] = alpha * t[j] + beta * row[j];
    }
  }
}

// C[mr, nr] = alpha * sum_k a[k][:] (x) b[k][:] + beta * C, where a is a packed
// A sliver (a[k * MR + i]) and b a packed B sliver (b[k * NR + j]), both
// zero-padded to the full tile, so the loop never needs edge cases.
void micro_kernel(int kc, const float* __restrict a, const float* __restrict b, float* c,
                  ptrdiff_t ldc, int mr, int nr, float alpha, float beta) {
  // The tile's rows of C are touched only after the k loop; start fetching
  // them now so the loads/stores at the end do not stall.
  for (int i = 0; i < mr; ++i) {
    for (int j = 0; j < kNR; j += 16) __builtin_prefetch(c + i * ldc + j, 1);
    __builtin_prefetch(c + i * ldc + kNR - 1, 1);  // rows need not be line-aligned
  }
  Tile acc;
  for (int i = 0; i < kMR; ++i)
    for (int v = 0; v < kNV; ++v) acc[i][v] = vfloat{};
  int k = 0;
  do {  // kc >= 1: a do-loop lets the accumulators live in registers throughout
    vfloat bv[kNV];
    for (int v = 0; v < kNV; ++v) bv[v] = load_a(b + v * kVecLen);
    for (int i = 0; i < kMR; ++i) {
      const vfloat ai = broadcast(a[i]);
      for (int v = 0; v < kNV; ++v) acc[i][v] = fmadd(ai, bv[v], acc[i][v]);
    }
    a += kMR;
    b += kNR;
  } while (++k < kc);
  if (mr == kMR && nr == kNR) {
    store_tile(acc, c, ldc, alpha, beta);
  } else {
    alignas(64) float tile[kMR * kNR];
    for (int i = 0; i < kMR; ++i)
      for (int v = 0; v < kNV; ++v) store_a(tile + i * kNR + v * kVecLen, acc[i][v]);
    store_partial_tile(tile, c, ldc, mr, nr, alpha, beta);
  }
}

// ---- Packing -------------------------------------------------------------------

// A view of op(A) or op(B) as a K x X matrix (X = rows of C for A, columns of
// C for B): element (k, x) is at p[k * ks + x * xs]. Transposes only swap strides.
struct Operand {
  const float* p;
  ptrdiff_t ks;  // stride between consecutive k
  ptrdiff_t xs;  // stride between consecutive rows (A) / columns (B) of C
  const float* at(ptrdiff_t k, ptrdiff_t x) const { return p + k * ks + x * xs; }
};

#if defined(__AVX512F__)
// In-register transposes, built from the block-swap identity
// [[P, Q], [R, S]]^T = [[P^T, R^T], [Q^T, S^T]]: the stage with block size s
// swaps the off-diagonal s x s blocks of every 2s x 2s block; stages s = 8, 4, 2,
// 1 transpose 16 x 16. Each stage is one two-input shuffle per output vector.
constexpr int butterfly_index(int s, bool high, int c) {
  // Rows x and y = x + s; indices >= kVecLen select from y.
  return high ? ((c & s) ? kVecLen + c : c + s) : ((c & s) ? kVecLen + c - s : c);
}

// One output vector of a stage: a two-input shuffle with constant indices
// (__builtin_shufflevector: clang, GCC >= 12; __builtin_shuffle: older GCC).
template <int S, bool High, size_t... C>
inline vfloat butterfly_half(vfloat x, vfloat y, std::index_sequence<C...>) {
#if defined(__clang__) || __GNUC__ >= 12
  return __builtin_shufflevector(x, y, butterfly_index(S, High, static_cast<int>(C))...);
#else
  return __builtin_shuffle(x, y, vint{butterfly_index(S, High, static_cast<int>(C))...});
#endif
}

template <int S>
inline void butterfly(vfloat& x, vfloat& y) {
  constexpr auto seq = std::make_index_sequence<kVecLen>();
  const vfloat lo = butterfly_half<S, false>(x, y, seq);
  const vfloat hi = butterfly_half<S, true>(x, y, seq);
  x = lo;
  y = hi;
}

// Applies stage S to rows [0, n): pairs (r, r + S) within each block of 2S rows.
template <int S, int N>
inline void butterfly_stage(vfloat (&r)[N]) {
  for (int base = 0; base < N; base += 2 * S)
    for (int i = base; i < base + S; ++i) butterfly<S>(r[i], r[i + S]);
}

// dst[k * width + x] = src[x * xs + k] for x < 16, k < 16 (one 16 x 16 block of a
// transposed operand: k is contiguous in the source, x in the destination).
inline void transpose_pack_16x16(const float* src, ptrdiff_t xs, float* dst, int width) {
  vfloat r[16];
  for (int x = 0; x < 16; ++x) r[x] = load_u(src + x * xs);
  butterfly_stage<8>(r);
  butterfly_stage<4>(r);
  butterfly_stage<2>(r);
  butterfly_stage<1>(r);
  for (int k = 0; k < 16; ++k) store_u(dst + k * width, r[k]);
}

// dst[k * 8 + x] = src[x * xs + k] for x < 8, k < 16: an 8-row A sliver block.
// Stages 4, 2, 1 transpose both 8 x 8 halves (r[x] = [k = x | k = x + 8]);
// the stage-8 shuffle then pairs rows into consecutive k (r[2u], r[2u+1]).
inline void transpose_pack_8x16(const float* src, ptrdiff_t xs, float* dst) {
  vfloat r[8];
  for (int x = 0; x < 8; ++x) r[x] = load_u(src + x * xs);
  butterfly_stage<4>(r);
  butterfly_stage<2>(r);
  butterfly_stage<1>(r);
  for (int u = 0; u < 4; ++u) {
    vfloat even = r[2 * u], odd = r[2 * u + 1];
    butterfly<8>(even, odd);           // even = k 2u, 2u+1; odd = k 2u+8, 2u+9
    store_a(dst + 2 * u * 8, even);
    store_a(dst + (2 * u + 8) * 8, odd);
  }
}
#endif  // __AVX512F__

// Element-wise packing, any strides: dst[k * W + x] = op(k, x), zero for x >= n.
template <int W>
void pack_scalar(const Operand& src, int k0, int kc, int x0, int n, float* dst) {
  for (int k = 0; k < kc; ++k) {
    const float* s = src.at(k0 + k, x0);
    float* d = dst + k * W;
    for (int x = 0; x < n; ++x) d[x] = s[x * src.xs];
    for (int x = n; x < W; ++x) d[x] = 0.0f;
  }
}

// Packs op[k0:k0+kc, x0:x0+n] into dst[k * W + x] (W = MR for A, NR for B),
// zero-padding columns n..W. Picks a fast path for the layout at hand.
template <int W>
void pack_sliver(const Operand& src, int k0, int kc, int x0, int n, float* dst) {
  if (src.xs == 1 && n == W) {
    // x contiguous in the source (A^T, or B as stored): row copies. The fixed
    // trip count turns each into a few vector moves (not a memcpy call).
    for (int k = 0; k < kc; ++k) {
      const float* s = src.at(k0 + k, x0);
      float* d = dst + k * W;
      for (int x = 0; x < W; ++x) d[x] = s[x];
    }
    return;
  }
#if defined(__AVX512F__)
  if (src.ks == 1 && n == W && (W == 8 || W % 16 == 0)) {
    // k contiguous in the source (A as stored, or B^T): in-register transposes
    // of 16 k at a time; the last kc % 16 rows element-wise.
    const int k16 = kc & ~15;
    for (int k = 0; k < k16; k += 16) {
      if constexpr (W == 8) {
        transpose_pack_8x16(src.at(k0 + k, x0), src.xs, dst + k * 8);
      } else {
        for (int x = 0; x < W; x += 16)
          transpose_pack_16x16(src.at(k0 + k, x0 + x), src.xs, dst + k * W + x, W);
      }
    }
    pack_scalar<W>(src, k0 + k16, kc - k16, x0, n, dst + k16 * W);
    return;
  }
#endif
  pack_scalar<W>(src, k0, kc, x0, n, dst);
}

// Packs op(B)[k0:k0+kc, j0:j0+nc] as consecutive kc x NR slivers.
void pack_b_panel(const Operand& b, int k0, int kc, int j0, int nc, float* dst) {
  for (int j = 0; j < nc; j += kNR)
    pack_sliver<kNR>(b, k0, kc, j0 + j, std::min(kNR, nc - j), dst + j * kc);
}

// ---- Per-thread pack buffers ---------------------------------------------------

// Allocated once per thread (the pool's threads live for the process) and
// 64-byte aligned, so the kernel's B loads are aligned and the hot path never
// allocates.
struct PackBuffers {
  static constexpr size_t kAFloats = size_t(kKC) * kMR;
  static constexpr size_t kBFloats = size_t(kKC) * kNC;
  float* a;
  float* b;
  PackBuffers()
      : a(static_cast<float*>(::operator new(kAFloats * sizeof(float), std::align_val_t(64)))),
        b(static_cast<float*>(::operator new(kBFloats * sizeof(float), std::align_val_t(64)))) {}
  ~PackBuffers() {
    ::operator delete(a, std::align_val_t(64));
    ::operator delete(b, std::align_val_t(64));
  }
  PackBuffers(const PackBuffers&) = delete;
  PackBuffers& operator=(const PackBuffers&) = delete;
};

PackBuffers& pack_buffers() {
  thread_local PackBuffers buffers;
  return buffers;
}

// ---- Blocked loops -------------------------------------------------------------

// Splits [0, n) into the fewest blocks of at most max_block, of near-equal size
// rounded up to a multiple of `multiple`; returns that block size.
int balanced_block(int n, int max_block, int multiple) {
  const int blocks = (n + max_block - 1) / max_block;
  const int size = (n + blocks - 1) / blocks;
  return std::min(max_block, (size + multiple - 1) / multiple * multiple);
}

// C[m, n] = alpha * op(A) * op(B) + beta * C on one thread.
void gemm_serial(int m, int n, int k, float alpha, const Operand& a, const Operand& b,
                 float beta, float* c, ptrdiff_t ldc) {
  PackBuffers& buf = pack_buffers();
  const int nc_max = balanced_block(n, kNC, kNR);
  const int kc_max = balanced_block(k, kKC, 8);
  for (int jc = 0; jc < n; jc += nc_max) {
    const int nc = std::min(nc_max, n - jc);
    for (int pc = 0; pc < k; pc += kc_max) {
      const int kc = std::min(kc_max, k - pc);
      // Later K slices accumulate onto the first one's result.
      const float beta_pass = pc == 0 ? beta : 1.0f;
      pack_b_panel(b, pc, kc, jc, nc, buf.b);
      for (int ir = 0; ir < m; ir += kMR) {
        const int mr = std::min(kMR, m - ir);
        pack_sliver<kMR>(a, pc, kc, ir, mr, buf.a);
        float* c_row = c + ir * ldc + jc;
        for (int jr = 0; jr < nc; jr += kNR) {
          micro_kernel(kc, buf.a, buf.b + jr * kc, c_row + jr, ldc, mr,
                       std::min(kNR, nc - jr), alpha, beta_pass);
        }
      }
    }
  }
}

// C = beta * C (the K == 0 / alpha == 0 cases); beta == 0 writes zeros without reading.
void scale_c(int m, int n, float beta, float* c, ptrdiff_t ldc) {
  if (beta == 1.0f) return;
  for (int i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f) {
      std::fill(row, row + n, 0.0f);
    } else {
      for (int j = 0; j < n; ++j) row[j] *= beta;
    }
  }
}

}  // namespace

void sgemm_blocked(bool transA, bool transB, int M, int N, int K, float alpha,
                   const float* A, int lda, const float* B, int ldb, float beta,
                   float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  // op(A) as K x M and op(B) as K x N views (see Operand).
  const Operand a = transA ? Operand{A, lda, 1} : Operand{A, 1, lda};
  const Operand b = transB ? Operand{B, 1, ldb} : Operand{B, ldb, 1};

  const int tiles_m = (M + kMR - 1) / kMR;
  const int tiles_n = (N + kNR - 1) / kNR;
  const double flops = 2.0 * M * N * K;
  const int threads = static_cast<int>(std::min<double>(
      cpu_num_threads(), std::max(1.0, flops / kMinFlopsPerThread)));

  // Each thread packs all of the operand the split does not cut: column strips
  // re-pack A (M x K per NC panel), row strips re-pack B (K x N). Cut the one
  // whose redundant packing is smaller, if it has enough tiles to share.
  const int panels_per_strip = (N / std::max(1, threads) + kNC - 1) / kNC;
  const bool split_n =
      tiles_m < threads ||
      (tiles_n >= threads && double(M) * std::max(1, panels_per_strip) <= double(N));
  const int tiles = split_n ? tiles_n : tiles_m;
  if (threads <= 1 || tiles < 2) {
    gemm_serial(M, N, K, alpha, a, b, beta, C, ldc);
    return;
  }
  const size_t per_thread = static_cast<size_t>(std::max(1, tiles / threads));
  parallel_for(static_cast<size_t>(tiles), per_thread, [&](size_t begin, size_t end) {
    if (split_n) {
      const int j0 = static_cast<int>(begin) * kNR;
      const int j1 = std::min(N, static_cast<int>(end) * kNR);
      const Operand b_strip{b.at(0, j0), b.ks, b.xs};
      gemm_serial(M, j1 - j0, K, alpha, a, b_strip, beta, C + j0, ldc);
    } else {
      const int i0 = static_cast<int>(begin) * kMR;
      const int i1 = std::min(M, static_cast<int>(end) * kMR);
      const Operand a_strip{a.at(0, i0), a.ks, a.xs};
      gemm_serial(i1 - i0, N, K, alpha, a_strip, b, beta, C + ptrdiff_t(i0) * ldc, ldc);
    }
  });
}

}  // namespace gptcuda
