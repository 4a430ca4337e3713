// The part of the CUDA runtime API the backend uses, implemented on the CPU
// (runtime.cc) for the emulated backend: device memory is host memory that the
// emulator tracks, the stream is a queue run when the host waits, and kernel
// launches (rewritten from <<<...>>> by translate.py) go through emu::launch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>

#include "simt.h"

#define CUDART_VERSION 13000

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorStubLibrary = 34,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;
constexpr unsigned cudaStreamNonBlocking = 1;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int warpSize;
  int maxThreadsPerBlock;
  int multiProcessorCount;
  int major;
  int minor;
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
template <class T>
cudaError_t cudaMallocHost(T** ptr, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

namespace emu {
// Queues work on "the stream" (the emulator keeps one queue for all streams).
void enqueue(const char* what, std::function<void()> work);
// Runs everything queued; the host "waits for the GPU".
void flush();
// Records a launch error for cudaGetLastError (launches themselves return nothing).
void set_launch_error(cudaError_t err, const std::string& why);
// The dynamic shared memory a kernel may use (48 KiB unless raised).
size_t dynamic_smem_limit(const void* kernel);
void set_dynamic_smem_limit(const void* kernel, size_t bytes);
size_t optin_smem_limit();
// True when [p, p + bytes) lies inside one live device allocation.
bool is_device_range(const void* p, size_t bytes);
bool is_device_pointer(const void* p);

struct LaunchConfig {
  dim3 grid, block;
  size_t smem;
};
inline LaunchConfig cfg(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return {grid, block, smem};
}

template <class Arg>
bool argument_ok(const Arg& a) {
  if constexpr (std::is_pointer_v<Arg>) return a == nullptr || is_device_pointer(a);
  return true;
}

// kernel<<<grid, block, smem, stream>>>(args...): the arguments are converted to
// the kernel's parameter types and copied now, as CUDA does; the grid runs when
// the host next waits for the stream.
template <class... P, class... A>
void launch(const char* name, LaunchConfig c, void (*kernel)(P...), A&&... args) {
  const unsigned long threads = static_cast<unsigned long>(c.block.x) * c.block.y * c.block.z;
  std::string why;
  cudaError_t err = cudaSuccess;
  if (threads == 0 || threads > 1024 || c.block.z > 64) {
    err = cudaErrorInvalidConfiguration;
    why = "block of " + std::to_string(threads) + " threads";
  } else if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.y > 65535 || c.grid.z > 65535 ||
             c.grid.x > 2147483647u) {
    err = cudaErrorInvalidConfiguration;
    why = "grid (" + std::to_string(c.grid.x) + ", " + std::to_string(c.grid.y) + ", " +
          std::to_string(c.grid.z) + ")";
  } else if (const size_t limit = dynamic_smem_limit(reinterpret_cast<const void*>(kernel)); c.smem > limit) {
    err = cudaErrorInvalidValue;
    why = std::to_string(c.smem) + " bytes of dynamic shared memory (limit " + std::to_string(limit) +
          "; above 48 KiB needs cudaFuncSetAttribute)";
  }
  auto params = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(args)...);
  if (err == cudaSuccess) {
    int index = 0;
    auto check = [&](const auto& p) {
      if (err == cudaSuccess && !argument_ok(p)) {
        err = cudaErrorInvalidDevicePointer;
        why = "argument " + std::to_string(index) + " is a pointer outside device memory";
      }
      ++index;
    };
    std::apply([&](const auto&... p) { (check(p), ...); }, *params);
  }
  if (err != cudaSuccess) {
    set_launch_error(err, std::string(name) + ": " + why);
    return;
  }
  enqueue(name, [name, c, kernel, params] {
    run_grid(name, c.grid, c.block, c.smem, [&] { std::apply(kernel, *params); });
  });
}
}  // namespace emu

template <class... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > emu::optin_smem_limit())
    return cudaErrorInvalidValue;
  emu::set_dynamic_smem_limit(reinterpret_cast<const void*>(kernel), static_cast<size_t>(value));
  return cudaSuccess;
}
