// Internal helpers shared by the CUDA backend's translation units: error
// checks that turn CUDA/cuBLAS failures into std::runtime_error, launch
// helpers, warp/block reductions and small vector-load utilities.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "bf16.h"

namespace gptcuda {
namespace cudak {

// ---- error checks -------------------------------------------------------------------
// Every CUDA runtime and cuBLAS call goes through GPTCUDA_CHECK; a failure becomes a
// std::runtime_error naming the op (or call site) and the library's error string.
inline bool failed(cudaError_t err) { return err != cudaSuccess; }
inline bool failed(cublasStatus_t st) { return st != CUBLAS_STATUS_SUCCESS; }
[[noreturn]] inline void throw_failure(cudaError_t err, const char* op, const char* what) {
  throw std::runtime_error(std::string(op) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") in " + what);
}
[[noreturn]] inline void throw_failure(cublasStatus_t st, const char* op, const char* what) {
  throw std::runtime_error(std::string(op) + ": cuBLAS error " + cublasGetStatusName(st) +
                           " (" + cublasGetStatusString(st) + ") in " + what);
}

#define GPTCUDA_CHECK(op, call)                                         \
  do {                                                                  \
    const auto gptcuda_status_ = (call);                                \
    if (::gptcuda::cudak::failed(gptcuda_status_))                      \
      ::gptcuda::cudak::throw_failure(gptcuda_status_, (op), #call);    \
  } while (0)

// After a kernel launch: catches bad launch configurations right away (and any
// sticky asynchronous error from earlier work, which the message then says).
inline void check_launch(const char* op) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(op) + ": CUDA kernel launch failed: " +
                             cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                             "; this may also be an asynchronous error from an earlier op)");
}

// ---- device-side error reporting ------------------------------------------------------
// Kernels cannot throw, so they record the first problem here (device memory); the
// backend copies it back whenever the host waits (synchronize/download) and throws.
enum DeviceErrorCode : int {
  kNoDeviceError = 0,
  kEmbeddingIdOutOfRange = 1,
  kTargetOutOfRange = 2,
};
struct DeviceError {
  int code;   // DeviceErrorCode; 0 when nothing went wrong
  int value;  // the offending value
  int bound;  // the valid range is [0, bound)
  int pad;
};

__device__ __forceinline__ void report_device_error(DeviceError* e, int code, int value,
                                                    int bound) {
  // Only the first reporter writes the details; later ones see code != 0.
  if (atomicCAS(&e->code, 0, -1) == 0) {
    e->value = value;
    e->bound = bound;
    __threadfence();
    atomicExch(&e->code, code);
  }
}

// ---- launch helpers -------------------------------------------------------------------
inline unsigned int ceil_div(size_t a, size_t b) { return static_cast<unsigned int>((a + b - 1) / b); }

// Grid size for grid-stride elementwise kernels: enough blocks to fill the GPU,
// never more than the work needs.
inline unsigned int grid_for(size_t n, int block, int sm_count) {
  size_t need = (n + block - 1) / block;
  size_t cap = static_cast<size_t>(sm_count) * 32;
  if (need > cap) need = cap;
  if (need < 1) need = 1;
  return static_cast<unsigned int>(need);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Exactly<T>::type is T in a context that deduces nothing, so a launcher's
// arguments take the kernel's parameter types.
template <typename T>
struct Exactly {
  using type = T;
};

// The grid-stride loop: f(i) for i = first .. n-1, spread over every thread of
// the grid (sized by grid_for: at most what fills the GPU, so threads loop).
template <typename F>
__device__ __forceinline__ void grid_stride(size_t n, F f, size_t first = 0) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = first + static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    f(i);
}

// The vectorised grid-stride loop of the elementwise kernels. With vec (every
// pointer 16-byte aligned) f4(i) handles float4 number i of the first n / 4 * 4
// elements and f1(i) the last n % 4 elements one by one; without, f1 does all.
template <typename F4, typename F1>
__device__ __forceinline__ void grid_stride(size_t n, bool vec, F4 f4, F1 f1) {
  size_t done = 0;
  if (vec) {
    grid_stride(n / 4, f4);
    done = n / 4 * 4;
  }
  grid_stride(n, f1, done);
}

// ---- storage types ---------------------------------------------------------------------
// The cuBLAS type of a storage type.
template <class S>
constexpr cudaDataType_t cuda_type();
template <>
constexpr cudaDataType_t cuda_type<float>() { return CUDA_R_32F; }
template <>
constexpr cudaDataType_t cuda_type<bf16>() { return CUDA_R_16BF; }

// 16 bytes of storage (4 floats or 8 bf16) moved as one vector load or store;
// elements are read and written widened to float.
template <class S>
struct alignas(16) Pack {
  static constexpr int kWidth = 16 / sizeof(S);
  S v[kWidth];
  __device__ __forceinline__ float get(int i) const { return to_float(v[i]); }
  __device__ __forceinline__ void set(int i, float x) { v[i] = from_float<S>(x); }
};
// Through int4, so that the access is one 128-bit load or store whatever S is.
template <class S>
__device__ __forceinline__ Pack<S> load_pack(const S* p) {
  const int4 raw = *reinterpret_cast<const int4*>(p);
  Pack<S> v;
  memcpy(&v, &raw, sizeof v);
  return v;
}
template <class S>
__device__ __forceinline__ void store_pack(S* p, const Pack<S>& v) {
  int4 raw;
  memcpy(&raw, &v, sizeof raw);
  *reinterpret_cast<int4*>(p) = raw;
}

// Four consecutive elements of S widened to a float4 and back: one 16-byte
// access for float, one 8-byte access for bf16 (p aligned to 4 elements).
struct alignas(8) Bf16x4 {
  bf16 v[4];
};
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const bf16* p) {
  const Bf16x4 x = *reinterpret_cast<const Bf16x4*>(p);
  return make_float4(bf16_to_float(x.v[0]), bf16_to_float(x.v[1]), bf16_to_float(x.v[2]),
                     bf16_to_float(x.v[3]));
}
__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void store4(bf16* p, float4 v) {
  Bf16x4 x;
  x.v[0] = float_to_bf16(v.x);
  x.v[1] = float_to_bf16(v.y);
  x.v[2] = float_to_bf16(v.z);
  x.v[3] = float_to_bf16(v.w);
  *reinterpret_cast<Bf16x4*>(p) = x;
}

// grid_stride(n, vec, f4, f1) for storage type S: fp(i) handles pack number i
// (Pack<S>::kWidth elements) of the first whole packs, f1 the rest one by one.
template <class S, typename FP, typename F1>
__device__ __forceinline__ void grid_stride_packed(size_t n, bool vec, FP fp, F1 f1) {
  constexpr size_t W = Pack<S>::kWidth;
  size_t done = 0;
  if (vec) {
    grid_stride(n / W, fp);
    done = n / W * W;
  }
  grid_stride(n, f1, done);
}

// ---- reductions -------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block, result returned to every thread. blockDim.x must be a
// multiple of 32 and at most 1024; `shared` holds at least 32 floats. Uses a
// fixed reduction tree, so the result is deterministic.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : 0.f;
  return warp_sum(v);
}

}  // namespace cudak
}  // namespace gptcuda
