// The kernel tests' view of the SIMT emulator (simt.h): the kernel sections of
// the .cu files are extracted (run.sh) and compiled against this header, which
// adds the helpers they would otherwise get from cuda_common.cuh.
#pragma once
#include <atomic>
#include <stdexcept>

#include "simt.h"

template <class K, class... A>
void emu_launch(dim3 grid, dim3 block, size_t smem, K kernel, A... args) {
  emu::run_grid("kernel", grid, block, smem, [&] { kernel(args...); });
}
using emu::g_dyn_smem;

namespace gptcuda { namespace cudak {
inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
inline float warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = std::fmax(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }
inline float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : 0.f;
  return warp_sum(v);
}
enum DeviceErrorCode : int { kNoDeviceError = 0, kEmbeddingIdOutOfRange = 1, kTargetOutOfRange = 2 };
struct DeviceError { int code, value, bound, pad; };
inline void report_device_error(DeviceError* e, int code, int value, int bound) {
  if (atomicCAS(&e->code, 0, -1) == 0) { e->value = value; e->bound = bound; atomicExch(&e->code, code); }
}
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
}}

