// The op interface shared by the CPU and CUDA backends.
//
// Every op takes raw device pointers plus sizes; the addon glue has already
// checked shapes, dtypes, devices and lifetimes, so implementations only do
// arithmetic. Conventions (the same on every backend):
//   * float32 everywhere, row-major, innermost dimension last.
//   * Backward ops ACCUMULATE (+=) into every gradient they produce, like
//     llm.c and PyTorch's .grad. The caller zeroes gradient buffers once per
//     step. The one exception is the fused classifier, which writes (=) the
//     logits gradient so it can reuse the logits buffer in place.
//   * Linear layers use PyTorch's layout: weight [out, in], y = x W^T + b.
//   * qkv activations are [B, T, 3C]: Q in [0, C), K in [C, 2C), V in [2C, 3C),
//     head h at columns h*hs .. h*hs+hs-1 of each part.
//   * Dropout masks come from a counter-based RNG (philox.h) addressed by
//     (seed, stream, element index), so every backend draws the same mask and
//     a backward pass regenerates it instead of storing it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace gptcuda {

enum class DType : int32_t { F32 = 0, I32 = 1, BF16 = 2 };
enum class DeviceKind : int32_t { CPU = 0, CUDA = 1 };

inline size_t dtype_size(DType d) { return d == DType::BF16 ? 2 : 4; }
inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::I32: return "int32";
    case DType::BF16: return "bfloat16";
  }
  return "unknown";
}

struct DropoutRng {
  uint64_t seed = 0;    // user seed
  uint64_t stream = 0;  // distinct per (step, dropout site): see the SITES streams in ts/model/gpt.ts
};

struct DeviceInfo {
  std::string name;
  size_t total_memory = 0;
  size_t free_memory = 0;
  int compute_major = 0;
  int compute_minor = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual const char* name() const = 0;

  // ---- memory ---------------------------------------------------------------
  // alloc throws std::runtime_error naming the size (and free memory) on failure.
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // Waits for queued work; reports asynchronous failures of earlier ops.
  virtual void synchronize() = 0;
  virtual DeviceInfo device_info() = 0;
  // Bytes currently allocated and the high-water mark since the last reset.
  virtual size_t memory_in_use() const = 0;
  virtual size_t peak_memory() const = 0;
  virtual void reset_peak_memory() = 0;

  // ---- elementwise helpers ----------------------------------------------------
  virtual void fill(float* x, size_t n, float value) = 0;
  virtual void scale(float* x, size_t n, float s) = 0;
  virtual void add(float* out, const float* a, const float* b, size_t n) = 0;  // out = a + b
  virtual void accumulate(float* dst, const float* src, size_t n) = 0;         // dst += src

  // x[i] = mean + std * philox_normal(rng, i): seeded initialisation on the device.
  virtual void fill_normal(float* x, size_t n, float mean, float std, DropoutRng rng) = 0;
  // x[i] = lo + (hi - lo) * philox_uniform(rng, i).
  virtual void fill_uniform(float* x, size_t n, float lo, float hi, DropoutRng rng) = 0;

  // ---- token + position embedding ---------------------------------------------
  // out[b,t,:] = wte[ids[b,t],:] + wpe[pos0 + t,:]. ids are checked against V
  // (the CPU throws; the CUDA backend clamps and reports at the next sync).
  virtual void embedding_forward(float* out, const int32_t* ids, const float* wte,
                                 const float* wpe, int B, int T, int C, int V,
                                 int pos0) = 0;
  virtual void embedding_backward(float* dwte, float* dwpe, const float* dout,
                                  const int32_t* ids, int B, int T, int C,
                                  int pos0) = 0;

