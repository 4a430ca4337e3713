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

// Gives the BLAS (OpenBLAS, when built with it) n threads, so that
// GPTCUDA_NUM_THREADS and the affinity mask govern its GEMMs as they do the
// pool's ops: OpenBLAS's sums differ in the last bit between thread counts on
// some CPUs (seen on AMD EPYC), so a run's bits follow its thread count.
// OPENBLAS_NUM_THREADS, when set, is left to govern OpenBLAS.
void blas_set_threads(int n);

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

// Every typed op in both storage types: the kernels are templates over the
// storage type (storage.h), float arithmetic either way.
#define GPTCUDA_OP(name, params) void name params override;
#include "backend_ops.def"

 private:
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace gptcuda
