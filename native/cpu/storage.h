// Storage-type helpers for the typed ops (backend_ops_typed.def): the CPU
// kernels are templates over S = float or bf16 that do float arithmetic, so
// bf16 data is widened on the way in and rounded (to nearest even) once on
// the way out. For S = float every helper is the identity or a plain copy, so
// the float ops compute exactly what they did before they were templates.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bf16.h"

namespace gptcuda {

// 16 lanes, as gemv.cc: one AVX-512 register or two AVX2 ones of 32-bit
// lanes; GCC vector extensions, so any other target still compiles.
namespace storage_detail {
constexpr int kLanes = 16;
typedef uint32_t u32v __attribute__((vector_size(kLanes * 4)));
typedef uint16_t u16v __attribute__((vector_size(kLanes * 2)));
typedef int32_t i32v __attribute__((vector_size(kLanes * 4)));

inline u32v widen_bits(const bf16* p) {
  u16v h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, u32v) << 16;
}

// float_to_bf16 (bf16.h) lane by lane: the same bits, NaN kept quiet.
inline u16v narrow_bits(const float* p) {
  u32v u;
  std::memcpy(&u, p, sizeof u);
  const u32v rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const u32v quiet = (u >> 16) | 0x40u;
  const i32v is_nan = (u & 0x7fffffffu) > 0x7f800000u;  // lanes of -1 or 0
  const u32v r = (quiet & (u32v)is_nan) | (rounded & ~(u32v)is_nan);
  return __builtin_convertvector(r, u16v);
}
}  // namespace storage_detail

// dst[i] = src[i] as float.
inline void widen(float* dst, const float* src, size_t n) {
  if (dst != src) std::memcpy(dst, src, n * sizeof(float));
}
inline void widen(float* dst, const bf16* src, size_t n) {
  using namespace storage_detail;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const u32v w = widen_bits(src + i);
    std::memcpy(dst + i, &w, sizeof w);
  }
  for (; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

// dst[i] = src[i] rounded to the storage type.
inline void narrow(float* dst, const float* src, size_t n) {
  if (dst != src) std::memcpy(dst, src, n * sizeof(float));
}
inline void narrow(bf16* dst, const float* src, size_t n) {
  using namespace storage_detail;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const u16v h = narrow_bits(src + i);
    std::memcpy(dst + i, &h, sizeof h);
  }
  for (; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

// A float view of n storage values: the data itself for float (no copy),
// else widened into buf. For read-only inputs that a kernel reads repeatedly.
inline const float* as_float(const float* p, size_t /*n*/, std::vector<float>& /*buf*/) { return p; }
inline const float* as_float(const bf16* p, size_t n, std::vector<float>& buf) {
  if (!p) return nullptr;
  if (buf.size() < n) buf.resize(n);
  widen(buf.data(), p, n);
  return buf.data();
}

// A float working copy of n storage values that is written back, rounded
// once, by store(): for outputs a kernel updates in several float steps (+=
// accumulations). For float it works in place.
template <class S>
class FloatRow {
 public:
  float* load(S* p, size_t n) {
    p_ = p;
    n_ = n;
    if constexpr (std::is_same_v<S, float>) {
      return p;
    } else {
      if (buf_.size() < n) buf_.resize(n);
      widen(buf_.data(), p, n);
      return buf_.data();
    }
  }
  // The same without reading p first: the kernel overwrites every element.
  float* overwrite(S* p, size_t n) {
    p_ = p;
    n_ = n;
    if constexpr (std::is_same_v<S, float>) {
      return p;
    } else {
      if (buf_.size() < n) buf_.resize(n);
      return buf_.data();
    }
  }
  void store() {
    if constexpr (!std::is_same_v<S, float>) narrow(p_, buf_.data(), n_);
  }

 private:
  S* p_ = nullptr;
  size_t n_ = 0;
  std::vector<float> buf_;
};

}  // namespace gptcuda