  // ---- LayerNorm over the last dimension (eps 1e-5, biased variance) ---------
  virtual void layernorm_forward(float* out, float* mean, float* rstd,
                                 const float* inp, const float* weight,
                                 const float* bias, int N, int C) = 0;
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias,
                                  const float* dout, const float* inp,
                                  const float* weight, const float* mean,
                                  const float* rstd, int N, int C) = 0;

  // ---- GEMM ---------------------------------------------------------------------
  // C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; leading dims as BLAS
  // row-major (lda = row stride of A as stored).
  virtual void gemm(bool transA, bool transB, int M, int N, int K, float alpha,
                    const float* A, int lda, const float* B, int ldb, float beta,
                    float* C, int ldc) = 0;
  // out[M,N] = inp[M,K] weight[N,K]^T + bias[N] (bias may be null).
  virtual void matmul_forward(float* out, const float* inp, const float* weight,
                              const float* bias, int M, int K, int N) = 0;
  // Any of dinp, dweight, dbias may be null when that gradient is not wanted.
  virtual void matmul_backward(float* dinp, float* dweight, float* dbias,
                               const float* dout, const float* inp,
                               const float* weight, int M, int K, int N) = 0;

  // ---- GELU (tanh approximation) -------------------------------------------------
  virtual void gelu_forward(float* out, const float* inp, size_t n) = 0;
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout,
                             size_t n) = 0;

  // ---- dropout (inverted: kept values scaled by 1/(1-p)) -------------------------
  virtual void dropout_forward(float* out, const float* inp, size_t n, float p,
                               DropoutRng rng) = 0;
  virtual void dropout_backward(float* dinp, const float* dout, size_t n, float p,
                                DropoutRng rng) = 0;

  // ---- fused causal self-attention -----------------------------------------------
  // out[B,T,C] = softmax(Q K^T / sqrt(hs) + causal mask) (dropout) V per head.
  // Saves only lse[B,NH,T] (log-sum-exp of each score row) for the backward,
  // which recomputes the probabilities.
  virtual void attention_forward(float* out, float* lse, const float* qkv, int B,
                                 int T, int C, int NH, float dropout_p,
                                 DropoutRng rng) = 0;
  virtual void attention_backward(float* dqkv, const float* dout, const float* qkv,
                                  const float* out, const float* lse, int B, int T,
                                  int C, int NH, float dropout_p,
                                  DropoutRng rng) = 0;
  // Inference with a KV cache: writes K and V of positions pos0..pos0+Tn-1 from
  // qkv[B,Tn,3C] into kcache/vcache[B,NH,Tmax,hs], then each new query attends
  // to cache positions 0..its own. No dropout.
  virtual void attention_decode(float* out, float* kcache, float* vcache,
                                const float* qkv, int B, int Tn, int C, int NH,
                                int Tmax, int pos0) = 0;

  // ---- classifier: softmax + cross-entropy over V --------------------------------
  // losses[i] = -log softmax(logits[i])[targets[i]], 0 where targets[i] == ignore.
  virtual void crossentropy_forward(float* losses, const float* logits,
                                    const int32_t* targets, int N, int V,
                                    int ignore_index) = 0;
  // Same losses, and dlogits = dloss * (softmax(logits) - onehot(target)) written
  // (not accumulated) in the same pass; dlogits may equal logits. Ignored rows get 0.
  virtual void crossentropy_forward_backward(float* losses, float* dlogits,
                                             const float* logits,
                                             const int32_t* targets, int N, int V,
                                             float dloss, int ignore_index) = 0;

  // ---- optimizer -------------------------------------------------------------------
  // AdamW with decoupled weight decay and bias correction; t is the 1-based step.
  virtual void adamw(float* params, const float* grads, float* m, float* v, size_t n,
                     float lr, float beta1, float beta2, float eps,
                     float weight_decay, int t) = 0;
  // out[0] = sum(x^2) (written, not accumulated: call once per buffer or add).
  virtual void sum_squares(float* out, const float* x, size_t n) = 0;
  // x *= min(1, max_norm / (sqrt(norm_sq[0]) + 1e-6)); norm_sq stays on the device.
  virtual void clip_by_norm(float* x, size_t n, const float* norm_sq,
                            float max_norm) = 0;
};

// The CPU backend always exists.
Backend* cpu_backend();

}  // namespace gptcuda

// The CUDA backend lives in its own shared library, loaded with dlopen so that
// an addon built with CUDA still loads where there is no driver or cuBLAS.
extern "C" {
typedef gptcuda::Backend* (*gptcuda_cuda_create_fn)(char* error, size_t error_len);
}
