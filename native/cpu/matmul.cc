#include <vector>

#include "backend_cpu.h"
#include "gemv.h"
#include "parallel.h"

#ifdef GPTCUDA_HAVE_CBLAS
#include <cblas.h>
#else
#include "gemm_blocked.h"
#endif

namespace gptcuda {

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

}  // namespace gptcuda
