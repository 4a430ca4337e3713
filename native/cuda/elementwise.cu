// fill / scale / add / accumulate: grid-stride kernels, float4 when every
// pointer is 16-byte aligned (the head is then vectorised and the last n % 4
// elements are done one by one), plain floats otherwise.
#include "backend_cuda.cuh"

namespace gptcuda {
namespace {
// emu:kernels-begin (native/cuda/emu/run.sh tests the code up to emu:kernels-end)

constexpr int kBlock = 256;

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

// emu:kernels-end
}  // namespace

void CudaBackend::fill(float* x, size_t n, float value) {
  if (n == 0) return;
  begin_op("fill");
  const bool vec = cudak::aligned16(x);
  const unsigned grid = cudak::grid_for(vec ? (n + 3) / 4 : n, kBlock, sm_count_);
  fill_kernel<<<grid, kBlock, 0, stream_>>>(x, n, value, vec);
  cudak::check_launch("fill");
}

void CudaBackend::scale(float* x, size_t n, float s) {
  if (n == 0) return;
  begin_op("scale");
  const bool vec = cudak::aligned16(x);
  const unsigned grid = cudak::grid_for(vec ? (n + 3) / 4 : n, kBlock, sm_count_);
  scale_kernel<<<grid, kBlock, 0, stream_>>>(x, n, s, vec);
  cudak::check_launch("scale");
}

void CudaBackend::add(float* out, const float* a, const float* b, size_t n) {
  if (n == 0) return;
  begin_op("add");
  const bool vec = cudak::aligned16(out) && cudak::aligned16(a) && cudak::aligned16(b);
  const unsigned grid = cudak::grid_for(vec ? (n + 3) / 4 : n, kBlock, sm_count_);
  add_kernel<<<grid, kBlock, 0, stream_>>>(out, a, b, n, vec);
  cudak::check_launch("add");
}

void CudaBackend::accumulate(float* dst, const float* src, size_t n) {
  if (n == 0) return;
  begin_op("accumulate");
  const bool vec = cudak::aligned16(dst) && cudak::aligned16(src);
  const unsigned grid = cudak::grid_for(vec ? (n + 3) / 4 : n, kBlock, sm_count_);
  accumulate_kernel<<<grid, kBlock, 0, stream_>>>(dst, src, n, vec);
  cudak::check_launch("accumulate");
}

}  // namespace gptcuda
