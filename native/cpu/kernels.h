// The CPU backend's ops as free functions, one file each (mirrored by
// native/cuda/*.cu). Semantics are documented on gptcuda::Backend.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend.h"

namespace gptcuda::cpu {

void fill(float* x, size_t n, float value);
void scale(float* x, size_t n, float s);
void add(float* out, const float* a, const float* b, size_t n);
void accumulate(float* dst, const float* src, size_t n);
void fill_normal(float* x, size_t n, float mean, float std, DropoutRng rng);
void fill_uniform(float* x, size_t n, float lo, float hi, DropoutRng rng);

void embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                       int T, int C, int V, int pos0);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                        int T, int C, int pos0);

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C);

void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int M,
                    int K, int N);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int M, int K, int N);

void gelu_forward(float* out, const float* inp, size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n);

void dropout_forward(float* out, const float* inp, size_t n, float p, DropoutRng rng);
void dropout_backward(float* dinp, const float* dout, size_t n, float p, DropoutRng rng);

void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                       float dropout_p, DropoutRng rng);
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int B, int T, int C, int NH, float dropout_p,
                        DropoutRng rng);
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int Tn,
                      int C, int NH, int Tmax, int pos0);

void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V,
                          int ignore_index);
void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const int32_t* targets, int N, int V, float dloss,
                                   int ignore_index);

void adamw(float* params, const float* grads, float* m, float* v, size_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, int t);
void sum_squares(float* out, const float* x, size_t n);
void clip_by_norm(float* x, size_t n, const float* norm_sq, float max_norm);

}  // namespace gptcuda::cpu
