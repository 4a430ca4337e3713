// The attention ops' entry points: validation, the D pre-pass of the backward,
// and the kernel family for the head size (attn::dispatch). The kernels and
// their layout: attention_common.cuh; decode: attention_decode.cu. Both storage
// types take the same family for a head size: tensor cores (TF32 or bf16) when
// use_tc_attention says so, else CUDA cores.
#include <type_traits>

#include "attention_common.cuh"

namespace gptcuda {
namespace {

// D[(b*NH + h)*T + t] = sum_d dout[b, t, h, d] * out[b, t, h, d]; one warp per (b, t, h).
template <class S>
__global__ void attention_backward_d_kernel(float* D, const S* dout, const S* out, int B, int T,
                                            int C, int NH) {
  const int lane = threadIdx.x & 31;
  const size_t w = static_cast<size_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (w >= static_cast<size_t>(B) * T * NH) return;
  const int hs = C / NH;
  const int h = static_cast<int>(w % NH);
  const size_t bt = w / NH;  // b*T + t
  const S* g = dout + bt * C + h * hs;
  const S* o = out + bt * C + h * hs;
  float acc = 0.f;
  for (int d = lane; d < hs; d += 32) acc += to_float(g[d]) * to_float(o[d]);
  acc = cudak::warp_sum(acc);
  if (lane == 0) {
    const size_t b = bt / T, t = bt % T;
    D[(b * NH + h) * T + t] = acc;
  }
}

// Runs the forward (ForwardArgsT) or the backward (BackwardArgsT) of the family
// for the head size.
template <class S, class Args>
void run_family(int hs, bool tensor_cores, const Args& a) {
  attn::dispatch(hs, tensor_cores, [&](auto family) {
    if constexpr (std::is_same_v<Args, attn::ForwardArgsT<S>>) family.forward(a);
    else family.backward(a);
  });
}

}  // namespace

template <class S>
void CudaBackend::attention_forward_impl(S* out, float* lse, const S* qkv, int B, int T, int C,
                                         int NH, float dropout_p, DropoutRng rng) {
  const char* op = "attention_forward";
  if (!attn::has_work(B, T, C, NH, op)) return;
  begin_op(op);
  const attn::ForwardArgsT<S> a{
      {qkv, B, T, C, NH, fmaxf(dropout_p, 0.f), rng, stream_, max_smem_optin_, op}, out, lse};
  run_family<S>(C / NH, use_tc_attention(C / NH), a);
}
void CudaBackend::attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                                    int NH, float dropout_p, DropoutRng rng) {
  attention_forward_impl(out, lse, qkv, B, T, C, NH, dropout_p, rng);
}
void CudaBackend::attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C,
                                    int NH, float dropout_p, DropoutRng rng) {
  attention_forward_impl(out, lse, qkv, B, T, C, NH, dropout_p, rng);
}

template <class S>
void CudaBackend::attention_backward_impl(S* dqkv, const S* dout, const S* qkv, const S* out,
                                          const float* lse, int B, int T, int C, int NH,
                                          float dropout_p, DropoutRng rng) {
  const char* op = "attention_backward";
  if (!attn::has_work(B, T, C, NH, op)) return;
  begin_op(op);
  const size_t rows = static_cast<size_t>(B) * NH * T;
  float* D = static_cast<float*>(scratch(kScratchAttnD, rows * sizeof(float)));
  attention_backward_d_kernel<S><<<cudak::ceil_div(rows, 8), 256, 0, stream_>>>(D, dout, out, B, T, C,
                                                                            NH);
  cudak::check_launch(op);
  const attn::BackwardArgsT<S> a{
      {qkv, B, T, C, NH, fmaxf(dropout_p, 0.f), rng, stream_, max_smem_optin_, op}, dqkv, dout, lse, D};
  run_family<S>(C / NH, use_tc_attention(C / NH), a);
}
void CudaBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                     const float* out, const float* lse, int B, int T, int C,
                                     int NH, float dropout_p, DropoutRng rng) {
  attention_backward_impl(dqkv, dout, qkv, out, lse, B, T, C, NH, dropout_p, rng);
}
void CudaBackend::attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv,
                                     const bf16* out, const float* lse, int B, int T, int C,
                                     int NH, float dropout_p, DropoutRng rng) {
  attention_backward_impl(dqkv, dout, qkv, out, lse, B, T, C, NH, dropout_p, rng);
}

}  // namespace gptcuda

