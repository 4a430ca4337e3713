// The CUDA backend's class. Memory, streams, cuBLAS and error handling are in
// backend_cuda.cu; each op's kernels and its member function live in the file
// named after the op (elementwise.cu, matmul.cu, attention.cu, ...).
//
// Execution model: one CUDA stream. Every op enqueues its kernels (and cuBLAS
// calls) on it and returns; the host only waits in download() and
// synchronize(), which also report asynchronous failures (with the name of the
// last op enqueued) and device-side errors such as out-of-range token ids.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "cuda_common.cuh"

namespace gptcuda {

class NcclCollectives;

class CudaBackend final : public Backend {
 public:
  // Throws std::runtime_error with the reason when the GPU or cuBLAS is unusable.
  CudaBackend();
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  DeviceKind kind() const override { return DeviceKind::CUDA; }
  const char* name() const override { return name_.c_str(); }

  void* alloc(size_t bytes) override;
  void release(void* ptr) override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;
  DeviceInfo device_info() override;
  size_t memory_in_use() const override;
  size_t peak_memory() const override;
  void reset_peak_memory() override;

#define GPTCUDA_OP(name, params) void name params override;
#include "backend_ops.def"

  // NCCL (collectives.cu), loaded on the first call.
  Collectives* collectives(std::string* why) override;

 private:
  friend class NcclCollectives;  // enqueues on stream_ and names its ops in last_op_
  // The body both storage types' overrides of a typed op share: name_impl<S>
  // with the op's parameters (storage_t = S), defined next to the op (except
  // to_storage/from_storage, whose float and bf16 versions differ in kind).
#define GPTCUDA_OP(name, params) template <class S> void name##_impl params;
#define storage_t S
#include "backend_ops_typed.def"
#undef storage_t
#undef GPTCUDA_OP

  // Scratch buffers private to the ops, grown on demand and kept (no per-op
  // cudaMalloc). Ops on the one stream run in order, so a slot can be reused by
  // the next op; within one op each concurrent use needs its own slot.
  enum ScratchSlot {
    kScratchReduce = 0,   // column-sum / sum_squares partials
    kScratchAttnD,        // attention backward: D = rowsum(dout * out)
    kScratchSortKeys,     // embedding backward: sorted ids
    kScratchSortVals,     // embedding backward: positions in id order
    kScratchSortIn,       // embedding backward: unsorted positions
    kScratchSortTemp,     // embedding backward: CUB temporary storage
    kScratchCount
  };
  void* scratch(ScratchSlot slot, size_t bytes);

  // Marks the start of an op: the name reported for asynchronous errors.
  void begin_op(const char* op) { last_op_ = op; }

  // Marks op and launches a grid-stride kernel (cudak::grid_stride) over n
  // elements, n / 4 float4s rounded up when vec, on the stream: 256 threads a
  // block, enough blocks to fill the GPU. Nothing to do for n == 0.
  template <typename... P>
  void launch_grid_stride(const char* op, size_t n, bool vec, void (*kernel)(P...),
                          typename cudak::Exactly<P>::type... args) {
    if (n == 0) return;
    begin_op(op);
    constexpr int kBlock = 256;
    kernel<<<cudak::grid_for(vec ? (n + 3) / 4 : n, kBlock, sm_count_), kBlock, 0, stream_>>>(
        args...);
    cudak::check_launch(op);
  }
  // Throws for a failed cudaMemcpyAsync, naming the last op enqueued.
  void check_transfer(const char* where, cudaError_t err);
  // Copies the device error record back (after queued work) and throws if set.
  void check_device_errors(const char* where);

