// The CPU backend: host memory. The ops are in the other files of this folder.
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "backend_cpu.h"
#include "parallel.h"

namespace gptcuda {

void* CpuBackend::alloc(size_t bytes) {
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

void CpuBackend::release(void* ptr) {
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

void CpuBackend::upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }

DeviceInfo CpuBackend::device_info() {
  DeviceInfo info;
  info.name = "CPU (" + std::to_string(cpu_num_threads()) + " threads, GEMM: " GPTCUDA_BLAS_NAME ")";
  return info;
}

Backend* cpu_backend() {
  // lives as long as the process; the BLAS gets the pool's thread count
  static CpuBackend* backend = [] {
    blas_set_threads(cpu_num_threads());
    return new CpuBackend();
  }();
  return backend;
}

}  // namespace gptcuda
