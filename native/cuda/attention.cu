// The attention ops' entry points: validation, the D pre-pass of the backward,
// and the kernel family for the head size (attn::dispatch). The kernels and
// their layout: attention_common.cuh; decode: attention_decode.cu.
#include "attention_common.cuh"

namespace gptcuda {
namespace {

// D[(b*NH + h)*T + t] = sum_d dout[b, t, h, d] * out[b, t, h, d]; one warp per (b, t, h).
__global__ void attention_backward_d_kernel(float* D, const float* dout, const float* out, int B,
                                            int T, int C, int NH) {
  const int lane = threadIdx.x & 31;
  const size_t w = static_cast<size_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (w >= static_cast<size_t>(B) * T * NH) return;
  const int hs = C / NH;
  const int h = static_cast<int>(w % NH);
  const size_t bt = w / NH;  // b*T + t
  const float* g = dout + bt * C + h * hs;
  const float* o = out + bt * C + h * hs;
  float acc = 0.f;
  for (int d = lane; d < hs; d += 32) acc += g[d] * o[d];
  acc = cudak::warp_sum(acc);
  if (lane == 0) {
    const size_t b = bt / T, t = bt % T;
    D[(b * NH + h) * T + t] = acc;
  }
}

}  // namespace

void CudaBackend::attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                                    int NH, float dropout_p, DropoutRng rng) {
  const char* op = "attention_forward";
  if (!attn::has_work(B, T, C, NH, op)) return;
  begin_op(op);
  const attn::ForwardArgs a{
      {qkv, B, T, C, NH, fmaxf(dropout_p, 0.f), rng, stream_, max_smem_optin_, op}, out, lse};
  attn::dispatch(C / NH, use_tc_attention(C / NH), [&](auto family) { family.forward(a); });
}

void CudaBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                     const float* out, const float* lse, int B, int T, int C,
                                     int NH, float dropout_p, DropoutRng rng) {
  const char* op = "attention_backward";
  if (!attn::has_work(B, T, C, NH, op)) return;
  begin_op(op);
  const size_t rows = static_cast<size_t>(B) * NH * T;
  float* D = static_cast<float*>(scratch(kScratchAttnD, rows * sizeof(float)));
  attention_backward_d_kernel<<<cudak::ceil_div(rows, 8), 256, 0, stream_>>>(D, dout, out, B, T, C,
                                                                            NH);
  cudak::check_launch(op);
  const attn::BackwardArgs a{
      {qkv, B, T, C, NH, fmaxf(dropout_p, 0.f), rng, stream_, max_smem_optin_, op}, dqkv, dout, lse, D};
  attn::dispatch(C / NH, use_tc_attention(C / NH), [&](auto family) { family.backward(a); });
}

}  // namespace gptcuda
