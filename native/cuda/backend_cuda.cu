// CudaBackend: device setup, memory, transfers, synchronisation, errors, and
// the exported factory the addon finds with dlsym.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "backend_cuda.cuh"

namespace gptcuda {

using cudak::DeviceError;

namespace {

std::string gib(size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

// Blocks are cached by their rounded size, so nearby requests share blocks.
size_t round_alloc(size_t bytes) {
  const size_t g = bytes <= (1u << 20) ? 512 : (size_t{1} << 16);
  return (bytes + g - 1) / g * g;
}

const size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLAS recommends 32 MiB on Hopper

}  // namespace

CudaBackend::CudaBackend() {
  const char* op = "CUDA backend init";
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    std::string why = err == cudaErrorNoDevice ? "no CUDA device"
                      : (err == cudaErrorInsufficientDriver || err == cudaErrorStubLibrary)
                          ? "no usable CUDA driver (libcuda missing, or older than this "
                            "CUDA " + std::to_string(CUDART_VERSION / 1000) + " build needs)"
                          : "CUDA unavailable";
    throw std::runtime_error(why + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
  if (count <= 0) throw std::runtime_error("no CUDA device");
  if (const char* d = std::getenv("GPTCUDA_DEVICE")) {
    device_ = std::atoi(d);
    if (device_ < 0 || device_ >= count)
      throw std::runtime_error("GPTCUDA_DEVICE=" + std::string(d) + " but only " +
                               std::to_string(count) + " CUDA device(s)");
  } else if (const char* l = std::getenv("GPTCUDA_LOCAL_RANK")) {
    // A data-parallel rank (set by ts/train/distributed.ts): one GPU per rank
    // on its machine. Modulo the count, so a launcher that shows each rank its
    // own GPU (Slurm's --gpus-per-task) gets device 0 everywhere.
    device_ = std::max(0, std::atoi(l)) % count;
  }
  GPTCUDA_CHECK(op, cudaSetDevice(device_));
  GPTCUDA_CHECK(op, cudaFree(nullptr));  // creates the context now, not in the first op

  cudaDeviceProp prop;
  GPTCUDA_CHECK(op, cudaGetDeviceProperties(&prop, device_));
  sm_count_ = prop.multiProcessorCount;
  cc_major_ = prop.major;
  cc_minor_ = prop.minor;
  max_smem_optin_ = prop.sharedMemPerBlockOptin;
  device_name_ = prop.name;
  name_ = "cuda:" + std::to_string(device_) + " (" + device_name_ + ")";

  // TF32 tensor cores for float32 GEMMs on Ampere and newer unless GPTCUDA_TF32=0.
  const char* tf = std::getenv("GPTCUDA_TF32");
  tf32_ = cc_major_ >= 8 && !(tf && std::strcmp(tf, "0") == 0);
  const char* gf = std::getenv("GPTCUDA_GELU_FUSION");
  gelu_fusion_ = !(gf && std::strcmp(gf, "0") == 0);

  // From here on, a failure must undo what was created: the destructor does
  // not run for a constructor that throws.
  try {
    GPTCUDA_CHECK(op, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    cublasStatus_t st = cublasCreate(&cublas_);
    if (st != CUBLAS_STATUS_SUCCESS) {
      cublas_ = nullptr;
      throw std::runtime_error(std::string("cuBLAS init failed with status ") +
                               cublasGetStatusName(st) + " (" + cublasGetStatusString(st) + ")");
    }
    st = cublasLtCreate(&cublaslt_);
    if (st != CUBLAS_STATUS_SUCCESS) {
      cublaslt_ = nullptr;
      throw std::runtime_error(std::string("cuBLASLt init failed with status ") +
                               cublasGetStatusName(st) + " (" + cublasGetStatusString(st) + ")");
    }
    GPTCUDA_CHECK(op, cudaMalloc(&workspace_, kWorkspaceBytes));
    workspace_size_ = kWorkspaceBytes;
    GPTCUDA_CHECK(op, cublasSetStream(cublas_, stream_));
    GPTCUDA_CHECK(op, cublasSetWorkspace(cublas_, workspace_, workspace_size_));
    GPTCUDA_CHECK(op, cublasSetMathMode(cublas_, tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH
                                                       : CUBLAS_DEFAULT_MATH));
    GPTCUDA_CHECK(op, cublasSetPointerMode(cublas_, CUBLAS_POINTER_MODE_HOST));

    GPTCUDA_CHECK(op, cudaMalloc(&d_error_, sizeof(DeviceError)));
    GPTCUDA_CHECK(op, cudaMemset(d_error_, 0, sizeof(DeviceError)));
    GPTCUDA_CHECK(op, cudaMallocHost(&h_error_, sizeof(DeviceError)));
    std::memset(h_error_, 0, sizeof(DeviceError));
    GPTCUDA_CHECK(op, cudaDeviceSynchronize());
  } catch (...) {
    destroy_handles();
    throw;
  }
}

CudaBackend::~CudaBackend() {
  // Never throws: errors here have nowhere to go.
  cudaStreamSynchronize(stream_);
  collectives_.reset();
  for (auto& kv : lt_plans_) {
    LtPlan& p = kv.second;
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.op) cublasLtMatmulDescDestroy(p.op);
  }
  for (int i = 0; i < kScratchCount; ++i)
    if (scratch_ptr_[i]) cudaFree(scratch_ptr_[i]);
  for (auto& kv : rounded_) cudaFree(kv.first);  // live and cached blocks
  destroy_handles();
}

void CudaBackend::destroy_handles() {
  if (h_error_) cudaFreeHost(h_error_);
  if (d_error_) cudaFree(d_error_);
  if (workspace_) cudaFree(workspace_);
  if (cublaslt_) cublasLtDestroy(cublaslt_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

// ---- memory ---------------------------------------------------------------------------

void* CudaBackend::alloc(size_t bytes) {
  std::lock_guard<std::mutex> lock(mem_mutex_);
  const size_t rb = round_alloc(bytes == 0 ? 1 : bytes);
  void* p = nullptr;
  // Best fit among cached blocks, wasting at most a quarter of the block.
  auto it = cache_.lower_bound(rb);
  if (it != cache_.end() && it->first <= rb + rb / 4) {
    p = it->second;
    cached_bytes_ -= it->first;
    cache_.erase(it);
  } else {
    cudaError_t err = cudaMalloc(&p, rb);
    if (err == cudaErrorMemoryAllocation && !cache_.empty()) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      trim_cache_locked();
      err = cudaMalloc(&p, rb);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      if (err == cudaErrorMemoryAllocation)
        throw std::runtime_error("CUDA out of memory allocating " + gib(bytes) + " (free " +
                                 gib(free_b) + " of " + gib(total_b) + "; " + gib(in_use_) +
                                 " in use by gptcuda tensors)");
      cudak::throw_failure(err, "alloc", "cudaMalloc");
    }
    rounded_[p] = rb;
  }
  live_[p] = bytes;
  in_use_ += bytes;
  if (in_use_ > peak_) peak_ = in_use_;
  return p;
}

void CudaBackend::trim_cache_locked() {
  // The stream may still use memory the host already released; wait for it.
  cudaStreamSynchronize(stream_);
  for (auto& kv : cache_) {
    cudaFree(kv.second);
    rounded_.erase(kv.second);
  }
  cache_.clear();
  cached_bytes_ = 0;
}

void CudaBackend::release(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mem_mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) throw std::runtime_error("release: pointer was not allocated by this CUDA backend");
  in_use_ -= it->second;
  live_.erase(it);
  // Kept for reuse (cudaFree would wait for the whole device). The cache is
  // emptied when cudaMalloc runs out of memory, then the allocation retried.
  const size_t rb = rounded_[ptr];
  cache_.emplace(rb, ptr);
  cached_bytes_ += rb;
}

void* CudaBackend::scratch(ScratchSlot slot, size_t bytes) {
  if (bytes == 0) bytes = 4;
  if (scratch_size_[slot] >= bytes) return scratch_ptr_[slot];
  if (scratch_ptr_[slot]) {
    // Earlier queued work may still read the old buffer.
    GPTCUDA_CHECK(last_op_, cudaStreamSynchronize(stream_));
    GPTCUDA_CHECK(last_op_, cudaFree(scratch_ptr_[slot]));
    scratch_ptr_[slot] = nullptr;
    scratch_size_[slot] = 0;
  }
  // Grow geometrically so a slowly growing size does not reallocate every call.
  size_t want = bytes + bytes / 4;
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, want);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    {
      std::lock_guard<std::mutex> lock(mem_mutex_);
      trim_cache_locked();
    }
    want = bytes;
    err = cudaMalloc(&p, want);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw std::runtime_error(std::string(last_op_) + ": CUDA out of memory allocating " +
                             gib(want) + " of scratch (free " + gib(free_b) + " of " +
                             gib(total_b) + ")");
  }
  scratch_ptr_[slot] = p;
  scratch_size_[slot] = want;
  return p;
}

size_t CudaBackend::memory_in_use() const {
  std::lock_guard<std::mutex> lock(mem_mutex_);
  return in_use_;
}
size_t CudaBackend::peak_memory() const {
  std::lock_guard<std::mutex> lock(mem_mutex_);
  return peak_;
}
void CudaBackend::reset_peak_memory() {
  std::lock_guard<std::mutex> lock(mem_mutex_);
  peak_ = in_use_;
}

// ---- transfers and synchronisation ----------------------------------------------------------

void CudaBackend::upload(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  // From pageable memory the copy is staged before this returns, so the caller
  // may reuse host_src at once; the device side stays ordered on the stream.
  check_transfer("upload", cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
  begin_op("upload");
}

void CudaBackend::download(void* host_dst, const void* src, size_t bytes) {
  if (bytes > 0) {
    check_transfer("download",
                   cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  }
  check_device_errors("download");
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  check_transfer("copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  begin_op("copy");
}

void CudaBackend::synchronize() { check_device_errors("synchronize"); }

void CudaBackend::check_transfer(const char* where, cudaError_t err) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  // A copy also fails when earlier queued work hit an asynchronous error.
  throw std::runtime_error(std::string(where) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + "); last op enqueued before it: " + last_op_);
}

void CudaBackend::check_device_errors(const char* where) {
  // The record's copy is queued behind all earlier work, so one wait covers both.
  cudaError_t err = cudaMemcpyAsync(h_error_, d_error_, sizeof(DeviceError),
                                    cudaMemcpyDeviceToHost, stream_);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream_);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string(where) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ") in queued GPU work; last op enqueued: " +
                             last_op_);
  }
  if (h_error_->code != cudak::kNoDeviceError) {
    DeviceError e = *h_error_;
    std::memset(h_error_, 0, sizeof(DeviceError));
    // Clear it so the next steps are not blamed for the same problem.
    GPTCUDA_CHECK(where, cudaMemsetAsync(d_error_, 0, sizeof(DeviceError), stream_));
    GPTCUDA_CHECK(where, cudaStreamSynchronize(stream_));
    char buf[256];
    if (e.code == cudak::kEmbeddingIdOutOfRange) {
      std::snprintf(buf, sizeof buf,
                    "embedding_forward: token id %d out of range [0, %d) (clamped on the GPU; "
                    "results since then are invalid)", e.value, e.bound);
    } else if (e.code == cudak::kTargetOutOfRange) {
      std::snprintf(buf, sizeof buf,
                    "crossentropy: target %d out of range [0, %d) and not the ignore index "
                    "(row skipped on the GPU; results since then are invalid)", e.value, e.bound);
    } else {
      std::snprintf(buf, sizeof buf, "device-side error code %d (value %d, bound %d)", e.code,
                    e.value, e.bound);
    }
    throw std::runtime_error(buf);
  }
}

DeviceInfo CudaBackend::device_info() {
  DeviceInfo info;
  info.name = device_name_;
  GPTCUDA_CHECK("device_info", cudaMemGetInfo(&info.free_memory, &info.total_memory));
  info.compute_major = cc_major_;
  info.compute_minor = cc_minor_;
  return info;
}

}  // namespace gptcuda

// ---- factory ------------------------------------------------------------------------------
// Never throws or aborts: a machine without a driver, a GPU or cuBLAS gets
// nullptr and the reason, and the addon falls back to the CPU.
extern "C" __attribute__((visibility("default"))) gptcuda::Backend* gptcuda_cuda_create(
    char* error, size_t error_len) {
  auto report = [&](const char* msg) {
    if (error && error_len > 0) {
      std::strncpy(error, msg, error_len - 1);
      error[error_len - 1] = '\0';
    }
  };
  try {
    return new gptcuda::CudaBackend();
  } catch (const std::exception& e) {
    report(e.what());
  } catch (...) {
    report("unknown error creating the CUDA backend");
  }
  return nullptr;
}
