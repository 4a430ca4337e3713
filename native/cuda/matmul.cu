// GEMM through cuBLAS. The interface is row-major; cuBLAS is column-major, and
// a row-major matrix is the column-major view of its transpose, so
//   C = op(A) op(B)  (row-major)  <=>  C^T = op(B)^T op(A)^T  (column-major)
// i.e. call cuBLAS with the operands swapped and M/N exchanged; the leading
// dimensions carry over unchanged.
//
// float32 GEMMs use TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32) unless
// GPTCUDA_TF32=0 or the GPU predates Ampere.
//
// matmul_forward with a bias uses cuBLASLt's BIAS epilogue (one kernel); when
// the pointers are not 16-byte aligned or cuBLASLt has no algorithm it falls
// back to cublasGemmEx plus a bias kernel. matmul_backward accumulates dinp with
// beta = 1, and dweight (beta = 1, or 0 when not accumulating) and dbias with
// the deterministic column reduction.
//
// bf16 storage: the same calls with CUDA_R_16BF operands and CUBLAS_COMPUTE_32F
// (float32 accumulation; the result, bias included, rounded to bf16 once).
#include <algorithm>
#include <type_traits>

#include "backend_cuda.cuh"
#include "column_reduce.cuh"

namespace gptcuda {
namespace {

// out[r, c] += bias[c] over a row-major [M, N] float matrix.
__global__ void add_bias_kernel(float* out, const float* bias, int M, int N) {
  cudak::grid_stride(static_cast<size_t>(M) * N, [&](size_t i) { out[i] += bias[i % N]; });
}

// out[r, c] = bias[c]: the bias in every row, for a GEMM that adds it (beta = 1).
template <class S>
__global__ void broadcast_bias_kernel(S* out, const S* bias, int M, int N) {
  cudak::grid_stride(static_cast<size_t>(M) * N, [&](size_t i) { out[i] = bias[i % N]; });
}

// C[r, c] = beta * C[r, c] for a row-major [M, N] block with row stride ldc
// (GEMM with K == 0). beta == 0 writes zeros, so NaNs in C do not survive.
template <class S>
__global__ void scale_matrix_kernel(S* C, int M, int N, int ldc, float beta) {
  cudak::grid_stride(static_cast<size_t>(M) * N, [&](size_t i) {
    S* p = C + (i / N) * static_cast<size_t>(ldc) + (i % N);
    *p = from_float<S>(beta == 0.f ? 0.f : beta * to_float(*p));
  });
}

cublasOperation_t to_op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// The compute type for storage type S: TF32 tensor cores for float when on;
// bf16 tensor cores accumulate in float32 whatever the setting.
template <class S>
cublasComputeType_t compute_type(bool tf32) {
  return cudak::cuda_type<S>() == CUDA_R_32F && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                     : CUBLAS_COMPUTE_32F;
}

}  // namespace

template <class S>
void CudaBackend::gemm_rowmajor(const char* op, bool transA, bool transB, int M, int N, int K,
                                float alpha, const S* A, int lda, const S* B, int ldb,
                                float beta, S* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (beta == 1.f) return;
    const unsigned grid = cudak::grid_for(static_cast<size_t>(M) * N, 256, sm_count_);
    scale_matrix_kernel<S><<<grid, 256, 0, stream_>>>(C, M, N, ldc, beta);
    cudak::check_launch(op);
    return;
  }
  constexpr cudaDataType_t type = cudak::cuda_type<S>();
  GPTCUDA_CHECK(op, cublasGemmEx(cublas_, to_op(transB), to_op(transA), N, M, K, &alpha, B, type,
                                 ldb, A, type, lda, &beta, C, type, ldc, compute_type<S>(tf32_),
                                 CUBLAS_GEMM_DEFAULT));
}

