#include <vector>

#include "backend_cpu.h"
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

// A [rows, cols] bf16 matrix with row stride ld, widened into a packed float
// one (row stride cols), in parallel over rows.
std::vector<float> widen_matrix(const bf16* p, int rows, int cols, int ld) {
  std::vector<float> out(size_t(rows) * cols);
  parallel_for(size_t(rows), 16, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) widen(out.data() + r * cols, p + r * size_t(ld), cols);
  });
  return out;
}
void narrow_matrix(bf16* p, const float* src, int rows, int cols, int ld) {
  parallel_for(size_t(rows), 16, [&](size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; ++r) narrow(p + r * size_t(ld), src + r * cols, cols);
  });
}

}  // namespace

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

// bf16: the operands are widened to float and the float GEMM runs on them
// (float32 accumulation, a BLAS where there is one); C is rounded once.
// Widening whole operands costs 2 bytes of scratch per 2-byte element read,
// far less time than the GEMM itself for the shapes a model has.
void CpuBackend::gemm(bool transA, bool transB, int M, int N, int K, float alpha, const bf16* A, int lda,
                      const bf16* B, int ldb, float beta, bf16* C, int ldc) {
  if (M == 0 || N == 0) return;
  std::vector<float> a = widen_matrix(A, transA ? K : M, transA ? M : K, lda);
  std::vector<float> b = widen_matrix(B, transB ? N : K, transB ? K : N, ldb);
  // beta == 0: C is only written (it may hold NaNs), as in the float GEMM.
  std::vector<float> c = beta != 0.0f ? widen_matrix(C, M, N, ldc) : std::vector<float>(size_t(M) * N);
  gemm(transA, transB, M, N, K, alpha, a.data(), transA ? M : K, b.data(), transB ? K : N, beta, c.data(), N);
  narrow_matrix(C, c.data(), M, N, ldc);
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
  std::vector<float> x = widen_matrix(inp, M, K, K), b;
  if (bias) b = widen_matrix(bias, 1, N, N);
  std::vector<float> y(size_t(M) * N);
  if (M <= kGemvMaxRows) {
    // Decoding: the weight is read once, as bf16 (gemv.h).
    gemv_rows(y.data(), x.data(), weight, bias ? b.data() : nullptr, M, K, N);
  } else {
    std::vector<float> w = widen_matrix(weight, N, K, K);
    matmul_forward(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, M, K, N);
  }
  narrow_matrix(out, y.data(), M, N, N);
}

void CpuBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                 const float* inp, const float* weight, int M, int K, int N) {
  if (dinp) gemm(false, false, M, K, N, 1.0f, dout, N, weight, K, 1.0f, dinp, K);
  if (dweight) gemm(true, false, N, K, M, 1.0f, dout, N, inp, K, 1.0f, dweight, K);
  if (dbias) {
    // Column sums, parallel over column ranges so each thread owns its outputs.
    parallel_for(size_t(N), 64, [&](size_t lo, size_t hi) {
      for (int i = 0; i < M; ++i) {
        const float* row = dout + size_t(i) * N;
        for (size_t j = lo; j < hi; ++j) dbias[j] += row[j];
      }
    });
  }
}

// bf16: the float backward on widened copies, so every gradient (dweight's
// and dbias's sums over the M rows included) accumulates in float32 onto its
// old value and is rounded once.
void CpuBackend::matmul_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const bf16* inp,
                                 const bf16* weight, int M, int K, int N) {
  if (!dinp && !dweight && !dbias) return;
  std::vector<float> d = widen_matrix(dout, M, N, N), x, w, gx, gw, gb;
  if (dinp) {
    w = widen_matrix(weight, N, K, K);
    gx = widen_matrix(dinp, M, K, K);
  }
  if (dweight) {
    x = widen_matrix(inp, M, K, K);
    gw = widen_matrix(dweight, N, K, K);
  }
  if (dbias) gb = widen_matrix(dbias, 1, N, N);
  matmul_backward(dinp ? gx.data() : nullptr, dweight ? gw.data() : nullptr, dbias ? gb.data() : nullptr, d.data(),
                  x.data(), w.data(), M, K, N);
  if (dinp) narrow_matrix(dinp, gx.data(), M, K, K);
  if (dweight) narrow_matrix(dweight, gw.data(), N, K, K);
  if (dbias) narrow_matrix(dbias, gb.data(), 1, N, N);
}

}  // namespace gptcuda
