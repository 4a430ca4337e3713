// The op interface shared by the CPU and CUDA backends.
//
// Every op takes raw device pointers plus sizes; the addon glue has already
// checked shapes, dtypes, devices and lifetimes, so implementations only do
// arithmetic. Conventions (the same on every backend):
//   * Typed ops (backend_ops_typed.def) exist for float32 and bf16 storage;
//     arithmetic and reductions are float32 in both. Row-major, innermost
//     dimension last.
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
#include <stdexcept>
#include <string>

#include "bf16.h"

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

// Collectives across the ranks of a data-parallel job on one backend's memory:
// NCCL on CUDA (native/cuda/collectives.cu). Calls are enqueued on the
// backend's stream; every rank makes the same calls in the same order. A
// buffer of n elements is split as partition() does, the part of rank r being
// [min(n, r p), min(n, (r + 1) p)) with p = ceil(n / size). Failures throw
// std::runtime_error with one line naming NCCL's error.
class Collectives {
 public:
  static constexpr size_t kIdBytes = 128;  // ncclUniqueId
  enum class Reduce { Sum, Avg };
  virtual ~Collectives() = default;
  virtual std::string version() const = 0;  // "2.30.7"
  virtual std::string library() const = 0;  // where it was loaded from
  // On one rank (0): the id every rank passes to init.
  virtual void unique_id(unsigned char* id) = 0;
  // Joins the communicator of `size` ranks (blocks until all have joined).
  virtual void init(const unsigned char* id, int rank, int size) = 0;
  virtual bool joined() const = 0;
  virtual void all_reduce(float* data, size_t n, Reduce op) = 0;  // in place
  // shard = this rank's part of the sum over ranks of full (n elements).
  virtual void reduce_scatter_sum(const float* full, float* shard, size_t n) = 0;
  // In place: every rank's part of full (n elements) copied to all ranks.
  virtual void all_gather(float* full, size_t n) = 0;
  // Leaves the communicator (after the queued work); init may run again.
  virtual void destroy() = 0;
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

  // ---- compute ops: one list for every backend (backend_ops.def) -------------
  // TRANSITIONAL: a backend that does not override an op's bf16 version
  // refuses it with a one-line error, until both backends have all of them.
#define GPTCUDA_OP(name, params) virtual void name params = 0;
#define GPTCUDA_OP_BF16(op, params) \
  virtual void op params { no_bf16_yet(#op); }
#include "backend_ops.def"

  // This backend's collectives (owned by it), or null with the reason.
  virtual Collectives* collectives(std::string* why) {
    *why = std::string("the ") + name() + " backend has no collectives (MPI handles its tensors)";
    return nullptr;
  }

 private:
  [[noreturn]] void no_bf16_yet(const char* op) const {
    throw std::runtime_error(std::string(op) + " has no bfloat16 version on the " + name() +
                             " backend yet; use --dtype fp32");
  }
};

// The CPU backend always exists.
Backend* cpu_backend();

}  // namespace gptcuda

// The CUDA backend lives in its own shared library, loaded with dlopen so that
// an addon built with CUDA still loads where there is no driver or cuBLAS.
extern "C" {
typedef gptcuda::Backend* (*gptcuda_cuda_create_fn)(char* error, size_t error_len);
}