template <class S>
void CudaBackend::gemm_impl(bool transA, bool transB, int M, int N, int K, float alpha, const S* A,
                            int lda, const S* B, int ldb, float beta, S* C, int ldc) {
  begin_op("gemm");
  gemm_rowmajor("gemm", transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void CudaBackend::gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A,
                       int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  gemm_impl(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void CudaBackend::gemm(bool transA, bool transB, int M, int N, int K, float alpha, const bf16* A,
                       int lda, const bf16* B, int ldb, float beta, bf16* C, int ldc) {
  gemm_impl(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// Largest power of two (16 .. 256) dividing an address: cuBLASLt's heuristic
// derives the bias's and aux's alignment from their pointers.
static uint32_t alignment_class(const void* p) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 16 && addr % align != 0) align >>= 1;
  return align;
}

template <class S>
bool CudaBackend::matmul_lt(LtEpilogue epilogue, S* D, const S* weight, const S* B, const S* bias,
                            S* aux, int M, int K, int N) {
  constexpr cudaDataType_t type = cudak::cuda_type<S>();
  const bool dgelu = epilogue == LtEpilogue::kDGelu;
  // Column-major views (ld = rows throughout):
  //  bias, GELU: D[N, M] = (stored [K, N] weight)^T x (stored [K, M] inp), aux like D;
  //  DGELU:      D[K, M] = (stored [K, N] weight) x (stored [N, M] dout), aux like D.
  const uint64_t d_rows = dgelu ? K : N, b_rows = dgelu ? N : K;
  const uint32_t align = std::min(bias ? alignment_class(bias) : 256u, aux ? alignment_class(aux) : 256u);
  LtPlan& plan = lt_plans_[std::make_tuple(M, K, N, align, static_cast<int>(type), static_cast<int>(epilogue))];
  if (!plan.built) {
    // Build the plan once per shape, epilogue and alignment class: descriptors
    // + the heuristic's best algorithm. A failure anywhere leaves plan.ok
    // false: this case then always falls back.
    plan.built = true;
    if (cublasLtMatmulDescCreate(&plan.op, compute_type<S>(tf32_), CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) {
      plan.op = nullptr;
      return false;
    }
    const cublasOperation_t ta = dgelu ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = epilogue == LtEpilogue::kBias          ? CUBLASLT_EPILOGUE_BIAS
                                   : epilogue == LtEpilogue::kGeluAuxBias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                                                          : CUBLASLT_EPILOGUE_DGELU;
    const uint64_t ws = workspace_size_;
    const uint32_t min_align = 16;  // only called with 16-byte aligned pointers
    bool ok = true;
    auto step = [&ok](cublasStatus_t st) { ok = ok && st == CUBLAS_STATUS_SUCCESS; };
    step(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    step(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    step(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    // The heuristic does not dereference the bias or aux pointers but derives
    // their alignment from them (cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER);
    // left NULL it may pick a kernel that assumes more alignment than they have
    // (a "misaligned address" fault, which kills the context).
    // The bias and aux are stored like the output (S): cuBLASLt's default
    // types, so their DATA_TYPE attributes stay unset.
    if (bias)
      step(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    if (aux) {
      const int64_t aux_ld = static_cast<int64_t>(d_rows);
      step(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
      step(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld));
    }
    if (ok) step(cublasLtMatrixLayoutCreate(&plan.a, type, K, N, K));
    if (ok) step(cublasLtMatrixLayoutCreate(&plan.b, type, b_rows, M, b_rows));
    if (ok) step(cublasLtMatrixLayoutCreate(&plan.c, type, d_rows, M, d_rows));
    cublasLtMatmulPreference_t pref = nullptr;
    if (ok) step(cublasLtMatmulPreferenceCreate(&pref));
    if (ok) {
      step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &ws, sizeof ws));
      step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                &min_align, sizeof min_align));
      step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                &min_align, sizeof min_align));
      step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                &min_align, sizeof min_align));
      step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                &min_align, sizeof min_align));
    }
    if (ok) {
      cublasLtMatmulHeuristicResult_t result;
      int found = 0;
      step(cublasLtMatmulAlgoGetHeuristic(cublaslt_, plan.op, plan.a, plan.b, plan.c, plan.c, pref,
                                          1, &result, &found));
      ok = ok && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
      if (ok) plan.algo = result.algo;
    }
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    plan.ok = ok;
  }
  if (!plan.ok) return false;
  if (bias && cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                             sizeof bias) != CUBLAS_STATUS_SUCCESS)
    return false;
  if (aux && cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux,
                                            sizeof aux) != CUBLAS_STATUS_SUCCESS)
    return false;
  const float alpha = 1.f, beta = 0.f;
  const cublasStatus_t st =
      cublasLtMatmul(cublaslt_, plan.op, &alpha, weight, plan.a, B, plan.b, &beta, D, plan.c,
                     D, plan.c, &plan.algo, workspace_, workspace_size_, stream_);
  if (st != CUBLAS_STATUS_SUCCESS) {
    plan.ok = false;  // use the fallback for this case from now on
    return false;
  }
  return true;
}

