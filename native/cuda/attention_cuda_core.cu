// The CUDA-core attention kernels (layout and algorithms: attention_common.cuh),
// one instance per padded head size HSP in {32, 64, 128, 256} and storage type S
// (float or bf16 in global memory; shared tiles, products and the softmax are
// float32). They run when attention's tensor cores are off (GPTCUDA_TF32=0, or
// before sm_80) or the head has more than 64 dims, for either storage type.
#include "attention_common.cuh"

namespace gptcuda {
namespace {

// acc[i][j] = sum_d A[ty*4+i][d] * Bm[tx+16j][d]: a score-type tile (dot products
// over the head dim) from two shared tiles of row stride HSP+4.
template <int HSP, int RN>
__device__ __forceinline__ void tile_dot(float (&acc)[4][RN], const float* A, const float* Bm,
                                         int ty, int tx) {
  constexpr int LD = HSP + 4;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < RN; ++j) acc[i][j] = 0.f;
#pragma unroll 4
  for (int k = 0; k < HSP; k += 4) {
    float4 a[4], b[RN];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = *reinterpret_cast<const float4*>(A + (ty * 4 + i) * LD + k);
#pragma unroll
    for (int j = 0; j < RN; ++j) b[j] = *reinterpret_cast<const float4*>(Bm + (tx + 16 * j) * LD + k);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        float s = acc[i][j];
        s = fmaf(a[i].x, b[j].x, s);
        s = fmaf(a[i].y, b[j].y, s);
        s = fmaf(a[i].z, b[j].z, s);
        s = fmaf(a[i].w, b[j].w, s);
        acc[i][j] = s;
      }
  }
}

// acc[i][j] += sum_c Tm[ty*4+i][c] * Vm[c][dim_of(tx, j)] for c < BN: an
// accumulator-type product (scores times a [BN, HSP] tile). Tm has row stride
// BN+4, Vm HSP+4.
template <int HSP, int BN>
__device__ __forceinline__ void tile_accumulate(float (&acc)[4][HSP / 16], const float* Tm,
                                                const float* Vm, int ty, int tx) {
  constexpr int LD = HSP + 4, LDT = BN + 4, DPT = HSP / 16;
#pragma unroll 2
  for (int c = 0; c < BN; c += 4) {
    float4 p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = *reinterpret_cast<const float4*>(Tm + (ty * 4 + i) * LDT + c);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float v[DPT];
      load_dims<HSP>(v, Vm + (c + k) * LD, tx);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float pk = f4get(p[i], k);
#pragma unroll
        for (int j = 0; j < DPT; ++j) acc[i][j] = fmaf(pk, v[j], acc[i][j]);
      }
    }
  }
}

template <int DPT>
__device__ __forceinline__ void zero_rows(float (&acc)[4][DPT]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < DPT; ++j) acc[i][j] = 0.f;
}

template <int HSP>
constexpr size_t forward_smem_bytes() {
  return (3 * kRows * (HSP + 4) + kRows * (64 + 4)) * sizeof(float);
}

template <int HSP, class S>
__global__ void __launch_bounds__(kThreads, HSP <= 64 ? 2 : 1)
    attention_forward_kernel(S* out, float* lse, const S* qkv, int T, int C, int NH,
                             float scale, float p_drop, uint64_t seed, uint64_t stream,
                             bool vec_in, bool vec_out) {
  constexpr int LD = HSP + 4, BN = 64, LDT = BN + 4, RN = BN / 16, DPT = HSP / 16;
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);
  float* Ks = Qs + kRows * LD;
  float* Vs = Ks + BN * LD;
  float* Ps = Vs + BN * LD;

  const HeadBlockT<S> hb(qkv, nullptr, T, C, NH, scale, p_drop, seed, stream);
  const int q0 = heavy_first_tile(T);

  load_head_tile<HSP>(Qs, hb.q, hb.stride, q0, kRows, T, hb.hs, vec_in);
  SoftmaxRows<DPT> rows;

  const int k_end = min(T, q0 + kRows);  // keys s <= t < q0 + 64
  for (int k0 = 0; k0 < k_end; k0 += BN) {
    __syncthreads();  // the previous tile's P V is done with Ks/Vs/Ps
    hb.template load_kv<HSP>(Ks, Vs, k0, BN, vec_in);
    __syncthreads();

    float s[4][RN];
    tile_dot<HSP, RN>(s, Qs, Ks, hb.ty, hb.tx);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      rows.step(i, s[i], Ps + (hb.ty * 4 + i) * LDT, q0, k0, hb);
    __syncthreads();
    tile_accumulate<HSP, BN>(rows.o, Ps, Vs, hb.ty, hb.tx);
  }
  rows.template store<HSP>(out, lse, hb, q0, vec_out);
}

template <int HSP, int BN>
constexpr size_t backward_smem_bytes() {
  // two [64][HSP+4] row tiles, two [BN][HSP+4] column tiles, two [64][BN+4]
  // score tiles, and BN or 64 floats each for lse and D (64 covers both).
  return (2 * kRows * (HSP + 4) + 2 * BN * (HSP + 4) + 2 * kRows * (BN + 4) + 2 * kRows) *
         sizeof(float);
}

