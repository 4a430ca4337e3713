// fill / scale / add / accumulate: grid-stride kernels, float4 when every
// pointer is 16-byte aligned (the head is then vectorised and the last n % 4
// elements are done one by one), plain floats otherwise.
#include "backend_cuda.cuh"

namespace gptcuda {
namespace {

__global__ void fill_kernel(float* x, size_t n, float value, bool vec) {
  cudak::grid_stride(
      n, vec,
      [&](size_t i) { reinterpret_cast<float4*>(x)[i] = make_float4(value, value, value, value); },
      [&](size_t i) { x[i] = value; });
}

__global__ void scale_kernel(float* x, size_t n, float s, bool vec) {
  cudak::grid_stride(
      n, vec,
      [&](size_t i) {
        float4 v = reinterpret_cast<float4*>(x)[i];
        v.x *= s; v.y *= s; v.z *= s; v.w *= s;
        reinterpret_cast<float4*>(x)[i] = v;
      },
      [&](size_t i) { x[i] *= s; });
}

// out may alias a or b (out = a + b elementwise, each element read before written).
__global__ void add_kernel(float* out, const float* a, const float* b, size_t n, bool vec) {
  cudak::grid_stride(
      n, vec,
      [&](size_t i) {
        const float4 u = reinterpret_cast<const float4*>(a)[i];
        const float4 v = reinterpret_cast<const float4*>(b)[i];
        reinterpret_cast<float4*>(out)[i] = make_float4(u.x + v.x, u.y + v.y, u.z + v.z, u.w + v.w);
      },
      [&](size_t i) { out[i] = a[i] + b[i]; });
}

__global__ void accumulate_kernel(float* dst, const float* src, size_t n, bool vec) {
  cudak::grid_stride(
      n, vec,
      [&](size_t i) {
        float4 d = reinterpret_cast<float4*>(dst)[i];
        const float4 s = reinterpret_cast<const float4*>(src)[i];
        d.x += s.x; d.y += s.y; d.z += s.z; d.w += s.w;
        reinterpret_cast<float4*>(dst)[i] = d;
      },
      [&](size_t i) { dst[i] += src[i]; });
}

__global__ void to_bf16_kernel(bf16* dst, const float* src, size_t n) {
  cudak::grid_stride(n, [&](size_t i) { dst[i] = float_to_bf16(src[i]); });
}

__global__ void from_bf16_kernel(float* dst, const bf16* src, size_t n) {
  cudak::grid_stride(n, [&](size_t i) { dst[i] = bf16_to_float(src[i]); });
}

}  // namespace

void CudaBackend::fill(float* x, size_t n, float value) {
  const bool vec = cudak::aligned16(x);
  launch_grid_stride("fill", n, vec, fill_kernel, x, n, value, vec);
}

void CudaBackend::scale(float* x, size_t n, float s) {
  const bool vec = cudak::aligned16(x);
  launch_grid_stride("scale", n, vec, scale_kernel, x, n, s, vec);
}

void CudaBackend::add(float* out, const float* a, const float* b, size_t n) {
  const bool vec = cudak::aligned16(out) && cudak::aligned16(a) && cudak::aligned16(b);
  launch_grid_stride("add", n, vec, add_kernel, out, a, b, n, vec);
}

void CudaBackend::accumulate(float* dst, const float* src, size_t n) {
  const bool vec = cudak::aligned16(dst) && cudak::aligned16(src);
  launch_grid_stride("accumulate", n, vec, accumulate_kernel, dst, src, n, vec);
}

void CudaBackend::to_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }
void CudaBackend::from_storage(float* dst, const float* src, size_t n) { copy(dst, src, n * sizeof(float)); }

void CudaBackend::to_storage(bf16* dst, const float* src, size_t n) {
  launch_grid_stride("to_storage", n, false, to_bf16_kernel, dst, src, n);
}
void CudaBackend::from_storage(float* dst, const bf16* src, size_t n) {
  launch_grid_stride("from_storage", n, false, from_bf16_kernel, dst, src, n);
}

}  // namespace gptcuda
