// A minimal SIMT emulator to check the CUDA kernels' indexing, tiling and
// synchronisation on a machine without a GPU (see run.sh). Blocks run one at a
// time, each CUDA thread is a std::thread; __syncthreads and warp shuffles are
// barriers; __shared__ variables become static locals (one block at a time);
// dynamic shared memory is poisoned with NaNs so reads of unwritten data show.
// WMMA fragments hold the whole tile in every lane (the kernels only use them
// through load/store/mma and element-wise conversions, which is what makes
// that faithful); loads and stores check the 32-byte pointer and ldm rules,
// and __float_to_tf32 rounds like cvt.rna.tf32 unless g_emu_tf32 is false.
// Not emulated: timing, memory-model subtleties, anything with CUB or cuBLAS.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <mutex>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define GPTCUDA_HD inline

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3e { unsigned x = 0, y = 0, z = 0; };
inline thread_local uint3e threadIdx;
inline uint3e blockIdx;
inline dim3 blockDim, gridDim;
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
using std::min;
using std::max;
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

inline std::barrier<>* g_block_barrier = nullptr;
struct WarpX {
  std::unique_ptr<std::barrier<>> bar;
  float vals[32];
};
inline std::vector<WarpX>* g_warps = nullptr;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
inline void __threadfence() {}
inline int lin_tid() { return threadIdx.x + threadIdx.y * blockDim.x; }
inline float __shfl_sync(unsigned, float v, int src) {
  int t = lin_tid();
  WarpX& w = (*g_warps)[t / 32];
  w.vals[t % 32] = v;
  w.bar->arrive_and_wait();
  float r = w.vals[src & 31];
  w.bar->arrive_and_wait();
  return r;
}
inline float __shfl_xor_sync(unsigned, float v, int off) {
  int lane = lin_tid() % 32;
  int t = lin_tid();
  WarpX& w = (*g_warps)[t / 32];
  w.vals[lane] = v;
  w.bar->arrive_and_wait();
  float r = w.vals[lane ^ off];
  w.bar->arrive_and_wait();
  return r;
}
inline int atomicCAS(int* p, int cmp, int val) {
  static std::mutex m; std::lock_guard<std::mutex> l(m);
  int old = *p; if (old == cmp) *p = val; return old;
}
inline int atomicExch(int* p, int v) { int o = *p; *p = v; return o; }

inline float4* g_dyn_smem = nullptr;

template <class K, class... A>
void emu_launch(dim3 grid, dim3 block, size_t smem, K kernel, A... args) {
  size_t n4 = (smem + 15) / 16 + 8;
  float4* dyn = static_cast<float4*>(std::aligned_alloc(128, n4 * 16));
  // poison shared memory so reads of unwritten data show up
  for (size_t i = 0; i < n4; ++i) dyn[i] = {NAN, NAN, NAN, NAN};
  g_dyn_smem = dyn;
  struct Free { float4* p; ~Free() { std::free(p); } } free_dyn{dyn};
  gridDim = grid;
  blockDim = block;
  const int nthreads = block.x * block.y;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      blockIdx.x = bx; blockIdx.y = by; blockIdx.z = 0;
      std::barrier<> bar(nthreads);
      g_block_barrier = &bar;
      std::vector<WarpX> warps((nthreads + 31) / 32);
      for (auto& w : warps) w.bar = std::make_unique<std::barrier<>>(32);
      g_warps = &warps;
      std::vector<std::thread> th;
      for (int t = 0; t < nthreads; ++t)
        th.emplace_back([&, t] {
          threadIdx.x = t % block.x; threadIdx.y = t / block.x; threadIdx.z = 0;
          kernel(args...);
        });
      for (auto& x : th) x.join();
    }
}

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

#include <cassert>
#include <type_traits>
inline bool g_emu_tf32 = true;
namespace nvcuda { namespace wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {};
struct row_major {}; struct col_major {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class L = void> struct fragment {
  static constexpr int R = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int Cc = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = R * Cc;
  float x[R * Cc];
};
inline void check_ptr(const float* p, unsigned ldm) {
  if ((reinterpret_cast<uintptr_t>(p) & 31) != 0 || ldm % 4 != 0) { fprintf(stderr, "wmma misaligned %p ldm %u\n", (void*)p, ldm); std::abort(); }
}
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const float* p, unsigned ldm) {
  check_ptr(p, ldm);
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::R; ++r) for (int c = 0; c < F::Cc; ++c)
    f.x[r * F::Cc + c] = std::is_same_v<L, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}
template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) { for (auto& e : f.x) e = v; }
template <int M, int N, int K, class T>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t l) {
  check_ptr(p, ldm);
  if (lin_tid() % 32 != 0) return;
  for (int r = 0; r < M; ++r) for (int c = 0; c < N; ++c) {
    if (l == mem_row_major) p[r * ldm + c] = f.x[r * N + c]; else p[c * ldm + r] = f.x[r * N + c];
  }
}
template <int M, int N, int K, class TA, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b, const fragment<accumulator, M, N, K, float, void>& c) {
  float t[M * N];
  for (int i = 0; i < M; ++i) for (int j = 0; j < N; ++j) {
    double s = c.x[i * N + j];
    for (int k = 0; k < K; ++k) s += (double)a.x[i * K + k] * b.x[k * N + j];
    t[i * N + j] = (float)s;
  }
  std::memcpy(d.x, t, sizeof t);
}
inline float __float_to_tf32(float x) {
  if (!g_emu_tf32 || !std::isfinite(x)) return x;
  uint32_t u; std::memcpy(&u, &x, 4);
  u += 0x1000u; u &= ~0x1FFFu;  // round to nearest (ties away), 10 mantissa bits
  std::memcpy(&x, &u, 4); return x;
}
}}