// The backward in one of its two roles (BackwardRole): dK and dV of 64 keys, or dQ
// of 64 queries, visiting the other side BN rows at a time.
template <int HSP, int BN, bool kKeys, class S>
__global__ void __launch_bounds__(kThreads, HSP <= 64 ? 2 : 1)
    attention_backward_kernel(S* dqkv, const S* dout, const S* qkv, const float* lse,
                              const float* Dv, int T, int C, int NH, float scale, float p_drop,
                              uint64_t seed, uint64_t stream, bool vec_qkv, bool vec_dout,
                              bool vec_dqkv) {
  constexpr int LD = HSP + 4, LDT = BN + 4, RN = BN / 16, DPT = HSP / 16;
  extern __shared__ float4 smem4[];
  const BackwardSmem sm(smem4, LD, BN, LDT);
  const HeadBlockT<S> hb(qkv, dout, T, C, NH, scale, p_drop, seed, stream);
  const BackwardRole<HSP, kKeys, S> role(sm, hb, lse, Dv, vec_qkv, vec_dout);

  role.load_own();
  float g0[4][DPT], g1[4][DPT];  // dK and dV, or dQ (g1 unused)
  zero_rows(g0);
  zero_rows(g1);

  for (int v0 = role.visit_begin(); v0 < role.visit_end(); v0 += BN) {
    __syncthreads();  // the previous tile is done with the visited, score and stats tiles
    role.load_visited(v0, BN);
    __syncthreads();

    float st[4][RN], dpt[4][RN];
    tile_dot<HSP, RN>(st, sm.own0, sm.vis0, hb.ty, hb.tx);   // k_s . q_t
    tile_dot<HSP, RN>(dpt, sm.own1, sm.vis1, hb.ty, hb.tx);  // v_s . dO_t (before dropout)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = hb.ty * 4 + i;
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        const int c = hb.tx + 16 * j;
        const float2 g = role.score(st[i][j], dpt[i][j], r, c, v0);
        if constexpr (kKeys) sm.s0[r * LDT + c] = g.x;  // P' (dropout applied)
        sm.s1[r * LDT + c] = g.y;                       // dS
      }
    }
    __syncthreads();
    tile_accumulate<HSP, BN>(g0, sm.s1, sm.vis0, hb.ty, hb.tx);  // dK += dS^T Q, dQ += dS K
    if constexpr (kKeys) tile_accumulate<HSP, BN>(g1, sm.s0, sm.vis1, hb.ty, hb.tx);  // dV += P'^T dO
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) role.store(dqkv, i, g0[i], g1[i], scale, vec_dqkv);
}

// The two roles under their own names.
template <int HSP, int BN, class S>
constexpr auto attention_backward_dkv_kernel = attention_backward_kernel<HSP, BN, true, S>;
template <int HSP, int BN, class S>
constexpr auto attention_backward_dq_kernel = attention_backward_kernel<HSP, BN, false, S>;

}  // namespace

namespace attn {

template <int HSP>
template <class S>
void CudaCore<HSP>::forward(const ForwardArgsT<S>& a) {
  const size_t smem = forward_smem_bytes<HSP>();
  static const bool configured = ensure_smem(attention_forward_kernel<HSP, S>, smem, a);
  (void)configured;
  attention_forward_kernel<HSP, S><<<a.grid(), kThreads, smem, a.stream>>>(
      a.out, a.lse, a.qkv, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed, a.rng.stream, a.vec(a.qkv),
      a.vec(a.out));
  cudak::check_launch(a.op);
}

template <int HSP>
template <class S>
void CudaCore<HSP>::backward(const BackwardArgsT<S>& a) {
  // 32-wide inner tiles from hs = 64 up: with 64 the dK/dV kernel needs ~190
  // registers, i.e. one block per SM; with 32 it fits two (registers and
  // shared memory).
  constexpr int BN = HSP <= 32 ? 64 : 32;
  const size_t smem = backward_smem_bytes<HSP, BN>();
  static const bool configured =
      ensure_smem(attention_backward_dkv_kernel<HSP, BN, S>, smem, a) &&
      ensure_smem(attention_backward_dq_kernel<HSP, BN, S>, smem, a);
  (void)configured;
  const bool vq = a.vec(a.qkv), vdo = a.vec(a.dout), vdq = a.vec(a.dqkv);
  attention_backward_dkv_kernel<HSP, BN, S><<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
  attention_backward_dq_kernel<HSP, BN, S><<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
}

#define GPTCUDA_CUDA_CORE(HSP)                                                \
  template void CudaCore<HSP>::forward<float>(const ForwardArgsT<float>&);   \
  template void CudaCore<HSP>::forward<bf16>(const ForwardArgsT<bf16>&);     \
  template void CudaCore<HSP>::backward<float>(const BackwardArgsT<float>&); \
  template void CudaCore<HSP>::backward<bf16>(const BackwardArgsT<bf16>&);
GPTCUDA_CUDA_CORE(32)
GPTCUDA_CUDA_CORE(64)
GPTCUDA_CUDA_CORE(128)
GPTCUDA_CUDA_CORE(256)
#undef GPTCUDA_CUDA_CORE

}  // namespace attn
}  // namespace gptcuda
