#include <type_traits>

#include "backend_cpu.h"
#include "parallel.h"
#include "storage.h"

namespace gptcuda {

// Elementwise ops are memory-bound; 64K-element chunks keep thread wake-up
// cost below the work it saves.
constexpr size_t kChunk = 1 << 16;

namespace {

template <class S>
void fill_impl(S* x, size_t n, float value) {
  const S v = from_float<S>(value);
  parallel_for(n, kChunk, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) x[i] = v;
  });
}

template <class S>
void scale_impl(S* x, size_t n, float s) {
  parallel_for(n, kChunk, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) x[i] = from_float<S>(to_float(x[i]) * s);
  });
}

template <class S>
void add_impl(S* out, const S* a, const S* b, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) out[i] = from_float<S>(to_float(a[i]) + to_float(b[i]));
  });
}

template <class S>
void accumulate_impl(S* dst, const S* src, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) dst[i] = from_float<S>(to_float(dst[i]) + to_float(src[i]));
  });
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
