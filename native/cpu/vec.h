// Reductions the compiler may vectorise: without -ffast-math it must keep the
// serial summation order, so `omp simd reduction` (compiled with
// -fopenmp-simd, no OpenMP runtime) grants the reassociation explicitly.
#pragma once
#include <cstddef>

namespace gptcuda::cpu {

inline float dot(const float* a, const float* b, int n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

inline float sum(const float* a, int n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += a[i];
  return acc;
}

// y += alpha * x
inline void axpy(float* y, float alpha, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace gptcuda::cpu
