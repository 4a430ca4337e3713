// The TF32 tensor-core attention kernels (hs <= 64, when TF32 is enabled).
//
// Same algorithms and thread layout as the CUDA-core kernels (attention_common.cuh),
// but the five tile products run on tensor cores through WMMA (m16n16k8, TF32
// inputs rounded with __float_to_tf32, float accumulation). Fragment element
// positions are opaque, so every position-dependent step (masking, softmax,
// dropout, dS) goes through shared memory: a product is stored with
// store_matrix_sync, the 256 threads work on it in the common layout, and the
// next product loads it back. Accumulators that are never rescaled (dK, dV, dQ)
// stay in fragments for the whole loop; the forward's output, which the online
// softmax rescales, stays in registers and each tile's P V is added to it
// through shared memory. All tiles are 64 x 64 with the head dim padded to 64;
// 8 warps each own a 16 x 32 block of a 64 x 64 result (rows 16 (w / 2) ..,
// columns 32 (w % 2) ..).
#include <mma.h>
#include <type_traits>

#include "attention_common.cuh"

namespace gptcuda {
namespace {

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define GPTCUDA_ATTN_TC 1
#else
#define GPTCUDA_ATTN_TC 0
#endif

constexpr int kTcLd = 68;  // row stride of every shared tile: 64 + 4 (16-byte rows, fewer conflicts)
constexpr size_t kTcTileBytes = 64 * kTcLd * sizeof(float);

namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

#if GPTCUDA_ATTN_TC
template <typename Frag>
__device__ __forceinline__ void round_tf32(Frag& f) {
#pragma unroll
  for (int e = 0; e < f.num_elements; ++e) f.x[e] = wmma::__float_to_tf32(f.x[e]);
}

__device__ __forceinline__ void tc_zero(FragC (&acc)[2]) {
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
}

__device__ __forceinline__ void tc_store(float* X, const FragC (&acc)[2]) {
  const int warp = threadIdx.x / 32, rb = warp / 2, cb = (warp % 2) * 2;
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(X + rb * 16 * kTcLd + (cb + j) * 16, acc[j], kTcLd, wmma::mem_row_major);
}

// acc (this warp's 16 x 32 block of a [64][64] result) += A op(Bm) over 64 inner
// dims, A and Bm row-major [64][kTcLd]. kTransB: op(Bm) = Bm^T, whose element
// (k, n) is Bm[n][k], i.e. Bm read column-major; else op(Bm) = Bm.
template <bool kTransB>
__device__ __forceinline__ void tc_mma(FragC (&acc)[2], const float* A, const float* Bm) {
  const int warp = threadIdx.x / 32, rb = warp / 2, cb = (warp % 2) * 2;
#pragma unroll 2
  for (int k = 0; k < 64; k += 8) {
    FragA a;
    wmma::load_matrix_sync(a, A + rb * 16 * kTcLd + k, kTcLd);
    round_tf32(a);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int n0 = (cb + j) * 16;
      std::conditional_t<kTransB, FragBt, FragB> b;
      wmma::load_matrix_sync(b, kTransB ? Bm + n0 * kTcLd + k : Bm + k * kTcLd + n0, kTcLd);
      round_tf32(b);
      wmma::mma_sync(acc[j], a, b, acc[j]);
    }
  }
}

// S[64][64] = A B^T over the 64 (padded) head dims (query-key or dO-V scores).
__device__ __forceinline__ void tc_scores(float* S, const float* A, const float* Bm) {
  FragC c[2];
  tc_zero(c);
  tc_mma<true>(c, A, Bm);
  tc_store(S, c);
}

// acc += Tm Vm, with Tm a [64][64] score tile and Vm a [64][64] head tile.
__device__ __forceinline__ void tc_accumulate(FragC (&acc)[2], const float* Tm, const float* Vm) {
  tc_mma<false>(acc, Tm, Vm);
}
#endif  // GPTCUDA_ATTN_TC

constexpr size_t forward_tc_smem_bytes() { return 4 * kTcTileBytes; }
constexpr size_t backward_tc_smem_bytes() { return 6 * kTcTileBytes + 2 * 64 * sizeof(float); }

__global__ void __launch_bounds__(kThreads, 2)
    attention_forward_tc_kernel(float* out, float* lse, const float* qkv, int T, int C, int NH,
                                float scale, float p_drop, uint64_t seed, uint64_t stream,
                                bool vec_in, bool vec_out) {
#if GPTCUDA_ATTN_TC
  constexpr int HSP = 64, LD = kTcLd, DPT = 4;
  extern __shared__ __align__(128) float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);
  float* Ks = Qs + 64 * LD;  // K tile; after the scores, this tile's P V
  float* Vs = Ks + 64 * LD;
  float* Ss = Vs + 64 * LD;  // scores, then P (in place)

  const HeadBlock hb(qkv, nullptr, T, C, NH, scale, p_drop, seed, stream);
  const int q0 = heavy_first_tile(T);

  load_head_tile<HSP>(Qs, hb.q, hb.stride, q0, 64, T, hb.hs, vec_in);
  SoftmaxRows<DPT> rows;

