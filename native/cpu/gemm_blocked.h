// Internal single-precision GEMM: the matmuls when the build finds no system
// BLAS, and always attention's per-head products (serial inside its
// (batch, head) tasks, where a threaded BLAS would oversubscribe).
// Goto/BLIS-style: packed panels, cache blocking and a register-blocked
// micro-kernel written with GCC vector extensions, run on the CPU thread pool.
#pragma once

namespace gptcuda {

// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T.
// lda/ldb/ldc are the row strides of the matrices as stored (row-major BLAS
// convention, i.e. the same meaning as cblas_sgemm(CblasRowMajor, ...)):
// A is stored [M,K] (or [K,M] when transA), B is stored [K,N] (or [N,K] when
// transB). When beta == 0, C is only written, never read (it may hold NaNs).
// Runs on up to cpu_num_threads() threads; serial when called from inside a
// parallel_for region.
void sgemm_blocked(bool transA, bool transB, int M, int N, int K, float alpha,
                   const float* A, int lda, const float* B, int ldb, float beta,
                   float* C, int ldc);

}  // namespace gptcuda
