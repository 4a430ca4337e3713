// bfloat16 storage: the top 16 bits of an IEEE float32. Arithmetic is always
// done in float32 (llm.c's recipe); this type only stores. Layout-compatible
// with CUDA's __nv_bfloat16, so the CUDA backend may reinterpret its pointers.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GPTCUDA_BF16_HD __host__ __device__ __forceinline__
#else
#define GPTCUDA_BF16_HD inline
#endif

namespace gptcuda {

struct bf16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2, "bf16 must be two bytes");

GPTCUDA_BF16_HD uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
GPTCUDA_BF16_HD float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

GPTCUDA_BF16_HD float bf16_to_float(bf16 h) { return bits_float(static_cast<uint32_t>(h.bits) << 16); }

// Round to nearest, ties to even (what __float2bfloat16 does); NaN stays a
// quiet NaN of the same sign, infinities stay infinite.
GPTCUDA_BF16_HD bf16 float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

// Stochastic rounding: rounds up with probability equal to the dropped
// fraction, using 16 random bits, so the rounding error is zero on average
// (bf16 parameters updated by tiny steps still move). Deterministic given the
// bits: callers draw them from philox(seed, stream, element index).
GPTCUDA_BF16_HD bf16 float_to_bf16_stochastic(float f, uint32_t random_bits) {
  uint32_t u = float_bits(f);
  if ((u & 0x7f800000u) == 0x7f800000u) return float_to_bf16(f);  // inf and NaN round as usual
  uint32_t r = u + (random_bits & 0xffffu);
  if ((r & 0x7f800000u) == 0x7f800000u) r = u;  // never round a finite value up to infinity
  return bf16{static_cast<uint16_t>(r >> 16)};
}

// The storage types every typed op exists in (backend_ops.def).
GPTCUDA_BF16_HD float to_float(float x) { return x; }
GPTCUDA_BF16_HD float to_float(bf16 x) { return bf16_to_float(x); }
template <class T>
GPTCUDA_BF16_HD T from_float(float x);
template <>
GPTCUDA_BF16_HD float from_float<float>(float x) { return x; }
template <>
GPTCUDA_BF16_HD bf16 from_float<bf16>(float x) { return float_to_bf16(x); }

}  // namespace gptcuda
