// A SIMT emulator: runs CUDA kernels, compiled as plain C++, on the CPU so
// their indexing, tiling and synchronisation can be checked on a machine
// without a GPU. Used by the kernel tests (emu.h) and by the emulated backend
// (backend.sh: the whole CUDA backend built against the fake toolkit in shim/).
//
// Each CUDA thread is a fiber (ucontext) on the calling OS thread; a block's
// fibers run round-robin, each until its next barrier, so one block runs at a
// time and everything is deterministic. What this makes visible:
//   - __syncthreads reached by only some threads of a block, and full-mask warp
//     shuffles with lanes that exited or are elsewhere: reported as a deadlock
//     (real GPUs hang or give undefined results);
//   - reads of another lane's shared-memory data without a barrier: lanes run
//     one after another, so the reader sees stale data and the results differ;
//   - dependencies between blocks of one launch: blocks run in a shuffled order;
//   - reads of dynamic shared memory never written: it starts as NaNs;
//   - launch configurations a GPU rejects (block size, grid limits, dynamic
//     shared memory above 48 KiB without cudaFuncSetAttribute, or above the
//     opt-in limit): the launch fails with the error a GPU gives.
// Not emulated: timing, the memory model beyond barriers, register limits.
#pragma once
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define GPTCUDA_HD inline

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
using std::max;
using std::min;
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

