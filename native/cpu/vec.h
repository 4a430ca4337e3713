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

// y += a[0] x[0] + ... + a[3] x[3], where x[j] = x0 + j * stride: four rows of
// a panel in one pass over y (a quarter of the loads and stores of y).
inline void axpy4(float* y, const float* a, const float* x0, size_t stride, int n) {
  const float* x1 = x0 + stride;
  const float* x2 = x1 + stride;
  const float* x3 = x2 + stride;
  const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i];
}

// y += a[c] x[c] over all rows c of a [rows, stride] panel.
inline void panel_axpy(float* y, const float* a, const float* panel, size_t stride, int rows, int n) {
  int c = 0;
  for (; c + 4 <= rows; c += 4) axpy4(y, a + c, panel + c * stride, stride, n);
  for (; c < rows; ++c) axpy(y, a[c], panel + c * stride, n);
}

// out[j] += dot(y, x[j]) for the four rows x[j] = x0 + j * stride.
inline void dot4(float* out, const float* y, const float* x0, size_t stride, int n) {
  const float* x1 = x0 + stride;
  const float* x2 = x1 + stride;
  const float* x3 = x2 + stride;
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int i = 0; i < n; ++i) {
    s0 += y[i] * x0[i];
    s1 += y[i] * x1[i];
    s2 += y[i] * x2[i];
    s3 += y[i] * x3[i];
  }
  out[0] += s0;
  out[1] += s1;
  out[2] += s2;
  out[3] += s3;
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
