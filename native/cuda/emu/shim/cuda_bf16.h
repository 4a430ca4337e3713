// The part of CUDA's cuda_bf16.h the backend uses, for the emulated backend:
// __nv_bfloat16 as the top half of a float32, conversions rounding to nearest
// even like the device's cvt.rn.bf16.f32 (gptcuda's own bf16.h, so the
// emulator and the CPU backend round identically). Arithmetic on bf16 values
// is not provided: the backend widens to float first (llm.c's recipe).
#pragma once
#include "bf16.h"

struct __nv_bfloat16 {
  unsigned short __x;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
static_assert(sizeof(__nv_bfloat16) == 2 && sizeof(__nv_bfloat162) == 4, "bf16 layouts");

inline float __bfloat162float(__nv_bfloat16 h) { return gptcuda::bf16_to_float(gptcuda::bf16{h.__x}); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {gptcuda::float_to_bf16(f).bits}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }
