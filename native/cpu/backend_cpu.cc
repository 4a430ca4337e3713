// The CPU backend: host memory plus the ops in this folder.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "kernels.h"
#include "parallel.h"

namespace gptcuda {
namespace {

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::CPU; }
  const char* name() const override { return "cpu"; }

  void* alloc(size_t bytes) override {
    // 64-byte alignment: a cache line, and what AVX-512 loads like.
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) {
      throw std::runtime_error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    }
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = rounded;
    in_use_ += rounded;
    if (in_use_.load() > peak_.load()) peak_.store(in_use_.load());
    return p;
  }
  void release(void* ptr) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(ptr);
      if (it != sizes_.end()) {
        in_use_ -= it->second;
        sizes_.erase(it);
      }
    }
    std::free(ptr);
  }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }
  void synchronize() override {}
  DeviceInfo device_info() override {
    DeviceInfo info;
    info.name = "CPU (" + std::to_string(cpu_num_threads()) + " threads, GEMM: " GPTCUDA_BLAS_NAME ")";
    return info;
  }
  size_t memory_in_use() const override { return in_use_; }
  size_t peak_memory() const override { return peak_; }
  void reset_peak_memory() override { peak_ = in_use_.load(); }

  void fill(float* x, size_t n, float v) override { cpu::fill(x, n, v); }
  void scale(float* x, size_t n, float s) override { cpu::scale(x, n, s); }
  void add(float* out, const float* a, const float* b, size_t n) override { cpu::add(out, a, b, n); }
  void accumulate(float* dst, const float* src, size_t n) override { cpu::accumulate(dst, src, n); }
  void fill_normal(float* x, size_t n, float mean, float std, DropoutRng rng) override {
    cpu::fill_normal(x, n, mean, std, rng);
  }
  void fill_uniform(float* x, size_t n, float lo, float hi, DropoutRng rng) override {
    cpu::fill_uniform(x, n, lo, hi, rng);
  }

  void embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                         int T, int C, int V, int pos0) override {
    cpu::embedding_forward(out, ids, wte, wpe, B, T, C, V, pos0);
  }
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                          int T, int C, int pos0) override {
    cpu::embedding_backward(dwte, dwpe, dout, ids, B, T, C, pos0);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                         const float* b, int N, int C) override {
    cpu::layernorm_forward(out, mean, rstd, inp, w, b, N, C);
  }
  void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                          const float* w, const float* mean, const float* rstd, int N,
                          int C) override {
    cpu::layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
  }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) override {
    cpu::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int M, int K,
                      int N) override {
    cpu::matmul_forward(out, inp, w, bias, M, K, N);
  }
  void matmul_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                       const float* w, int M, int K, int N) override {
    cpu::matmul_backward(dinp, dw, db, dout, inp, w, M, K, N);
  }
  void gelu_forward(float* out, const float* inp, size_t n) override { cpu::gelu_forward(out, inp, n); }
  void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) override {
    cpu::gelu_backward(dinp, inp, dout, n);
  }
  void dropout_forward(float* out, const float* inp, size_t n, float p, DropoutRng rng) override {
    cpu::dropout_forward(out, inp, n, p, rng);
  }
  void dropout_backward(float* dinp, const float* dout, size_t n, float p, DropoutRng rng) override {
    cpu::dropout_backward(dinp, dout, n, p, rng);
  }
  void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                         float p, DropoutRng rng) override {
    cpu::attention_forward(out, lse, qkv, B, T, C, NH, p, rng);
  }
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                          const float* lse, int B, int T, int C, int NH, float p,
                          DropoutRng rng) override {
    cpu::attention_backward(dqkv, dout, qkv, out, lse, B, T, C, NH, p, rng);
  }
  void attention_decode(float* out, float* kc, float* vc, const float* qkv, int B, int Tn, int C,
                        int NH, int Tmax, int pos0) override {
    cpu::attention_decode(out, kc, vc, qkv, B, Tn, C, NH, Tmax, pos0);
  }
  void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V,
                            int ignore) override {
    cpu::crossentropy_forward(losses, logits, targets, N, V, ignore);
  }
  void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                     const int32_t* targets, int N, int V, float dloss,
                                     int ignore) override {
    cpu::crossentropy_forward_backward(losses, dlogits, logits, targets, N, V, dloss, ignore);
  }
  void adamw(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
             float eps, float wd, int t) override {
    cpu::adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t);
  }
  void sum_squares(float* out, const float* x, size_t n) override { cpu::sum_squares(out, x, n); }
  void clip_by_norm(float* x, size_t n, const float* norm_sq, float max_norm) override {
    cpu::clip_by_norm(x, n, norm_sq, max_norm);
  }

 private:
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace

Backend* cpu_backend() {
  static CpuBackend* backend = new CpuBackend();  // lives as long as the process
  return backend;
}

}  // namespace gptcuda
