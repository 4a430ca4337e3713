// fill / scale / add / accumulate: grid-stride kernels over the storage type S
// (arithmetic in float), 16-byte packs (4 floats, 8 bf16) when every pointer is
// 16-byte aligned (the head is then vectorised and the last elements are done
// one by one), single elements otherwise.
#include "backend_cuda.cuh"

namespace gptcuda {
namespace {

using cudak::Pack;

template <class S>
__global__ void fill_kernel(S* x, size_t n, float value, bool vec) {
  cudak::grid_stride_packed<S>(
      n, vec,
      [&](size_t i) {
        Pack<S> v;
#pragma unroll
        for (int j = 0; j < Pack<S>::kWidth; ++j) v.set(j, value);
        cudak::store_pack(x + i * Pack<S>::kWidth, v);
      },
      [&](size_t i) { x[i] = from_float<S>(value); });
}

template <class S>
__global__ void scale_kernel(S* x, size_t n, float s, bool vec) {
  cudak::grid_stride_packed<S>(
      n, vec,
      [&](size_t i) {
        Pack<S> v = cudak::load_pack(x + i * Pack<S>::kWidth);
#pragma unroll
        for (int j = 0; j < Pack<S>::kWidth; ++j) v.set(j, v.get(j) * s);
        cudak::store_pack(x + i * Pack<S>::kWidth, v);
      },
      [&](size_t i) { x[i] = from_float<S>(to_float(x[i]) * s); });
}

// out may alias a or b (out = a + b elementwise, each element read before written).
template <class S>
__global__ void add_kernel(S* out, const S* a, const S* b, size_t n, bool vec) {
  cudak::grid_stride_packed<S>(
      n, vec,
      [&](size_t i) {
        const size_t at = i * Pack<S>::kWidth;
        const Pack<S> u = cudak::load_pack(a + at), v = cudak::load_pack(b + at);
        Pack<S> o;
#pragma unroll
        for (int j = 0; j < Pack<S>::kWidth; ++j) o.set(j, u.get(j) + v.get(j));
        cudak::store_pack(out + at, o);
      },
      [&](size_t i) { out[i] = from_float<S>(to_float(a[i]) + to_float(b[i])); });
}

template <class S>
__global__ void accumulate_kernel(S* dst, const S* src, size_t n, bool vec) {
  cudak::grid_stride_packed<S>(
      n, vec,
      [&](size_t i) {
        const size_t at = i * Pack<S>::kWidth;
        Pack<S> d = cudak::load_pack(dst + at);
        const Pack<S> s = cudak::load_pack(src + at);
#pragma unroll
        for (int j = 0; j < Pack<S>::kWidth; ++j) d.set(j, d.get(j) + s.get(j));
        cudak::store_pack(dst + at, d);
      },
      [&](size_t i) { dst[i] = from_float<S>(to_float(dst[i]) + to_float(src[i])); });
}

__global__ void to_bf16_kernel(bf16* dst, const float* src, size_t n) {
  cudak::grid_stride(n, [&](size_t i) { dst[i] = float_to_bf16(src[i]); });
}

__global__ void from_bf16_kernel(float* dst, const bf16* src, size_t n) {
  cudak::grid_stride(n, [&](size_t i) { dst[i] = bf16_to_float(src[i]); });
}

}  // namespace

template <class S>
void CudaBackend::fill_impl(S* x, size_t n, float value) {
  const bool vec = cudak::aligned16(x);
  launch_grid_stride("fill", n, vec, fill_kernel<S>, x, n, value, vec);
}
void CudaBackend::fill(float* x, size_t n, float value) { fill_impl(x, n, value); }
void CudaBackend::fill(bf16* x, size_t n, float value) { fill_impl(x, n, value); }

template <class S>
void CudaBackend::scale_impl(S* x, size_t n, float s) {
  const bool vec = cudak::aligned16(x);
  launch_grid_stride("scale", n, vec, scale_kernel<S>, x, n, s, vec);
}
void CudaBackend::scale(float* x, size_t n, float s) { scale_impl(x, n, s); }
void CudaBackend::scale(bf16* x, size_t n, float s) { scale_impl(x, n, s); }

template <class S>
void CudaBackend::add_impl(S* out, const S* a, const S* b, size_t n) {
  const bool vec = cudak::aligned16(out) && cudak::aligned16(a) && cudak::aligned16(b);
  launch_grid_stride("add", n, vec, add_kernel<S>, out, a, b, n, vec);
}
void CudaBackend::add(float* out, const float* a, const float* b, size_t n) { add_impl(out, a, b, n); }
void CudaBackend::add(bf16* out, const bf16* a, const bf16* b, size_t n) { add_impl(out, a, b, n); }

template <class S>
void CudaBackend::accumulate_impl(S* dst, const S* src, size_t n) {
  const bool vec = cudak::aligned16(dst) && cudak::aligned16(src);
  launch_grid_stride("accumulate", n, vec, accumulate_kernel<S>, dst, src, n, vec);
}
void CudaBackend::accumulate(float* dst, const float* src, size_t n) { accumulate_impl(dst, src, n); }
void CudaBackend::accumulate(bf16* dst, const bf16* src, size_t n) { accumulate_impl(dst, src, n); }

void CudaBackend::to_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }
void CudaBackend::from_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }

void CudaBackend::to_storage(bf16* dst, const float* src, size_t n) {
  launch_grid_stride("to_storage", n, false, to_bf16_kernel, dst, src, n);
}
void CudaBackend::from_storage(float* dst, const bf16* src, size_t n) {
  launch_grid_stride("from_storage", n, false, from_bf16_kernel, dst, src, n);
}

}  // namespace gptcuda
