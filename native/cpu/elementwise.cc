#include <algorithm>
#include <cstdint>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <type_traits>

#include "backend_cpu.h"
#include "parallel.h"
#include "storage.h"

namespace gptcuda {

// Elementwise ops are memory-bound; 64K-element chunks keep thread wake-up
// cost below the work it saves.
constexpr size_t kChunk = 1 << 16;

namespace {

// Fills of at least kStreamBytes bypass the caches (non-temporal stores):
// nearly twice the rate of plain stores on the 2-core VM (33 vs 18.5 GB/s
// zeroing 650 MB), and a buffer that large would not stay cached for its
// reader anyway. Smaller fills stay in cache for the op that reads them next.
constexpr size_t kStreamBytes = size_t(4) << 20;

template <class S>
void fill_run(S* x, size_t n, S v, bool stream) {
#if defined(__AVX2__)
  if (stream) {
    constexpr size_t kLanes = 32 / sizeof(S);
    alignas(32) S pattern[kLanes];
    for (size_t l = 0; l < kLanes; ++l) pattern[l] = v;
    const __m256i p = _mm256_load_si256(reinterpret_cast<const __m256i*>(pattern));
    size_t i = 0;
    for (; i < n && (reinterpret_cast<uintptr_t>(x + i) & 31) != 0; ++i) x[i] = v;
    for (; i + kLanes <= n; i += kLanes) _mm256_stream_si256(reinterpret_cast<__m256i*>(x + i), p);
    for (; i < n; ++i) x[i] = v;
    _mm_sfence();  // the streamed stores ordered before the pool reports this chunk done
    return;
  }
#else
  (void)stream;
#endif
  for (size_t i = 0; i < n; ++i) x[i] = v;
}

template <class S>
void fill_impl(S* x, size_t n, float value) {
  const S v = from_float<S>(value);
  const bool stream = n * sizeof(S) >= kStreamBytes;
  parallel_for(n, kChunk, [&](size_t b, size_t e) { fill_run(x + b, e - b, v, stream); });
}

// bf16: the float loop on widened blocks (storage.h's vectorised
// widen/narrow), one rounding per result.
constexpr size_t kBlock = 512;

template <class Fn>
void blocks(bf16* out, const bf16* a, const bf16* b, size_t n, Fn fn) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    float x[kBlock], y[kBlock];
    for (size_t i = lo; i < hi; i += kBlock) {
      const size_t m = std::min(kBlock, hi - i);
      widen(x, a + i, m);
      if (b) widen(y, b + i, m);
      const float* second = b ? y : x;  // unary ops ignore it; never uninitialised
      for (size_t j = 0; j < m; ++j) x[j] = fn(x[j], second[j]);
      narrow(out + i, x, m);
    }
  });
}

void scale_impl(float* x, size_t n, float s) {
  parallel_for(n, kChunk, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) x[i] *= s;
  });
}
void scale_impl(bf16* x, size_t n, float s) {
  blocks(x, x, nullptr, n, [s](float v, float) { return v * s; });
}

void add_impl(float* out, const float* a, const float* b, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) out[i] = a[i] + b[i];
  });
}
void add_impl(bf16* out, const bf16* a, const bf16* b, size_t n) {
  blocks(out, a, b, n, [](float u, float v) { return u + v; });
}

void accumulate_impl(float* dst, const float* src, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) dst[i] += src[i];
  });
}
void accumulate_impl(bf16* dst, const bf16* src, size_t n) {
  blocks(dst, dst, src, n, [](float u, float v) { return u + v; });
}

}  // namespace

void CpuBackend::fill(float* x, size_t n, float value) { fill_impl(x, n, value); }
void CpuBackend::fill(bf16* x, size_t n, float value) { fill_impl(x, n, value); }
void CpuBackend::scale(float* x, size_t n, float s) { scale_impl(x, n, s); }
void CpuBackend::scale(bf16* x, size_t n, float s) { scale_impl(x, n, s); }
void CpuBackend::add(float* out, const float* a, const float* b, size_t n) { add_impl(out, a, b, n); }
void CpuBackend::add(bf16* out, const bf16* a, const bf16* b, size_t n) { add_impl(out, a, b, n); }
void CpuBackend::accumulate(float* dst, const float* src, size_t n) { accumulate_impl(dst, src, n); }
void CpuBackend::accumulate(bf16* dst, const bf16* src, size_t n) { accumulate_impl(dst, src, n); }

void CpuBackend::to_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }
void CpuBackend::from_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }

void CpuBackend::to_storage(bf16* dst, const float* src, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) { narrow(dst + lo, src + lo, hi - lo); });
}
void CpuBackend::from_storage(float* dst, const bf16* src, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) { widen(dst + lo, src + lo, hi - lo); });
}

}  // namespace gptcuda