namespace emu {

[[noreturn]] inline void fatal(const std::string& what) {
  std::fprintf(stderr, "\n[cuda emulator] %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

enum class Wait { Running, Block, Warp, Done };

struct Lane {
  ucontext_t ctx;  // used once, to start the fiber on its own stack
  jmp_buf jb;      // then switches are _setjmp/_longjmp (no signal-mask syscalls)
  uint3 idx;
  Wait wait = Wait::Running;
  bool started = false;
};

struct BlockRun {
  std::vector<Lane> lanes;
  std::vector<uint64_t> warp_vals;  // 32 per warp, for shuffles
  jmp_buf sched_jb;
  int cur = 0;
  const std::function<void()>* body = nullptr;
  const char* kernel = "";
};
inline BlockRun* g_run = nullptr;
inline float4* g_dyn_smem = nullptr;
inline const char* g_kernel_name = "";

constexpr size_t kStackBytes = 256 * 1024;
inline std::vector<char*>& stacks() {
  static std::vector<char*> s;  // reused across launches (mmap: untouched pages cost nothing)
  return s;
}
inline char* stack_for(size_t i) {
  auto& s = stacks();
  while (s.size() <= i) {
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fatal("mmap of a fiber stack failed");
    s.push_back(static_cast<char*>(p));
  }
  return s[i];
}

[[noreturn]] inline void lane_main() {
  (*g_run->body)();
  g_run->lanes[g_run->cur].wait = Wait::Done;
  _longjmp(g_run->sched_jb, 1);
}

inline int linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

// Suspends the current CUDA thread until the scheduler releases its barrier.
inline void suspend(Wait w) {
  if (!g_run) fatal("a barrier or warp shuffle outside a kernel launch");
  Lane& l = g_run->lanes[g_run->cur];
  l.wait = w;
  if (_setjmp(l.jb) == 0) _longjmp(g_run->sched_jb, 1);
}

inline void run_block(const std::function<void()>& body, dim3 block) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  BlockRun run;
  run.lanes.resize(n);
  run.warp_vals.assign(static_cast<size_t>((n + 31) / 32) * 32, 0);
  run.body = &body;
  g_run = &run;
  for (int t = 0; t < n; ++t) {
    Lane& l = run.lanes[t];
    l.idx.x = t % block.x;
    l.idx.y = (t / block.x) % block.y;
    l.idx.z = t / (block.x * block.y);
    getcontext(&l.ctx);
    l.ctx.uc_stack.ss_sp = stack_for(t);
    l.ctx.uc_stack.ss_size = kStackBytes;
    l.ctx.uc_link = nullptr;  // lane_main never returns: it jumps back to the scheduler
    makecontext(&l.ctx, reinterpret_cast<void (*)()>(lane_main), 0);
  }
  for (;;) {
    for (int t = 0; t < n; ++t) {
      if (run.lanes[t].wait != Wait::Running) continue;
      run.cur = t;
      threadIdx = run.lanes[t].idx;
      Lane& l = run.lanes[t];
      if (_setjmp(run.sched_jb) == 0) {
        if (!l.started) {
          l.started = true;
          setcontext(&l.ctx);
        }
        _longjmp(l.jb, 1);
      }
    }
    // Every thread now waits at a barrier or has finished.
    int live = 0, at_block = 0;
    for (auto& l : run.lanes) {
      live += l.wait != Wait::Done;
      at_block += l.wait == Wait::Block;
    }
    if (live == 0) break;
    bool released = false;
    if (at_block == live) {
      for (auto& l : run.lanes)
        if (l.wait == Wait::Block) l.wait = Wait::Running;
      released = true;
    } else {
      for (int w0 = 0; w0 < n; w0 += 32) {
        const int w1 = std::min(n, w0 + 32);
        int at_warp = 0, done = 0;
        for (int t = w0; t < w1; ++t) {
          at_warp += run.lanes[t].wait == Wait::Warp;
          done += run.lanes[t].wait == Wait::Done;
        }
        if (at_warp == 0 || at_warp + done != w1 - w0) continue;
        if (done > 0)
          fatal(std::string("kernel ") + g_kernel_name + ": a full-mask warp shuffle in warp " +
                std::to_string(w0 / 32) + " with " + std::to_string(done) +
                " lane(s) already exited (undefined on a GPU)");
        for (int t = w0; t < w1; ++t) run.lanes[t].wait = Wait::Running;
        released = true;
      }
    }
    if (!released) {
      std::string who;
      for (int t = 0; t < n; ++t) {
        const Wait w = run.lanes[t].wait;
        if (t < 64 || w == Wait::Warp)
          who += " " + std::to_string(t) + (w == Wait::Block ? ":sync" : w == Wait::Warp ? ":shfl" : ":exit");
      }
      fatal(std::string("kernel ") + g_kernel_name + " block (" + std::to_string(blockIdx.x) + "," +
            std::to_string(blockIdx.y) + "): deadlock: " + std::to_string(at_block) + " of " +
            std::to_string(live) + " live threads wait at __syncthreads, the others at a warp "
            "shuffle or exited (threads:" + who + ")");
    }
  }
  g_run = nullptr;
}

// Runs every block of a grid (in a shuffled order: blocks of one launch must not
// depend on each other) with `smem` bytes of NaN-filled dynamic shared memory.
// GPTCUDA_EMU_PROFILE=1: seconds spent per kernel, printed at exit.
struct Profile {
  std::map<std::string, std::pair<double, long>> by_kernel;
  ~Profile() {
    if (by_kernel.empty()) return;
    std::vector<std::pair<double, std::string>> rows;
    for (auto& [k, v] : by_kernel) rows.push_back({v.first, k + " x" + std::to_string(v.second)});
    std::sort(rows.rbegin(), rows.rend());
    for (auto& [t, k] : rows) std::fprintf(stderr, "[cuda emulator] %8.3f s  %s\n", t, k.c_str());
  }
};
inline Profile* profile() {
  static const bool on = std::getenv("GPTCUDA_EMU_PROFILE") != nullptr;
  static Profile p;  // prints from its destructor, at exit
  return on ? &p : nullptr;
}

inline void run_grid(const char* name, dim3 grid, dim3 block, size_t smem,
                     const std::function<void()>& body) {
  static std::mutex mu;  // one launch at a time: the globals above are shared
  std::lock_guard<std::mutex> lock(mu);
  const auto t0 = std::chrono::steady_clock::now();
  struct Record {
    const char* name;
    std::chrono::steady_clock::time_point t0;
    ~Record() {
      if (Profile* p = profile()) {
        auto& e = p->by_kernel[name];
        e.first += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        e.second += 1;
      }
    }
  } record{name, t0};
  g_kernel_name = name;
  const size_t n4 = (smem + 15) / 16 + 8;
  float4* dyn = static_cast<float4*>(std::aligned_alloc(128, n4 * 16));
  gridDim = grid;
  blockDim = block;
  std::vector<uint3> order;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) order.push_back({x, y, z});
  static uint64_t seed = 0x9E3779B97F4A7C15ull;
  for (size_t i = order.size(); i > 1; --i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    std::swap(order[i - 1], order[(seed >> 33) % i]);
  }
  for (const uint3& b : order) {
    for (size_t i = 0; i < n4; ++i) dyn[i] = {NAN, NAN, NAN, NAN};
    g_dyn_smem = dyn;
    blockIdx = b;
    run_block(body, block);
  }
  g_dyn_smem = nullptr;
  std::free(dyn);
}

template <class T>
T shuffle(T v, int src_lane_of) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  const int t = linear_tid();
  const int w0 = t & ~31;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  g_run->warp_vals[t] = bits;
  suspend(Wait::Warp);  // every lane has written
  const int src = w0 + (src_lane_of & 31);
  bits = src < static_cast<int>(g_run->lanes.size()) ? g_run->warp_vals[src] : bits;
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  suspend(Wait::Warp);  // every lane has read
  return r;
}

}  // namespace emu

