// Decode against the KV cache: a kernel copies the new K/V rows into the caches,
// then one block per (b, h, new query) of 8 warps; each warp takes 32 cache
// positions at a time (one per lane: a dot product against q in shared memory),
// keeps an online softmax and a partial output (lane = dims), and the 8 warps are
// merged at the end. A prefill from position 0 (32 or more new positions) runs
// the tiled forward kernels instead.

#include "attention_common.cuh"

namespace gptcuda {
namespace {

// kcache/vcache[b, h, pos0 + i, d] = K/V of qkv[b, i, h, d] for the Tn new positions.
template <class S>
__global__ void kv_cache_write_kernel(S* kcache, S* vcache, const S* qkv, int B, int Tn, int C,
                                      int NH, int Tmax, int pos0) {
  const int hs = C / NH;
  const size_t total = static_cast<size_t>(B) * Tn * C;
  cudak::grid_stride(total, [&](size_t idx) {
    const int c = static_cast<int>(idx % C);
    const size_t bi = idx / C;  // b*Tn + i
    const int i = static_cast<int>(bi % Tn);
    const int b = static_cast<int>(bi / Tn);
    const int h = c / hs, d = c % hs;
    const size_t dst = ((static_cast<size_t>(b) * NH + h) * Tmax + pos0 + i) * hs + d;
    const S* src = qkv + bi * 3 * C + c;
    kcache[dst] = src[C];
    vcache[dst] = src[2 * C];
  });
}

constexpr int kDecodeWarps = 8;
constexpr int kDecodeDims = kMaxHead / 32;  // head dims per lane
// One block per (b, h, i): query pos0 + i against cache positions 0 .. pos0 + i.
// S: the storage type of out, the caches and qkv; scores, softmax and the
// output sums are float.
template <class S>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attention_decode_kernel(S* out, const S* kcache, const S* vcache, const S* qkv, int Tn, int C,
                            int NH, int Tmax, int pos0, float scale, bool vec) {
  __shared__ __align__(16) float q_s[kMaxHead];
  __shared__ float m_s[kDecodeWarps], l_s[kDecodeWarps];
  __shared__ float acc_s[kDecodeWarps][kMaxHead];
  const int hs = C / NH;
  const int i = blockIdx.x % Tn;
  const int bh = blockIdx.x / Tn, b = bh / NH, h = bh % NH;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int last = pos0 + i;  // attends to positions 0 .. last
  const S* q = qkv + (static_cast<size_t>(b) * Tn + i) * 3 * C + h * hs;
  for (int d = threadIdx.x; d < kMaxHead; d += blockDim.x)
    q_s[d] = d < hs ? to_float(q[d]) * scale : 0.f;
  __syncthreads();

  const S* kc = kcache + static_cast<size_t>(bh) * Tmax * hs;
  const S* vc = vcache + static_cast<size_t>(bh) * Tmax * hs;
  float m = -INFINITY, l = 0.f;
  float acc[kDecodeDims] = {};  // dims lane + 32 r
  for (int base = warp * 32; base <= last; base += kDecodeWarps * 32) {
    // Scores, one cache position per lane.
    const int s = base + lane;
    float score = -INFINITY;
    if (s <= last) {
      const S* k = kc + static_cast<size_t>(s) * hs;
      float dot = 0.f;
      if (vec) {
        for (int d = 0; d < hs; d += 4) {
          const float4 kv = cudak::load4(k + d);
          const float4 qv = *reinterpret_cast<const float4*>(q_s + d);
          dot += kv.x * qv.x + kv.y * qv.y + kv.z * qv.z + kv.w * qv.w;
        }
      } else {
        for (int d = 0; d < hs; ++d) dot += to_float(k[d]) * q_s[d];
      }
      score = dot;
    }
    // Online softmax over this chunk (lane 0's position base <= last is valid,
    // so the chunk max is finite).
    const float m_new = fmaxf(m, cudak::warp_max(score));
    const float corr = __expf(m - m_new);
    const float p = __expf(score - m_new);
    l = l * corr + p;
    m = m_new;
#pragma unroll
    for (int r = 0; r < kDecodeDims; ++r) acc[r] *= corr;
    const int n = min(32, last - base + 1);
#pragma unroll 4
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const S* v = vc + static_cast<size_t>(base + j) * hs;
#pragma unroll
      for (int r = 0; r < kDecodeDims; ++r) {
        const int d = lane + 32 * r;
        if (d < hs) acc[r] = fmaf(pj, to_float(v[d]), acc[r]);
      }
    }
  }
  l = cudak::warp_sum(l);
  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
#pragma unroll
  for (int r = 0; r < kDecodeDims; ++r) acc_s[warp][lane + 32 * r] = acc[r];
  __syncthreads();

