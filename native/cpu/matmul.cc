#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend_cpu.h"
#include "gelu.h"
#include "gemv.h"
#include "parallel.h"
#include "storage.h"

#ifdef GPTCUDA_HAVE_CBLAS
#include <cblas.h>
#else
#include "gemm_blocked.h"
#endif

namespace gptcuda {

namespace {

// Rows [r0, r0 + rows) x columns [c0, c0 + cols) of a bf16 matrix with row
// stride ld, widened into a packed float one (row stride cols).
void widen_block(float* dst, const bf16* p, int ld, int r0, int rows, int c0, int cols) {
  parallel_for(size_t(rows), 16, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) widen(dst + r * cols, p + (r0 + r) * size_t(ld) + c0, cols);
  });
}
void narrow_block(bf16* p, int ld, int r0, int rows, int c0, int cols, const float* src) {
  parallel_for(size_t(rows), 16, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) narrow(p + (r0 + r) * size_t(ld) + c0, src + r * cols, cols);
  });
}

// bf16 GEMM tiles: C is computed kMTile x kNTile at a time from widened
// panels of op(A) (kMTile rows, all K) and op(B) (all K, kNTile columns), so
// the float scratch stays a few tens of MB whatever the matrices; K is never
// split, so every element of C is one float32 sum rounded once. The B panel
// is widened once per column tile, the A panel once per tile: O(MK) work
// per column tile against the tile GEMMs' O(MNK).
constexpr int kMTile = 512, kNTile = 1024;

}  // namespace

void blas_set_threads(int n) {
#ifdef GPTCUDA_HAVE_CBLAS
  if (!std::getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(n);  // an explicit setting stands
#else
  (void)n;  // the internal GEMM runs on the pool (cpu_num_threads)
#endif
}

void CpuBackend::gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                      const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
#ifdef GPTCUDA_HAVE_CBLAS
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  sgemm_blocked(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

// bf16: tiles of float GEMMs (a BLAS where there is one) on widened panels.
void CpuBackend::gemm(bool transA, bool transB, int M, int N, int K, float alpha, const bf16* A, int lda,
                      const bf16* B, int ldb, float beta, bf16* C, int ldc) {
  if (M == 0 || N == 0) return;
  std::vector<float> a, b, c;
  for (int n0 = 0; n0 < N; n0 += kNTile) {
    const int nb = std::min(kNTile, N - n0);
    // op(B)[:, n0:n0+nb]: B stored [K, N], or [N, K] when transB
    b.resize(size_t(K) * nb);
    if (transB) widen_block(b.data(), B, ldb, n0, nb, 0, K);
    else widen_block(b.data(), B, ldb, 0, K, n0, nb);
    for (int m0 = 0; m0 < M; m0 += kMTile) {
      const int mb = std::min(kMTile, M - m0);
      // op(A)[m0:m0+mb, :]: A stored [M, K], or [K, M] when transA
      a.resize(size_t(mb) * K);
      if (transA) widen_block(a.data(), A, lda, 0, K, m0, mb);
      else widen_block(a.data(), A, lda, m0, mb, 0, K);
      c.resize(size_t(mb) * nb);
      // beta == 0: C is only written (it may hold NaNs), as in the float GEMM
      if (beta != 0.0f) widen_block(c.data(), C, ldc, m0, mb, n0, nb);
      gemm(transA, transB, mb, nb, K, alpha, a.data(), transA ? mb : K, b.data(), transB ? K : nb, beta, c.data(), nb);
      narrow_block(C, ldc, m0, mb, n0, nb, c.data());
    }
  }
}

// Broadcasting the bias into out first lets the GEMM add onto it (beta = 1),
// saving a second pass over the output.
void CpuBackend::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int M,
                                int K, int N) {
  if (M >= 1 && M <= kGemvMaxRows) return gemv_rows(out, inp, weight, bias, M, K, N);
  if (bias) {
    parallel_for(size_t(M), 16, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i)
        for (int j = 0; j < N; ++j) out[i * N + j] = bias[j];
    });
  }
  gemm(false, true, M, N, K, 1.0f, inp, K, weight, K, bias ? 1.0f : 0.0f, out, N);
}

void CpuBackend::matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int M, int K,
                                int N) {
  if (M <= 0 || N <= 0) return;
  if (M <= kGemvMaxRows) {
    // Decoding: the weight is read once, as bf16 (gemv.h); the few input rows are widened.
    std::vector<float> x(size_t(M) * K), b, y(size_t(M) * N);
    widen_block(x.data(), inp, K, 0, M, 0, K);
    if (bias) {
      b.resize(N);
      widen(b.data(), bias, N);
    }
    gemv_rows(y.data(), x.data(), weight, bias ? b.data() : nullptr, M, K, N);
    narrow_block(out, N, 0, M, 0, N, y.data());
    return;
  }
  // As for float: the bias (bf16 copied exactly) is what the GEMM adds onto, so out is rounded once.
  if (bias) {
    parallel_for(size_t(M), 16, [&](size_t lo, size_t hi) {
      for (size_t i = lo; i < hi; ++i) std::memcpy(out + i * N, bias, N * sizeof(bf16));
    });
  }
  gemm(false, true, M, N, K, 1.0f, inp, K, weight, K, bias ? 1.0f : 0.0f, out, N);
}

void CpuBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 const float* inp, const float* weight, int M, int K, int N, bool accumulate) {
  if (dinp) gemm(false, false, M, K, N, 1.0f, dout, N, weight, K, 1.0f, dinp, K);
  if (dweight) gemm(true, false, N, K, M, 1.0f, dout, N, inp, K, accumulate ? 1.0f : 0.0f, dweight, K);
  if (dbias) {
    // Column sums, parallel over column ranges so each thread owns its outputs.
    parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
      if (!accumulate) std::fill(dbias + lo, dbias + hi, 0.0f);
      for (int i = 0; i < M; ++i) {
        const float* row = dout + size_t(i) * N;
        for (size_t j = lo; j < hi; ++j) dbias[j] += row[j];
      }
    });
  }
}

// bf16: dinp's and dweight's sums (over N outputs, and over the M rows) are
// whole float32 sums in the tile GEMMs, added to the old value and rounded
// once; dbias's column sums likewise, in float32 per thread-owned column range.
void CpuBackend::matmul_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const bf16* inp,
                                 const bf16* weight, int M, int K, int N, bool accumulate) {
  if (dinp) gemm(false, false, M, K, N, 1.0f, dout, N, weight, K, 1.0f, dinp, K);
  if (dweight) gemm(true, false, N, K, M, 1.0f, dout, N, inp, K, accumulate ? 1.0f : 0.0f, dweight, K);
  if (dbias) {
    parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
      std::vector<float> acc(hi - lo, 0.0f);
      if (accumulate) widen(acc.data(), dbias + lo, hi - lo);
      for (int i = 0; i < M; ++i) {
        const bf16* row = dout + size_t(i) * N;
        for (size_t j = lo; j < hi; ++j) acc[j - lo] += bf16_to_float(row[j]);
      }
      narrow(dbias + lo, acc.data(), hi - lo);
    });
  }
}

// The CPU composes the fused ops from their parts: the same bits as the
// unfused model (matmul_forward, gelu_forward; matmul_backward into zeros,
// gelu_backward into zeros), one pass fewer over the [M, K] gradient.
namespace {
template <class S>
void matmul_gelu_forward_cpu(CpuBackend& be, S* out, S* pre, const S* inp, const S* weight, const S* bias,
                             int M, int K, int N) {
  be.matmul_forward(pre, inp, weight, bias, M, K, N);
  be.gelu_forward(out, pre, size_t(M) * N);
}
template <class S>
void gelu_matmul_backward_cpu(CpuBackend& be, S* dpre, S* dweight, S* dbias, const S* dout, const S* act,
                              const S* pre, const S* weight, int M, int K, int N, bool accumulate) {
  if (M <= 0) return;
  be.matmul_backward(nullptr, dweight, dbias, dout, act, weight, M, K, N, accumulate);
  be.gemm(false, false, M, K, N, 1.0f, dout, N, weight, K, 0.0f, dpre, K);
  gelu_grad_scale(dpre, pre, size_t(M) * K);
}
}  // namespace

void CpuBackend::matmul_gelu_forward(float* out, float* pre, const float* inp, const float* weight,
                                     const float* bias, int M, int K, int N) {
  matmul_gelu_forward_cpu(*this, out, pre, inp, weight, bias, M, K, N);
}
void CpuBackend::matmul_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* weight,
                                     const bf16* bias, int M, int K, int N) {
  matmul_gelu_forward_cpu(*this, out, pre, inp, weight, bias, M, K, N);
}
void CpuBackend::gelu_matmul_backward(float* dpre, float* dweight, float* dbias, const float* dout,
                                      const float* act, const float* pre, const float* weight, int M, int K,
                                      int N, bool accumulate) {
  gelu_matmul_backward_cpu(*this, dpre, dweight, dbias, dout, act, pre, weight, M, K, N, accumulate);
}
void CpuBackend::gelu_matmul_backward(bf16* dpre, bf16* dweight, bf16* dbias, const bf16* dout,
                                      const bf16* act, const bf16* pre, const bf16* weight, int M, int K,
                                      int N, bool accumulate) {
  gelu_matmul_backward_cpu(*this, dpre, dweight, dbias, dout, act, pre, weight, M, K, N, accumulate);
}

}  // namespace gptcuda
