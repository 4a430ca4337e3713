// Reductions the compiler may vectorise: without -ffast-math it must keep the
// serial summation order, so `omp simd reduction` (compiled with
// -fopenmp-simd, no OpenMP runtime) grants the reassociation explicitly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace gptcuda {

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

// exp(x) for float, written so loops over it vectorise (glibc's expf is a
// scalar call without -ffast-math). Cephes' expf: x = k ln2 + r, |r| <= ln2/2,
// a degree-7 polynomial for exp(r), then 2^k assembled in the exponent bits.
// Relative error about 2e-7 (two float ulps); inputs below -87 give 0,
// as the softmax rows that use it need.
inline float exp_fast(float x) {
  const float clamped = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = __builtin_floorf(clamped * 1.44269504088896341f + 0.5f);
  const float r = clamped - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof two_k);
  return x < -87.0f ? 0.0f : p * two_k;
}

}  // namespace gptcuda
