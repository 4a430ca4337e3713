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

#define GPTCUDA_OP(name, params) void name params override;
// TRANSITIONAL: bf16 versions not yet overridden (backend.h refuses them);
// the using-declaration keeps them visible next to the float overrides.
#define GPTCUDA_OP_BF16(name, params) using Backend::name;
#include "backend_ops.def"
  void to_storage(bf16* dst, const float* src, size_t n) override;
  void from_storage(float* dst, const bf16* src, size_t n) override;

 private:
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace gptcuda