  // GEMM in row-major terms on cublasGemmEx (TF32 tensor cores unless disabled).
  // bf16: bf16 operands, float32 accumulation (CUBLAS_COMPUTE_32F), C rounded once.
  template <class S>
  void gemm_rowmajor(const char* op, bool transA, bool transB, int M, int N, int K,
                     float alpha, const S* A, int lda, const S* B, int ldb,
                     float beta, S* C, int ldc);
  // A Linear's GEMM through cuBLASLt with an epilogue; false when cuBLASLt has
  // no algorithm for this case (the caller then falls back). For a layer
  // inp[M, K] -> [M, N] with weight [N, K]:
  //   kBias:        D = inp weight^T + bias                        (B = inp)
  //   kGeluAuxBias: aux = inp weight^T + bias, D = gelu(that sum)  (B = inp)
  //   kDGelu:       D[M, K] = (dout weight) * gelu'(aux)           (B = dout)
  enum class LtEpilogue { kBias, kGeluAuxBias, kDGelu };
  template <class S>
  bool matmul_lt(LtEpilogue epilogue, S* D, const S* weight, const S* B, const S* bias, S* aux, int M,
                 int K, int N);
  // d[i] *= gelu'(inp[i]) (gelu.cu): the fallback of gelu_matmul_backward's epilogue.
  template <class S>
  void gelu_grad_scale(S* d, const S* inp, size_t n);
  // dst[c] (+)= sum over rows r of src[r*cols + c]: the deterministic two-pass
  // column reduction of column_reduce.cuh (matmul dbias), summed in float32
  // and rounded to S once per column; written instead when !accumulate.
  template <class S>
  void column_sum(const char* op, S* dst, const S* src, int rows, int cols, bool accumulate);

  // Attention on tensor cores (WMMA: TF32 for float storage, bf16 for bf16) on
  // sm_80+ when the head fits 64 dims, unless GPTCUDA_TF32=0: one switch for both
  // storage types, so that the CUDA-core kernels of either stay reachable.
  bool use_tc_attention(int hs) const { return tf32_ && cc_major_ >= 8 && hs <= 64; }

  // Frees cached blocks (after waiting for the stream) so cudaMalloc can retry.
  void trim_cache_locked();
  // Frees the stream, cuBLAS handles, workspace and error records that exist
  // (the destructor, and a constructor that fails half-way).
  void destroy_handles();

  int device_ = 0;
  int sm_count_ = 1;
  int cc_major_ = 0, cc_minor_ = 0;
  size_t max_smem_optin_ = 48 * 1024;
  std::string name_;
  std::string device_name_;
  bool tf32_ = true;
  bool gelu_fusion_ = true;  // GPTCUDA_GELU_FUSION=0: bf16 GELU in its own kernels

  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cublasLtHandle_t cublaslt_ = nullptr;
  void* workspace_ = nullptr;  // shared by cuBLAS and cuBLASLt (same stream)
  size_t workspace_size_ = 0;

  cudak::DeviceError* d_error_ = nullptr;  // device record written by kernels
  cudak::DeviceError* h_error_ = nullptr;  // pinned host copy
  const char* last_op_ = "(none)";

  // Created by collectives() on the first call; reset before the stream goes.
  std::unique_ptr<Collectives> collectives_;
  std::string collectives_why_;

  void* scratch_ptr_[kScratchCount] = {};
  size_t scratch_size_[kScratchCount] = {};

  // cuBLASLt plans (matmul_lt), keyed by shape, the bias's and aux's
  // alignment class (16..256 bytes, the smaller of the two): the heuristic
  // infers their alignment from the pointers set when the plan is built, so a
  // plan chosen for a 256-byte aligned bias must not run with a 16-byte
  // aligned one. The path is only taken with 16-byte aligned pointers, which
  // the plans assume.
  struct LtPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
    bool built = false;
    bool ok = false;  // false: no algorithm, use the fallback
  };
  // The key: M, K, N, alignment class, storage type (cudaDataType_t), LtEpilogue.
  std::map<std::tuple<int, int, int, uint32_t, int, int>, LtPlan> lt_plans_;

  // Memory accounting. Freed blocks are cached by size and reused (cudaFree
  // would synchronize the device); everything is on one stream, so a block
  // released by one op and handed out again is only touched after that op.
  // memory_in_use/peak_memory count the bytes of live tensors (as requested),
  // not the cache; device_info().free_memory sees the cache as used.
  mutable std::mutex mem_mutex_;
  std::unordered_map<void*, size_t> live_;       // ptr -> requested bytes
  std::multimap<size_t, void*> cache_;           // block bytes -> free block
  std::unordered_map<void*, size_t> rounded_;    // ptr -> block bytes (live + cached)
  size_t in_use_ = 0, peak_ = 0, cached_bytes_ = 0;
};

}  // namespace gptcuda
