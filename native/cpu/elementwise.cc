#include "backend_cpu.h"
#include "parallel.h"

namespace gptcuda {

// Elementwise ops are memory-bound; 64K-element chunks keep thread wake-up
// cost below the work it saves.
constexpr size_t kChunk = 1 << 16;

void CpuBackend::fill(float* x, size_t n, float value) {
  parallel_for(n, kChunk, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) x[i] = value;
  });
}

void CpuBackend::scale(float* x, size_t n, float s) {
  parallel_for(n, kChunk, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) x[i] *= s;
  });
}

void CpuBackend::add(float* out, const float* a, const float* b, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) out[i] = a[i] + b[i];
  });
}

void CpuBackend::accumulate(float* dst, const float* src, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) dst[i] += src[i];
  });
}

void CpuBackend::to_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }
void CpuBackend::from_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }

void CpuBackend::to_storage(bf16* dst, const float* src, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) dst[i] = float_to_bf16(src[i]);
  });
}
void CpuBackend::from_storage(float* dst, const bf16* src, size_t n) {
  parallel_for(n, kChunk, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) dst[i] = bf16_to_float(src[i]);
  });
}

}  // namespace gptcuda