  const int k_end = min(T, q0 + 64);
  for (int k0 = 0; k0 < k_end; k0 += 64) {
    __syncthreads();  // the previous tile is done with Ks/Vs/Ss
    hb.load_kv<HSP>(Ks, Vs, k0, 64, vec_in);
    __syncthreads();
    tc_scores(Ss, Qs, Ks);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float* srow = Ss + (hb.ty * 4 + i) * LD;
      float s[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) s[j] = srow[hb.tx + 16 * j];
      rows.step(i, s, srow, q0, k0, hb);
    }
    __syncthreads();
    {
      FragC pv[2];
      tc_zero(pv);
      tc_accumulate(pv, Ss, Vs);
      tc_store(Ks, pv);  // Ks is free since the scores (two barriers ago)
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v[DPT];
      load_dims<HSP>(v, Ks + (hb.ty * 4 + i) * LD, hb.tx);
#pragma unroll
      for (int j = 0; j < DPT; ++j) rows.o[i][j] += v[j];
    }
  }
  rows.template store<HSP>(out, lse, hb, q0, vec_out);
#else
  __trap();  // built without sm_80 code, but the host chose the tensor-core path
#endif
}

// The backward in one of its two roles (BackwardRole), on 64 x 64 tiles (see
// attention_backward_kernel). dK, dV and dQ stay in fragments for the whole loop.
template <bool kKeys>
__global__ void __launch_bounds__(kThreads, 2)
    attention_backward_tc_kernel(float* dqkv, const float* dout, const float* qkv,
                                 const float* lse, const float* Dv, int T, int C, int NH,
                                 float scale, float p_drop, uint64_t seed, uint64_t stream,
                                 bool vec_qkv, bool vec_dout, bool vec_dqkv) {
#if GPTCUDA_ATTN_TC
  constexpr int HSP = 64, LD = kTcLd, DPT = 4;
  extern __shared__ __align__(128) float4 smem4[];
  const BackwardSmem sm(smem4, LD, 64, LD);  // score tiles: S, then P'; dP, then dS; finally g0, g1
  const HeadBlock hb(qkv, dout, T, C, NH, scale, p_drop, seed, stream);
  const BackwardRole<HSP, kKeys> role(sm, hb, lse, Dv, vec_qkv, vec_dout);

  role.load_own();
  FragC g0[2], g1[2];  // dK and dV, or dQ (g1 unused)
  tc_zero(g0);
  tc_zero(g1);

  for (int v0 = role.visit_begin(); v0 < role.visit_end(); v0 += 64) {
    __syncthreads();  // the previous tile's products are done with the visited and score tiles
    role.load_visited(v0, 64);
    __syncthreads();
    tc_scores(sm.s0, sm.own0, sm.vis0);  // k_s . q_t
    tc_scores(sm.s1, sm.own1, sm.vis1);  // v_s . dO_t (before dropout)
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = hb.ty * 4 + i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = hb.tx + 16 * j;
        const float2 g = role.score(sm.s0[r * LD + c], sm.s1[r * LD + c], r, c, v0);
        if constexpr (kKeys) sm.s0[r * LD + c] = g.x;
        sm.s1[r * LD + c] = g.y;
      }
    }
    __syncthreads();
    tc_accumulate(g0, sm.s1, sm.vis0);                        // dK += dS^T Q, dQ += dS K
    if constexpr (kKeys) tc_accumulate(g1, sm.s0, sm.vis1);  // dV += P'^T dO
  }

  __syncthreads();  // every warp is done reading the score tiles
  tc_store(sm.s0, g0);
  if constexpr (kKeys) tc_store(sm.s1, g1);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float v0[DPT], v1[DPT] = {};
    load_dims<HSP>(v0, sm.s0 + (hb.ty * 4 + i) * LD, hb.tx);
    if constexpr (kKeys) load_dims<HSP>(v1, sm.s1 + (hb.ty * 4 + i) * LD, hb.tx);
    role.store(dqkv, i, v0, v1, scale, vec_dqkv);
  }
#else
  __trap();
#endif
}

constexpr auto attention_backward_dkv_tc_kernel = attention_backward_tc_kernel<true>;
constexpr auto attention_backward_dq_tc_kernel = attention_backward_tc_kernel<false>;

}  // namespace

namespace attn {

void TensorCore::forward(const ForwardArgs& a) {
  const size_t smem = forward_tc_smem_bytes();
  static const bool configured = ensure_smem(attention_forward_tc_kernel, smem, a);
  (void)configured;
  attention_forward_tc_kernel<<<a.grid(), kThreads, smem, a.stream>>>(
      a.out, a.lse, a.qkv, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed, a.rng.stream, a.vec(a.qkv),
      a.vec(a.out));
  cudak::check_launch(a.op);
}

void TensorCore::backward(const BackwardArgs& a) {
  const size_t smem = backward_tc_smem_bytes();
  static const bool configured = ensure_smem(attention_backward_dkv_tc_kernel, smem, a) &&
                                 ensure_smem(attention_backward_dq_tc_kernel, smem, a);
  (void)configured;
  const bool vq = a.vec(a.qkv), vdo = a.vec(a.dout), vdq = a.vec(a.dqkv);
  attention_backward_dkv_tc_kernel<<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
  attention_backward_dq_tc_kernel<<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
}

}  // namespace attn
}  // namespace gptcuda