inline void __syncthreads() { emu::suspend(emu::Wait::Block); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::suspend(emu::Wait::Warp); }
inline void __threadfence() {}
[[noreturn]] inline void __trap() { emu::fatal(std::string("__trap() in kernel ") + emu::g_kernel_name); }
template <class T> T __shfl_sync(unsigned, T v, int src, int = 32) { return emu::shuffle(v, src); }
template <class T> T __shfl_xor_sync(unsigned, T v, int mask, int = 32) {
  return emu::shuffle(v, (emu::linear_tid() & 31) ^ mask);
}
template <class T> T __shfl_down_sync(unsigned, T v, int d, int = 32) {
  const int lane = emu::linear_tid() & 31;
  return emu::shuffle(v, lane + d < 32 ? lane + d : lane);
}
// Fibers never run concurrently, so plain read-modify-writes are atomic.
inline int atomicCAS(int* p, int cmp, int val) { int old = *p; if (old == cmp) *p = val; return old; }
inline int atomicExch(int* p, int v) { int o = *p; *p = v; return o; }
inline int atomicAdd(int* p, int v) { int o = *p; *p += v; return o; }
inline float atomicAdd(float* p, float v) { float o = *p; *p += v; return o; }

// ---- WMMA (TF32 here, bf16 in shim/mma.h) ------------------------------------------
// Fragments hold the whole tile in every lane (the kernels only use them through
// load/store/mma and element-wise conversions, which is what makes that
// faithful); loads and stores check the 256-bit pointer and ldm rules, and
// __float_to_tf32 rounds like cvt.rna.tf32 unless g_emu_tf32 is false
// (GPTCUDA_EMU_TF32_EXACT=1: the cuda-emulated-tc-exact tests check the
// tensor-core kernels' arithmetic at float32 tolerances that way).
//
// mma_sync's arithmetic: each product is exact (a TF32 or bf16 product has at
// most 22 significant bits, float holds 24), the K products of an output element
// and its accumulator are summed in double and rounded once to float. The
// hardware's order and internal width inside one mma are not documented (only
// "float32 accumulation"), so it may differ from this by a few float32 ulps of
// the terms; every tolerance the tests use for tensor-core results is far
// above that. Between mma_sync calls the accumulator is float, as on the GPU.
inline bool g_emu_tf32 = std::getenv("GPTCUDA_EMU_TF32_EXACT") == nullptr;
struct __nv_bfloat16;  // shim/cuda_bf16.h; its fragments load from bf16 memory only (shim/mma.h)
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class L = void>
struct fragment {
  static constexpr int R = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int Cc = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = R * Cc;
  float x[R * Cc];
};
// ldm is in elements and must span a multiple of 16 bytes (4 floats, 8 bf16).
template <class E>
inline void check_ptr(const E* p, unsigned ldm) {
  constexpr unsigned per16 = 16 / sizeof(E);
  if ((reinterpret_cast<uintptr_t>(p) & 31) != 0 || ldm % per16 != 0)
    emu::fatal(std::string("kernel ") + emu::g_kernel_name + ": wmma pointer not 256-bit aligned or ldm " +
               std::to_string(ldm) + " not a multiple of " + std::to_string(per16));
}
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const float* p, unsigned ldm) {
  static_assert(!std::is_same_v<T, ::__nv_bfloat16>, "a bf16 fragment loads from __nv_bfloat16 memory");
  check_ptr(p, ldm);
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::R; ++r)
    for (int c = 0; c < F::Cc; ++c)
      f.x[r * F::Cc + c] = std::is_same_v<L, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const float* p, unsigned ldm,
                             layout_t l) {
  check_ptr(p, ldm);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  for (auto& e : f.x) e = v;
}
template <int M, int N, int K, class T>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm,
                              layout_t l) {
  check_ptr(p, ldm);
  // Collective, and the tile is written by the warp's last lane, which runs last:
  // a lane that reads the tile without a barrier after the store sees old data.
  __syncwarp();
  if (emu::linear_tid() % 32 == 31 || emu::linear_tid() == static_cast<int>(emu::g_run->lanes.size()) - 1)
    for (int r = 0; r < M; ++r)
      for (int c = 0; c < N; ++c) {
        if (l == mem_row_major) p[r * ldm + c] = f.x[r * N + c];
        else p[c * ldm + r] = f.x[r * N + c];
      }
}
template <int M, int N, int K, class TA, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TA, LB>& b,
                     const fragment<accumulator, M, N, K, float, void>& c) {
  // The shapes the kernels use (the GPU has more): TF32 m16n16k8, bf16 m16n16k16.
  static_assert(M == 16 && N == 16 &&
                    ((std::is_same_v<TA, precision::tf32> && K == 8) ||
                     (std::is_same_v<TA, ::__nv_bfloat16> && K == 16)),
                "a WMMA type or shape the emulator does not provide");
  float t[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s += static_cast<double>(a.x[i * K + k]) * b.x[k * N + j];
      t[i * N + j] = static_cast<float>(s);
    }
  std::memcpy(d.x, t, sizeof t);
}
inline float __float_to_tf32(float x) {
  if (!g_emu_tf32 || !std::isfinite(x)) return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x1000u;
  u &= ~0x1FFFu;  // round to nearest (ties away), 10 mantissa bits
  std::memcpy(&x, &u, 4);
  return x;
}
}  // namespace wmma
}  // namespace nvcuda
