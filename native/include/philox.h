// Philox4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers: as
// easy as 1, 2, 3"). A pure function of (key, counter): the CPU and CUDA
// backends compile this same header, so both draw identical dropout masks, and
// a backward pass regenerates the forward's mask from its index.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GPTCUDA_HD __host__ __device__ __forceinline__
#else
#define GPTCUDA_HD inline
#endif

namespace gptcuda {

GPTCUDA_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

struct Philox4 {
  uint32_t w[4];
};

// Philox4x32-10 at counter (index_lo, index_hi, stream_lo, stream_hi) under
// key (seed_lo, seed_hi): four random words.
GPTCUDA_HD Philox4 philox4(uint64_t seed, uint64_t stream, uint64_t index) {
  uint32_t c0 = static_cast<uint32_t>(index), c1 = static_cast<uint32_t>(index >> 32);
  uint32_t c2 = static_cast<uint32_t>(stream), c3 = static_cast<uint32_t>(stream >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo32(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo32(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 bits of resolution, from word 0 of block `index`
// (fill_uniform's draw).
GPTCUDA_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return static_cast<float>(philox4(seed, stream, index).w[0] >> 8) * (1.0f / 16777216.0f);
}

// Standard normal sample number `index`: Box-Muller on words 0 and 1 of the
// Philox block index/2, cosine for even and sine for odd indices (the
// uniform is shifted by half a step so log never sees 0).
GPTCUDA_HD float philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  Philox4 r = philox4(seed, stream, index >> 1);
  float u1 = (static_cast<float>(r.w[0] >> 8) + 0.5f) * (1.0f / 16777216.0f);
  float u2 = static_cast<float>(r.w[1] >> 8) * (1.0f / 16777216.0f);
  float radius = sqrtf(-2.0f * logf(u1));
  float angle = 6.283185307179586f * u2;
  return radius * ((index & 1) ? sinf(angle) : cosf(angle));
}

// Element `index`'s 32 random bits, for dropout and stochastic rounding: word
// index % 4 of the Philox block index / 4, so one block serves four
// consecutive elements (a quarter of the work of one block per element).
GPTCUDA_HD uint32_t philox_element_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox4(seed, stream, index >> 2).w[index & 3];
}

// Dropout keeps element `index` when its uniform draw (the top 24 of its
// element bits, / 2^24) is >= p.
GPTCUDA_HD bool dropout_keep_bits(uint32_t bits, float p) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f) >= p;
}
GPTCUDA_HD bool dropout_keep(uint64_t seed, uint64_t stream, uint64_t index, float p) {
  return dropout_keep_bits(philox_element_bits(seed, stream, index), p);
}

// The 16 random bits stochastic rounding uses for element `index` (AdamW's
// bf16 parameter copy, backend_ops_typed.def): the low half of its element bits.
GPTCUDA_HD uint32_t philox_rounding_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox_element_bits(seed, stream, index) & 0xffffu;
}

}  // namespace gptcuda
