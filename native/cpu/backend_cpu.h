// The CPU backend's class. Host memory is in backend_cpu.cc; each op's member
// function lives in the file named after the op (elementwise.cc, matmul.cc,
// attention.cc, ...), as in native/cuda. Semantics are documented on
// gptcuda::Backend.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "backend.h"

namespace gptcuda {

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::CPU; }
  const char* name() const override { return "cpu"; }

  void* alloc(size_t bytes) override;
  void release(void* ptr) override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void synchronize() override {}
  DeviceInfo device_info() override;
  size_t memory_in_use() const override { return in_use_; }
  size_t peak_memory() const override { return peak_; }
  void reset_peak_memory() override { peak_ = in_use_.load(); }

  void fill(float* x, size_t n, float value) override;
  void scale(float* x, size_t n, float s) override;
  void add(float* out, const float* a, const float* b, size_t n) override;
  void accumulate(float* dst, const float* src, size_t n) override;

  void embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe,
                         int B, int T, int C, int V, int pos0) override;
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                          int B, int T, int C, int pos0) override;

  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int N, int C) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int N, int C) override;

  void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A,
            int lda, const float* B, int ldb, float beta, float* C, int ldc) override;
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int M, int K, int N) override;
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int M, int K, int N) override;

  void gelu_forward(float* out, const float* inp, size_t n) override;
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override;

  void fill_normal(float* x, size_t n, float mean, float std, DropoutRng rng) override;
  void fill_uniform(float* x, size_t n, float lo, float hi, DropoutRng rng) override;
  void dropout_forward(float* out, const float* inp, size_t n, float p,
                       DropoutRng rng) override;
  void dropout_backward(float* dinp, const float* dout, size_t n, float p,
                        DropoutRng rng) override;

  void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                         int NH, float dropout_p, DropoutRng rng) override;
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                          const float* lse, int B, int T, int C, int NH, float dropout_p,
                          DropoutRng rng) override;
  void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B,
                        int Tn, int C, int NH, int Tmax, int pos0) override;

  void crossentropy_forward(float* losses, const float* logits, const int32_t* targets,
                            int N, int V, int ignore_index) override;
  void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                     const int32_t* targets, int N, int V, float dloss,
                                     int ignore_index) override;

  void adamw(float* params, const float* grads, float* m, float* v, size_t n, float lr,
             float beta1, float beta2, float eps, float weight_decay, int t) override;
  void sum_squares(float* out, const float* x, size_t n) override;
  void clip_by_norm(float* x, size_t n, const float* norm_sq, float max_norm) override;

 private:
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace gptcuda
