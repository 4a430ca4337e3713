// Philox4x32-10 (native/include/philox.h) for a register's worth of
// consecutive blocks at once (16 with AVX-512, 8 with AVX2), all four words
// of each block used: philox_element_bits' layout (element i is word i % 4 of
// block i / 4), lane by lane the same bits the CUDA backend and a resumed run
// draw. A scalar Philox per element made dropout a twentieth of a CPU
// training step. Without AVX2 it is the scalar loop.
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

// Elements per register of blocks, and per window of kPhiloxRegs registers.
constexpr int kPhiloxRegElements = 4 * kPhiloxRegLanes;
constexpr int kPhiloxWindow = kPhiloxRegs * kPhiloxRegElements;

// bits[j] = philox_element_bits(seed, stream, 4 * block0 + j) for
// j < Regs * kPhiloxRegElements (Regs <= kPhiloxRegs): a short window for the
// ends of attention's score rows, where a whole one would be mostly unused.
template <int Regs = kPhiloxRegs>
__attribute__((always_inline)) inline void philox_element_bits_lanes(uint64_t seed, uint64_t stream, uint64_t block0,
                                                                     uint32_t bits[Regs * kPhiloxRegElements]) {
  static_assert(Regs >= 1 && Regs <= kPhiloxRegs, "Regs registers of blocks");
#if defined(__AVX2__)
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  // mul_epu32 reads the low word of each 64-bit lane.
  const PhiloxReg m0 = GPTCUDA_PX(set1_epi32)(int(0xD2511F53u)), m1 = GPTCUDA_PX(set1_epi32)(int(0xCD9E8D57u));
  PhiloxReg c0[Regs], c1[Regs], c2[Regs], c3[Regs];
  for (int r = 0; r < Regs; ++r) {
    // Counters built on the host side of the register: the block's high word per lane (a run may cross 2^32).
    alignas(64) uint32_t lo[kPhiloxRegLanes], hi[kPhiloxRegLanes];
    for (int l = 0; l < kPhiloxRegLanes; ++l) {
      const uint64_t block = block0 + uint64_t(r * kPhiloxRegLanes + l);
      lo[l] = static_cast<uint32_t>(block);
      hi[l] = static_cast<uint32_t>(block >> 32);
    }
    std::memcpy(&c0[r], lo, sizeof lo);
    std::memcpy(&c1[r], hi, sizeof hi);
    c2[r] = GPTCUDA_PX(set1_epi32)(int(uint32_t(stream)));
    c3[r] = GPTCUDA_PX(set1_epi32)(int(uint32_t(stream >> 32)));
  }
  for (int round = 0; round < 10; ++round) {
    const PhiloxReg vk0 = GPTCUDA_PX(set1_epi32)(int(k0)), vk1 = GPTCUDA_PX(set1_epi32)(int(k1));
    for (int r = 0; r < Regs; ++r) {
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
  // Register w holds word w of each lane's block; element order wants each
  // block's four words together: a 4x4 transpose within every 128-bit lane
  // (block l's words end up in 128-bit lane l / 4 of register l % 4), then
  // the 128-bit lanes put in block order.
  for (int r = 0; r < Regs; ++r) {
#if defined(__AVX512F__)
    const __m512i t0 = _mm512_unpacklo_epi32(c0[r], c1[r]), t1 = _mm512_unpackhi_epi32(c0[r], c1[r]);
    const __m512i t2 = _mm512_unpacklo_epi32(c2[r], c3[r]), t3 = _mm512_unpackhi_epi32(c2[r], c3[r]);
    const __m512i b0 = _mm512_unpacklo_epi64(t0, t2), b1 = _mm512_unpackhi_epi64(t0, t2);  // blocks 0,4,8,12 | 1,5,9,13
    const __m512i b2 = _mm512_unpacklo_epi64(t1, t3), b3 = _mm512_unpackhi_epi64(t1, t3);  // blocks 2,6,10,14 | 3,7,11,15
    const __m512i u0 = _mm512_shuffle_i32x4(b0, b1, 0x44), u1 = _mm512_shuffle_i32x4(b0, b1, 0xEE);  // 0 4 1 5 | 8 12 9 13
    const __m512i u2 = _mm512_shuffle_i32x4(b2, b3, 0x44), u3 = _mm512_shuffle_i32x4(b2, b3, 0xEE);  // 2 6 3 7 | 10 14 11 15
    uint32_t* out = bits + r * kPhiloxRegElements;
    _mm512_storeu_si512(out + 0, _mm512_shuffle_i32x4(u0, u2, 0x88));   // blocks 0 1 2 3
    _mm512_storeu_si512(out + 16, _mm512_shuffle_i32x4(u0, u2, 0xDD));  // 4 5 6 7
    _mm512_storeu_si512(out + 32, _mm512_shuffle_i32x4(u1, u3, 0x88));  // 8 9 10 11
    _mm512_storeu_si512(out + 48, _mm512_shuffle_i32x4(u1, u3, 0xDD));  // 12 13 14 15
#else
    const __m256i t0 = _mm256_unpacklo_epi32(c0[r], c1[r]), t1 = _mm256_unpackhi_epi32(c0[r], c1[r]);
    const __m256i t2 = _mm256_unpacklo_epi32(c2[r], c3[r]), t3 = _mm256_unpackhi_epi32(c2[r], c3[r]);
    const __m256i b0 = _mm256_unpacklo_epi64(t0, t2), b1 = _mm256_unpackhi_epi64(t0, t2);  // blocks 0,4 | 1,5
    const __m256i b2 = _mm256_unpacklo_epi64(t1, t3), b3 = _mm256_unpackhi_epi64(t1, t3);  // blocks 2,6 | 3,7
    __m256i* out = reinterpret_cast<__m256i*>(bits + r * kPhiloxRegElements);
    _mm256_storeu_si256(out + 0, _mm256_permute2x128_si256(b0, b1, 0x20));  // blocks 0 1
    _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(b2, b3, 0x20));  // 2 3
    _mm256_storeu_si256(out + 2, _mm256_permute2x128_si256(b0, b1, 0x31));  // 4 5
    _mm256_storeu_si256(out + 3, _mm256_permute2x128_si256(b2, b3, 0x31));  // 6 7
#endif
  }
#else
  for (int l = 0; l < Regs * kPhiloxRegLanes; ++l) {
    const Philox4 r = philox4(seed, stream, block0 + uint64_t(l));
    for (int w = 0; w < 4; ++w) bits[4 * l + w] = r.w[w];
  }
#endif
}
#undef GPTCUDA_PX

// Dropout's multipliers for elements first..first+n-1 (n <= kPhiloxWindow - first % 4):
// keep_scale where dropout_keep (philox.h) keeps the element, else 0. The
// window starts at the block holding `first`; a short run draws one register
// of blocks, not a whole window.
inline void dropout_scales_lanes(uint64_t seed, uint64_t stream, uint64_t first, int n, float p, float keep_scale,
                                 float* scale) {
  alignas(64) uint32_t bits[kPhiloxWindow];
  const uint64_t block0 = first >> 2;
  const int skip = int(first & 3), used = skip + n;
  if (used <= kPhiloxRegElements) philox_element_bits_lanes<1>(seed, stream, block0, bits);
  else philox_element_bits_lanes<kPhiloxRegs>(seed, stream, block0, bits);
#pragma omp simd
  for (int j = 0; j < n; ++j)
    scale[j] = static_cast<float>(bits[skip + j] >> 8) * (1.0f / 16777216.0f) >= p ? keep_scale : 0.0f;
}

}  // namespace gptcuda
