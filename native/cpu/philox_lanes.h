// Philox4x32-10 (native/include/philox.h) for a register's worth of
// consecutive counters at once (64 with AVX-512, 16 with AVX2): the same
// words as philox4, lane by lane, so dropout masks stay what the CUDA backend
// and a resumed run draw. A scalar Philox per element made dropout a
// twentieth of a CPU training step. Without AVX2 it is the scalar loop.
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "philox.h"

namespace gptcuda {

// Several independent registers per call: one round is a chain of dependent
// multiplies, so a single register of counters leaves the units mostly idle.
#if defined(__AVX512F__)
constexpr int kPhiloxRegLanes = 16, kPhiloxRegs = 4;
typedef __m512i PhiloxReg;
#define GPTCUDA_PX(op) _mm512_##op
#elif defined(__AVX2__)
constexpr int kPhiloxRegLanes = 8, kPhiloxRegs = 2;
typedef __m256i PhiloxReg;
#define GPTCUDA_PX(op) _mm256_##op
#else
constexpr int kPhiloxRegLanes = 4, kPhiloxRegs = 1;
#endif
constexpr int kPhiloxLanes = kPhiloxRegLanes * kPhiloxRegs;

#if defined(__AVX2__)
// The 64-bit products m * c, as low and high words in c's lane order: the
// even lanes and (shifted down) the odd ones multiplied as the low halves of
// 64-bit lanes, then their words re-interleaved.
__attribute__((always_inline)) inline void philox_mulhilo(PhiloxReg c, PhiloxReg m, PhiloxReg& lo, PhiloxReg& hi) {
  const PhiloxReg even = GPTCUDA_PX(mul_epu32)(c, m), odd = GPTCUDA_PX(mul_epu32)(GPTCUDA_PX(srli_epi64)(c, 32), m);
#if defined(__AVX512F__)
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
#else
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
#endif
}
#endif

// word0[l] = philox4(seed, stream, index0 + l).w[0] for l < kPhiloxLanes.
__attribute__((always_inline)) inline void philox_word0_lanes(uint64_t seed, uint64_t stream, uint64_t index0,
                                                              uint32_t word0[kPhiloxLanes]) {
#if defined(__AVX2__)
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  // mul_epu32 reads the low word of each 64-bit lane.
  const PhiloxReg m0 = GPTCUDA_PX(set1_epi32)(int(0xD2511F53u)), m1 = GPTCUDA_PX(set1_epi32)(int(0xCD9E8D57u));
  PhiloxReg c0[kPhiloxRegs], c1[kPhiloxRegs], c2[kPhiloxRegs], c3[kPhiloxRegs];
  for (int r = 0; r < kPhiloxRegs; ++r) {
    // Counters built on the host side of the register: the index's high word per lane (a run may cross 2^32).
    alignas(64) uint32_t lo[kPhiloxRegLanes], hi[kPhiloxRegLanes];
    for (int l = 0; l < kPhiloxRegLanes; ++l) {
      const uint64_t index = index0 + uint64_t(r * kPhiloxRegLanes + l);
      lo[l] = static_cast<uint32_t>(index);
      hi[l] = static_cast<uint32_t>(index >> 32);
    }
    std::memcpy(&c0[r], lo, sizeof lo);
    std::memcpy(&c1[r], hi, sizeof hi);
    c2[r] = GPTCUDA_PX(set1_epi32)(int(uint32_t(stream)));
    c3[r] = GPTCUDA_PX(set1_epi32)(int(uint32_t(stream >> 32)));
  }
  for (int round = 0; round < 10; ++round) {
    const PhiloxReg vk0 = GPTCUDA_PX(set1_epi32)(int(k0)), vk1 = GPTCUDA_PX(set1_epi32)(int(k1));
    for (int r = 0; r < kPhiloxRegs; ++r) {
      PhiloxReg lo0, hi0, lo1, hi1;
      philox_mulhilo(c0[r], m0, lo0, hi0);
      philox_mulhilo(c2[r], m1, lo1, hi1);
#if defined(__AVX512F__)
      c0[r] = _mm512_ternarylogic_epi32(hi1, c1[r], vk0, 0x96);  // three-way xor
      c2[r] = _mm512_ternarylogic_epi32(hi0, c3[r], vk1, 0x96);
#else
      c0[r] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[r]), vk0);
      c2[r] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[r]), vk1);
#endif
      c1[r] = lo1;
      c3[r] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  std::memcpy(word0, c0, sizeof c0);
#else
  for (int l = 0; l < kPhiloxLanes; ++l) word0[l] = philox_u32(seed, stream, index0 + uint64_t(l));
#endif
}
#undef GPTCUDA_PX

// Dropout's multipliers for elements index0..index0+kPhiloxLanes-1: keep_scale
// where dropout_keep (philox.h) keeps the element, else 0.
__attribute__((always_inline)) inline void dropout_scales_lanes(uint64_t seed, uint64_t stream, uint64_t index0, float p,
                                                                float keep_scale, float scale[kPhiloxLanes]) {
  uint32_t word0[kPhiloxLanes];
  philox_word0_lanes(seed, stream, index0, word0);
#pragma omp simd
  for (int l = 0; l < kPhiloxLanes; ++l)
    scale[l] = static_cast<float>(word0[l] >> 8) * (1.0f / 16777216.0f) >= p ? keep_scale : 0.0f;
}

}  // namespace gptcuda