template <class S>
void CudaBackend::matmul_forward_impl(S* out, const S* inp, const S* weight, const S* bias, int M,
                                      int K, int N) {
  const char* op = "matmul_forward";
  if (M <= 0 || N <= 0) return;
  begin_op(op);
  if (bias && K > 0 && cudak::aligned16(out) && cudak::aligned16(inp) &&
      cudak::aligned16(weight) && cudak::aligned16(bias) &&
      matmul_lt<S>(LtEpilogue::kBias, out, weight, inp, bias, nullptr, M, K, N))
    return;
  // The fallback: out = inp weight^T (K == 0 gives zeros) plus the bias.
  const unsigned grid = cudak::grid_for(static_cast<size_t>(M) * N, 256, sm_count_);
  if constexpr (std::is_same_v<S, float>) {
    gemm_rowmajor(op, false, true, M, N, K, 1.f, inp, K, weight, K, 0.f, out, N);
    if (bias) {
      add_bias_kernel<<<grid, 256, 0, stream_>>>(out, bias, M, N);
      cudak::check_launch(op);
    }
  } else {
    // bf16: the bias goes in first and the GEMM adds it (beta = 1) in float32,
    // so the result is rounded once, as the epilogue does; a bias added after
    // a rounded product would round twice, by a whole ulp where it cancels.
    if (bias) {
      broadcast_bias_kernel<S><<<grid, 256, 0, stream_>>>(out, bias, M, N);
      cudak::check_launch(op);
    }
    gemm_rowmajor(op, false, true, M, N, K, 1.f, inp, K, weight, K, bias ? 1.f : 0.f, out, N);
  }
}
void CudaBackend::matmul_forward(float* out, const float* inp, const float* weight,
                                 const float* bias, int M, int K, int N) {
  matmul_forward_impl(out, inp, weight, bias, M, K, N);
}
void CudaBackend::matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias,
                                 int M, int K, int N) {
  matmul_forward_impl(out, inp, weight, bias, M, K, N);
}

template <class S>
void CudaBackend::matmul_backward_impl(S* dinp, S* dweight, S* dbias, const S* dout, const S* inp,
                                       const S* weight, int M, int K, int N, bool accumulate) {
  const char* op = "matmul_backward";
  if (M <= 0 || N <= 0) return;
  begin_op(op);
  // dinp[M, K] += dout[M, N] weight[N, K]
  if (dinp && K > 0) gemm_rowmajor(op, false, false, M, K, N, 1.f, dout, N, weight, K, 1.f, dinp, K);
  // dweight[N, K] (+)= dout^T[N, M] inp[M, K]
  if (dweight && K > 0)
    gemm_rowmajor(op, true, false, N, K, M, 1.f, dout, N, inp, K, accumulate ? 1.f : 0.f, dweight, K);
  if (dbias) column_sum(op, dbias, dout, M, N, accumulate);
}
void CudaBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  const float* inp, const float* weight, int M, int K, int N,
                                  bool accumulate) {
  matmul_backward_impl(dinp, dweight, dbias, dout, inp, weight, M, K, N, accumulate);
}
void CudaBackend::matmul_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout,
                                  const bf16* inp, const bf16* weight, int M, int K, int N,
                                  bool accumulate) {
  matmul_backward_impl(dinp, dweight, dbias, dout, inp, weight, M, K, N, accumulate);
}