  // Merge the warps (warp 0 always saw position 0, so M is finite).
  for (int d = threadIdx.x; d < hs; d += blockDim.x) {
    float M = -INFINITY;
    for (int w = 0; w < kDecodeWarps; ++w) M = fmaxf(M, m_s[w]);
    float tot = 0.f, o = 0.f;
    for (int w = 0; w < kDecodeWarps; ++w) {
      const float f = __expf(m_s[w] - M);  // 0 for a warp with no positions
      tot += l_s[w] * f;
      o += acc_s[w][d] * f;
    }
    out[(static_cast<size_t>(b) * Tn + i) * C + h * hs + d] = from_float<S>(o / tot);
  }
}

}  // namespace

template <class S>
void CudaBackend::attention_decode_impl(S* out, S* kcache, S* vcache, const S* qkv, int B, int Tn,
                                        int C, int NH, int Tmax, int pos0) {
  const char* op = "attention_decode";
  if (!attn::has_work(B, Tn, C, NH, op)) return;
  if (pos0 < 0 || pos0 + Tn > Tmax)
    throw std::runtime_error(std::string(op) + ": positions " + std::to_string(pos0) + ".." +
                             std::to_string(pos0 + Tn - 1) + " do not fit the cache of " +
                             std::to_string(Tmax));
  begin_op(op);
  const int hs = C / NH;
  const size_t total = static_cast<size_t>(B) * Tn * C;
  kv_cache_write_kernel<S><<<cudak::grid_for(total, 256, sm_count_), 256, 0, stream_>>>(
      kcache, vcache, qkv, B, Tn, C, NH, Tmax, pos0);
  cudak::check_launch(op);
  if (pos0 == 0 && Tn >= 32) {
    // A prefill: the new positions are the whole context, which is exactly
    // causal attention over qkv; the tiled kernels are much faster than one
    // block per query. lse is not needed.
    const attn::ForwardArgsT<S> a{
        {qkv, B, Tn, C, NH, 0.f, DropoutRng{}, stream_, max_smem_optin_, op}, out, nullptr};
    attn::dispatch(hs, use_tc_attention(hs), [&](auto family) { family.forward(a); });
    return;
  }
  const bool vec = hs % 4 == 0 && cudak::aligned16(kcache);
  const unsigned blocks = static_cast<unsigned>(static_cast<size_t>(B) * NH * Tn);
  attention_decode_kernel<S><<<blocks, kDecodeWarps * 32, 0, stream_>>>(
      out, kcache, vcache, qkv, Tn, C, NH, Tmax, pos0, 1.f / sqrtf(static_cast<float>(hs)), vec);
  cudak::check_launch(op);
}
void CudaBackend::attention_decode(float* out, float* kcache, float* vcache, const float* qkv,
                                   int B, int Tn, int C, int NH, int Tmax, int pos0) {
  attention_decode_impl(out, kcache, vcache, qkv, B, Tn, C, NH, Tmax, pos0);
}
void CudaBackend::attention_decode(bf16* out, bf16* kcache, bf16* vcache, const bf16* qkv, int B,
                                   int Tn, int C, int NH, int Tmax, int pos0) {
  attention_decode_impl(out, kcache, vcache, qkv, B, Tn, C, NH, Tmax, pos0);
}

}  // namespace gptcuda
