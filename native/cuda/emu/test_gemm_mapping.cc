// Checks the row-major -> column-major argument mapping used in matmul.cu
// against a column-major BLAS-semantics reference.
#include <cstdio>
#include <cmath>
#include <vector>
#include <random>
enum Op { N, T };
// column-major: C[m x n] = alpha op(A) op(B) + beta C, A stored with lda etc.
void sgemm_cm(Op ta, Op tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  for (int j = 0; j < n; ++j) for (int i = 0; i < m; ++i) {
    double s = 0;
    for (int p = 0; p < k; ++p) {
      double a = ta == N ? A[i + p*lda] : A[p + i*lda];
      double b = tb == N ? B[p + j*ldb] : B[j + p*ldb];
      s += a*b;
    }
    C[i + j*ldc] = alpha*s + beta*C[i + j*ldc];
  }
}
// gemm_rowmajor as in matmul.cu
void gemm_rowmajor(bool transA, bool transB, int M, int Nn, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  sgemm_cm(transB ? T : N, transA ? T : N, Nn, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
}
// Lt bias path: A = weight layout (K rows, N cols, ld K) op T; B = inp (K, M, ld K) op N; D (N, M, ld N) + bias[row]
void lt_bias(float* out, const float* inp, const float* w, const float* bias, int M, int K, int Nn) {
  sgemm_cm(T, N, Nn, M, K, 1.f, w, K, inp, K, 0.f, out, Nn);
  for (int j = 0; j < M; ++j) for (int i = 0; i < Nn; ++i) out[i + j*Nn] += bias[i];
}
int main() {
  std::mt19937 r(1); std::normal_distribution<float> d;
  int M = 5, K = 7, Nn = 3; double err = 0;
  auto rv = [&](int n) { std::vector<float> v(n); for (auto& x : v) x = d(r); return v; };
  auto inp = rv(M*K), w = rv(Nn*K), bias = rv(Nn), dout = rv(M*Nn);
  // forward
  std::vector<float> out(M*Nn), out2(M*Nn, 0.f);
  lt_bias(out.data(), inp.data(), w.data(), bias.data(), M, K, Nn);
  gemm_rowmajor(false, true, M, Nn, K, 1.f, inp.data(), K, w.data(), K, 0.f, out2.data(), Nn);
  for (int m = 0; m < M; ++m) for (int n = 0; n < Nn; ++n) {
    double s = bias[n]; for (int k = 0; k < K; ++k) s += inp[m*K+k]*w[n*K+k];
    err = std::max(err, std::fabs(out[m*Nn+n] - s)); err = std::max(err, std::fabs(out2[m*Nn+n] + bias[n] - s));
  }
  // backward
  auto dinp = rv(M*K), dw = rv(Nn*K); auto dinp0 = dinp, dw0 = dw;
  gemm_rowmajor(false, false, M, K, Nn, 1.f, dout.data(), Nn, w.data(), K, 1.f, dinp.data(), K);
  gemm_rowmajor(true, false, Nn, K, M, 1.f, dout.data(), Nn, inp.data(), K, 1.f, dw.data(), K);
  for (int m = 0; m < M; ++m) for (int k = 0; k < K; ++k) { double s = dinp0[m*K+k]; for (int n = 0; n < Nn; ++n) s += dout[m*Nn+n]*w[n*K+k]; err = std::max(err, std::fabs(dinp[m*K+k]-s)); }
  for (int n = 0; n < Nn; ++n) for (int k = 0; k < K; ++k) { double s = dw0[n*K+k]; for (int m = 0; m < M; ++m) s += dout[m*Nn+n]*inp[m*K+k]; err = std::max(err, std::fabs(dw[n*K+k]-s)); }
  // general gemm with transposes and padded leading dims: C[M,N] = A^T[M,K] B^T[K,N], A stored [K, lda=M+2], B stored [N, ldb=K+1]
  int lda = M+2, ldb = K+1, ldc = Nn+3;
  auto A = rv(K*lda), B = rv(Nn*ldb), C = rv(M*ldc); auto C0 = C;
  gemm_rowmajor(true, true, M, Nn, K, 0.5f, A.data(), lda, B.data(), ldb, 2.f, C.data(), ldc);
  for (int m = 0; m < M; ++m) for (int n = 0; n < Nn; ++n) { double s = 0; for (int k = 0; k < K; ++k) s += A[k*lda+m]*B[n*ldb+k]; s = 0.5*s + 2*C0[m*ldc+n]; err = std::max(err, std::fabs(C[m*ldc+n]-s)); }
  printf("%s gemm mapping: max err %.2e\n", err < 1e-4 ? "OK  " : "FAIL", err);
  return err < 1e-4 ? 0 : 1;
}