template <class S>
void CudaBackend::column_sum(const char* op, S* dst, const S* src, int rows, int cols, bool accumulate) {
  const int chunks = cudak::column_chunks(rows);
  float* part = static_cast<float*>(
      scratch(kScratchReduce, static_cast<size_t>(chunks) * cols * sizeof(float)));
  dim3 grid1(cudak::ceil_div(cols, 32), chunks);
  dim3 block1(32, cudak::kColLanes);
  cudak::column_partials_kernel<false, S><<<grid1, block1, 0, stream_>>>(
      part, nullptr, src, nullptr, nullptr, nullptr, rows, cols);
  cudak::check_launch(op);
  cudak::column_finish_kernel<S><<<cudak::ceil_div(cols, 256), 256, 0, stream_>>>(dst, nullptr, part,
                                                                               nullptr, chunks, cols, accumulate);
  cudak::check_launch(op);
}

// The MLP's GELU in the GEMMs' epilogues (bf16 only, as llm.c does; float32
// keeps the separate kernels, the reference path), unless GPTCUDA_GELU_FUSION=0.
// The epilogue's aux matrix needs a leading dimension divisible by 8 and, like
// every operand here, 16-byte alignment; anything else takes the fallback.
template <class S>
void CudaBackend::matmul_gelu_forward_impl(S* out, S* pre, const S* inp, const S* weight, const S* bias,
                                           int M, int K, int N) {
  if (M <= 0 || N <= 0) return;
  begin_op("matmul_gelu_forward");
  if (std::is_same_v<S, bf16> && gelu_fusion_ && bias && K > 0 && N % 8 == 0 && cudak::aligned16(out) &&
      cudak::aligned16(pre) && cudak::aligned16(inp) && cudak::aligned16(weight) && cudak::aligned16(bias) &&
      matmul_lt<S>(LtEpilogue::kGeluAuxBias, out, weight, inp, bias, pre, M, K, N))
    return;
  matmul_forward_impl(pre, inp, weight, bias, M, K, N);
  gelu_forward(out, static_cast<const S*>(pre), static_cast<size_t>(M) * N);
}
void CudaBackend::matmul_gelu_forward(float* out, float* pre, const float* inp, const float* weight,
                                      const float* bias, int M, int K, int N) {
  matmul_gelu_forward_impl(out, pre, inp, weight, bias, M, K, N);
}
void CudaBackend::matmul_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* weight,
                                      const bf16* bias, int M, int K, int N) {
  matmul_gelu_forward_impl(out, pre, inp, weight, bias, M, K, N);
}

template <class S>
void CudaBackend::gelu_matmul_backward_impl(S* dpre, S* dweight, S* dbias, const S* dout, const S* act,
                                            const S* pre, const S* weight, int M, int K, int N,
                                            bool accumulate) {
  const char* op = "gelu_matmul_backward";
  if (M <= 0) return;
  matmul_backward_impl<S>(nullptr, dweight, dbias, dout, act, weight, M, K, N, accumulate);
  if (K <= 0) return;  // no dpre to write (dbias still summed above)
  begin_op(op);
  // dpre[M, K] = (dout[M, N] weight[N, K]) * gelu'(pre)
  if (std::is_same_v<S, bf16> && gelu_fusion_ && N > 0 && K % 8 == 0 && cudak::aligned16(dpre) &&
      cudak::aligned16(dout) && cudak::aligned16(weight) && cudak::aligned16(pre) &&
      matmul_lt<S>(LtEpilogue::kDGelu, dpre, weight, dout, nullptr, const_cast<S*>(pre), M, K, N))
    return;
  gemm_rowmajor(op, false, false, M, K, N, 1.f, dout, N, weight, K, 0.f, dpre, K);
  gelu_grad_scale(dpre, pre, static_cast<size_t>(M) * K);
}
void CudaBackend::gelu_matmul_backward(float* dpre, float* dweight, float* dbias, const float* dout,
                                       const float* act, const float* pre, const float* weight, int M,
                                       int K, int N, bool accumulate) {
  gelu_matmul_backward_impl(dpre, dweight, dbias, dout, act, pre, weight, M, K, N, accumulate);
}
void CudaBackend::gelu_matmul_backward(bf16* dpre, bf16* dweight, bf16* dbias, const bf16* dout,
                                       const bf16* act, const bf16* pre, const bf16* weight, int M,
                                       int K, int N, bool accumulate) {
  gelu_matmul_backward_impl(dpre, dweight, dbias, dout, act, pre, weight, M, K, N, accumulate);
}

}  // namespace gptcuda
