// The tensor-core attention kernels (hs <= 64, when attention's tensor cores
// are on: CudaBackend::use_tc_attention), for float storage on TF32 and bf16
// storage on bf16.
//
// Same algorithms and thread layout as the CUDA-core kernels (attention_common.cuh),
// but the five tile products run on tensor cores through WMMA with float
// accumulation: m16n16k8 on TF32 inputs rounded with __float_to_tf32 (float
// storage), or m16n16k16 on bf16 inputs (bf16 storage: Q, K, V and dO are used
// as stored, exactly). Fragment element positions are opaque, so every
// position-dependent step (masking, softmax, dropout, dS) goes through shared
// memory: a product is stored with store_matrix_sync as a float score tile, the
// 256 threads work on it in the common layout, and the next product loads the
// result (P, P' or dS) back as an operand (SplitOperand: float storage, the
// score tile itself, in place; bf16, two bf16 tiles hi + lo, so that the
// softmax's probabilities and dS enter their products at float32-like
// precision rather than rounded to bf16). Accumulators that are never
// rescaled (dK, dV, dQ) stay in fragments for the whole loop; the forward's
// output, which the online softmax rescales, stays in registers and each
// tile's P V is added to it through shared memory. All tiles are 64 x 64 with
// the head dim padded to 64; 8 warps each own a 16 x 32 block of a 64 x 64
// result (rows 16 (w / 2) .., columns 32 (w % 2) ..).
#include <cuda_bf16.h>
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

namespace wmma = nvcuda::wmma;

constexpr int kTcLd = 68;  // row stride of the float tiles: 64 + 4 (16-byte rows, fewer conflicts)
constexpr size_t kTcTileBytes = 64 * kTcLd * sizeof(float);

// What the operand tiles hold and the WMMA shape, per storage type.
template <class S>
struct TcTypes;
template <>
struct TcTypes<float> {
  using Op = float;  // operand tiles; rounded to TF32 in the fragments
  using Wmma = wmma::precision::tf32;
  using Mem = float;  // what load_matrix_sync reads
  static constexpr int kK = 8;
  static constexpr int kLd = kTcLd;
  static constexpr bool kSplit = false;  // P and dS in place in the score tiles
};
template <>
struct TcTypes<bf16> {
  using Op = bf16;
  using Wmma = __nv_bfloat16;
  using Mem = __nv_bfloat16;  // layout-compatible with bf16 (bf16.h)
  static constexpr int kK = 16;
  static constexpr int kLd = 72;  // 144-byte rows: ldm a multiple of 8 and each 16-row block 32-byte aligned
  static constexpr bool kSplit = true;  // P and dS as hi + lo bf16 tiles
};
template <class S>
constexpr size_t kOpTileBytes = 64 * TcTypes<S>::kLd * sizeof(typename TcTypes<S>::Op);

template <class S>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, TcTypes<S>::kK, typename TcTypes<S>::Wmma, wmma::row_major>;
template <class S>
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, TcTypes<S>::kK, typename TcTypes<S>::Wmma, wmma::col_major>;
template <class S>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, TcTypes<S>::kK, typename TcTypes<S>::Wmma, wmma::row_major>;
template <class S>
using FragC = wmma::fragment<wmma::accumulator, 16, 16, TcTypes<S>::kK, float>;

// Rows row0 .. row0+63 of one head into an operand tile [64][kLd] (rows >= T
// and dims >= hs zero; see load_head_tile). bf16 is copied as stored.
template <class S>
__device__ __forceinline__ void load_operand_tile(typename TcTypes<S>::Op* tile, const S* base,
                                                  size_t stride, int row0, int T, int hs, bool vec) {
  if constexpr (std::is_same_v<S, float>) {
    load_head_tile<64>(tile, base, stride, row0, 64, T, hs, vec);
  } else {
    constexpr int LD = TcTypes<S>::kLd;
    const bf16 zero{0};
    if (vec) {  // hs % 4 == 0 and base 16-byte aligned: groups of 4 are 8-byte aligned
      for (int e = threadIdx.x; e < 64 * 16; e += blockDim.x) {
        const int r = e / 16, d = (e % 16) * 4, t = row0 + r;
        cudak::Bf16x4 v{{zero, zero, zero, zero}};
        if (t < T && d < hs) v = *reinterpret_cast<const cudak::Bf16x4*>(base + t * stride + d);
        *reinterpret_cast<cudak::Bf16x4*>(tile + r * LD + d) = v;
      }
    } else {
      for (int e = threadIdx.x; e < 64 * 64; e += blockDim.x) {
        const int r = e / 64, d = e % 64, t = row0 + r;
        tile[r * LD + d] = (t < T && d < hs) ? base[t * stride + d] : zero;
      }
    }
  }
}

// P, P' or dS as the A operand of a product. Float storage: in place in the
// float score tile (the fragment load rounds it to TF32). bf16: v = hi + lo with
// hi = bf16(v) and lo = bf16(v - hi) (v - hi is exact in float), two bf16 tiles
// whose two products carry v to within 2^-18 relative, far below the 2^-9 of
// the stored result (DESIGN: softmax arithmetic stays float32 in bf16 runs).
template <class S>
struct SplitOperand {
  using Op = typename TcTypes<S>::Op;
  Op* hi;
  Op* lo;  // bf16 only
  __device__ void put(int r, int c, float v) const {
    constexpr int LD = TcTypes<S>::kLd;
    if constexpr (TcTypes<S>::kSplit) {
      const bf16 h = float_to_bf16(v);
      hi[r * LD + c] = h;
      lo[r * LD + c] = float_to_bf16(v - bf16_to_float(h));
    } else {
      hi[r * LD + c] = v;
    }
  }
};

#if GPTCUDA_ATTN_TC
template <class S>
__device__ __forceinline__ void tc_zero(FragC<S> (&acc)[2]) {
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
}

template <class S>
__device__ __forceinline__ void tc_store(float* X, const FragC<S> (&acc)[2]) {
  const int warp = threadIdx.x / 32, rb = warp / 2, cb = (warp % 2) * 2;
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(X + rb * 16 * kTcLd + (cb + j) * 16, acc[j], kTcLd, wmma::mem_row_major);
}

template <class S, typename Frag>
__device__ __forceinline__ void tc_load(Frag& f, const typename TcTypes<S>::Op* p) {
  wmma::load_matrix_sync(f, reinterpret_cast<const typename TcTypes<S>::Mem*>(p), TcTypes<S>::kLd);
  if constexpr (std::is_same_v<S, float>) {
#pragma unroll
    for (int e = 0; e < f.num_elements; ++e) f.x[e] = wmma::__float_to_tf32(f.x[e]);
  }
}

// acc (this warp's 16 x 32 block of a [64][64] result) += A op(Bm) over 64 inner
// dims, A and Bm row-major operand tiles. kTransB: op(Bm) = Bm^T, whose element
// (k, n) is Bm[n][k], i.e. Bm read column-major; else op(Bm) = Bm.
template <bool kTransB, class S>
__device__ __forceinline__ void tc_mma(FragC<S> (&acc)[2], const typename TcTypes<S>::Op* A,
                                       const typename TcTypes<S>::Op* Bm) {
  constexpr int LD = TcTypes<S>::kLd, K = TcTypes<S>::kK;
  const int warp = threadIdx.x / 32, rb = warp / 2, cb = (warp % 2) * 2;
#pragma unroll 2
  for (int k = 0; k < 64; k += K) {
    FragA<S> a;
    tc_load<S>(a, A + rb * 16 * LD + k);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int n0 = (cb + j) * 16;
      std::conditional_t<kTransB, FragBt<S>, FragB<S>> b;
      tc_load<S>(b, kTransB ? Bm + n0 * LD + k : Bm + k * LD + n0);
      wmma::mma_sync(acc[j], a, b, acc[j]);
    }
  }
}

// acc += X Bm for an operand written through SplitOperand.
template <class S>
__device__ __forceinline__ void tc_mma_split(FragC<S> (&acc)[2], const SplitOperand<S>& x,
                                             const typename TcTypes<S>::Op* Bm) {
  tc_mma<false, S>(acc, x.hi, Bm);
  if constexpr (TcTypes<S>::kSplit) tc_mma<false, S>(acc, x.lo, Bm);
}

// S[64][64] (a float tile) = A B^T over the 64 (padded) head dims (query-key or dO-V scores).
template <class S>
__device__ __forceinline__ void tc_scores(float* Sc, const typename TcTypes<S>::Op* A,
                                          const typename TcTypes<S>::Op* Bm) {
  FragC<S> c[2];
  tc_zero<S>(c);
  tc_mma<true, S>(c, A, Bm);
  tc_store<S>(Sc, c);
}
#endif  // GPTCUDA_ATTN_TC

// Forward: Q, K, V operand tiles, the float score tile, and for bf16 P's two tiles.
template <class S>
constexpr size_t forward_tc_smem_bytes() {
  return 3 * kOpTileBytes<S> + kTcTileBytes + (TcTypes<S>::kSplit ? 2 * kOpTileBytes<S> : 0);
}
// Backward: four operand tiles (own and visited rows), two float score tiles,
// for bf16 the two tiles each of P' and dS, and lse and D of 64 query rows.
template <class S>
constexpr size_t backward_tc_smem_bytes() {
  return 4 * kOpTileBytes<S> + 2 * kTcTileBytes + (TcTypes<S>::kSplit ? 4 * kOpTileBytes<S> : 0) +
         2 * 64 * sizeof(float);
}

template <class S>
__global__ void __launch_bounds__(kThreads, 2)
    attention_forward_tc_kernel(S* out, float* lse, const S* qkv, int T, int C, int NH,
                                float scale, float p_drop, uint64_t seed, uint64_t stream,
                                bool vec_in, bool vec_out) {
#if GPTCUDA_ATTN_TC
  using Op = typename TcTypes<S>::Op;
  constexpr int HSP = 64, LD = TcTypes<S>::kLd, DPT = 4;
  extern __shared__ __align__(128) float4 smem4[];
  char* base = reinterpret_cast<char*>(smem4);
  Op* Qs = reinterpret_cast<Op*>(base);
  Op* Ks = reinterpret_cast<Op*>(base + kOpTileBytes<S>);
  Op* Vs = reinterpret_cast<Op*>(base + 2 * kOpTileBytes<S>);
  float* Ss = reinterpret_cast<float*>(base + 3 * kOpTileBytes<S>);  // scores, then P (in place)
  SplitOperand<S> P;  // the probabilities as an operand
  float* PVs;         // this tile's P V
  if constexpr (TcTypes<S>::kSplit) {
    P.hi = reinterpret_cast<Op*>(base + 3 * kOpTileBytes<S> + kTcTileBytes);
    P.lo = P.hi + 64 * LD;
    PVs = Ss;  // every thread is done with its scores and P when P V is stored
  } else {
    P.hi = P.lo = Ss;
    PVs = Ks;  // Ks is free since the scores (two barriers before P V is stored)
  }

  const HeadBlockT<S> hb(qkv, nullptr, T, C, NH, scale, p_drop, seed, stream);
  const int q0 = heavy_first_tile(T);

  load_operand_tile<S>(Qs, hb.q, hb.stride, q0, T, hb.hs, vec_in);
  SoftmaxRows<DPT> rows;

  const int k_end = min(T, q0 + 64);
  for (int k0 = 0; k0 < k_end; k0 += 64) {
    __syncthreads();  // the previous tile is done with Ks/Vs/Ss and P
    load_operand_tile<S>(Ks, hb.q + C, hb.stride, k0, T, hb.hs, vec_in);
    load_operand_tile<S>(Vs, hb.q + 2 * C, hb.stride, k0, T, hb.hs, vec_in);
    __syncthreads();
    tc_scores<S>(Ss, Qs, Ks);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = hb.ty * 4 + i;
      float s[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) s[j] = Ss[r * kTcLd + hb.tx + 16 * j];
      rows.step(i, s, Ss + r * kTcLd, q0, k0, hb);
      // this thread's own probabilities, just written
      if constexpr (TcTypes<S>::kSplit)
#pragma unroll
        for (int j = 0; j < 4; ++j) P.put(r, hb.tx + 16 * j, Ss[r * kTcLd + hb.tx + 16 * j]);
    }
    __syncthreads();
    {
      FragC<S> pv[2];
      tc_zero<S>(pv);
      tc_mma_split<S>(pv, P, Vs);
      tc_store<S>(PVs, pv);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v[DPT];
      load_dims<HSP>(v, PVs + (hb.ty * 4 + i) * kTcLd, hb.tx);
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
template <bool kKeys, class S>
__global__ void __launch_bounds__(kThreads, 2)
    attention_backward_tc_kernel(S* dqkv, const S* dout, const S* qkv, const float* lse,
                                 const float* Dv, int T, int C, int NH, float scale, float p_drop,
                                 uint64_t seed, uint64_t stream, bool vec_qkv, bool vec_dout,
                                 bool vec_dqkv) {
#if GPTCUDA_ATTN_TC
  using Op = typename TcTypes<S>::Op;
  constexpr int HSP = 64, LD = TcTypes<S>::kLd, DPT = 4;
  extern __shared__ __align__(128) float4 smem4[];
  char* base = reinterpret_cast<char*>(smem4);
  Op* own0 = reinterpret_cast<Op*>(base);  // K and V, or Q and dO, of the block's rows
  Op* own1 = reinterpret_cast<Op*>(base + kOpTileBytes<S>);
  Op* vis0 = reinterpret_cast<Op*>(base + 2 * kOpTileBytes<S>);  // the visited rows' Q and dO, or K and V
  Op* vis1 = reinterpret_cast<Op*>(base + 3 * kOpTileBytes<S>);
  // The role's tiles: the float score tiles (S, then dP; finally g0 and g1) and
  // lse, D; the operand tiles above are this kernel's own.
  BackwardSmem sm;
  sm.s0 = reinterpret_cast<float*>(base + 4 * kOpTileBytes<S>);
  sm.s1 = sm.s0 + 64 * kTcLd;
  SplitOperand<S> pp, ds;  // P' and dS as operands
  if constexpr (TcTypes<S>::kSplit) {
    pp.hi = reinterpret_cast<Op*>(sm.s1 + 64 * kTcLd);
    pp.lo = pp.hi + 64 * LD;
    ds.hi = pp.lo + 64 * LD;
    ds.lo = ds.hi + 64 * LD;
    sm.lse = reinterpret_cast<float*>(ds.lo + 64 * LD);
  } else {
    pp.hi = pp.lo = sm.s0;  // in place
    ds.hi = ds.lo = sm.s1;
    sm.lse = sm.s1 + 64 * kTcLd;
  }
  sm.D = sm.lse + 64;
  const HeadBlockT<S> hb(qkv, dout, T, C, NH, scale, p_drop, seed, stream);
  const BackwardRole<HSP, kKeys, S> role(sm, hb, lse, Dv, vec_qkv, vec_dout);
  // Rows r0 .. r0+63 of Q and dO, or of K and V, into two operand tiles.
  auto load_qdo = [&](Op* q_tile, Op* do_tile, int r0) {
    load_operand_tile<S>(q_tile, hb.q, hb.stride, r0, T, hb.hs, vec_qkv);
    load_operand_tile<S>(do_tile, hb.dO, C, r0, T, hb.hs, vec_dout);
    role.load_stats(r0, 64);
  };
  auto load_kv = [&](Op* k_tile, Op* v_tile, int r0) {
    load_operand_tile<S>(k_tile, hb.q + C, hb.stride, r0, T, hb.hs, vec_qkv);
    load_operand_tile<S>(v_tile, hb.q + 2 * C, hb.stride, r0, T, hb.hs, vec_qkv);
  };

  if constexpr (kKeys) load_kv(own0, own1, role.r0);
  else load_qdo(own0, own1, role.r0);
  FragC<S> g0[2], g1[2];  // dK and dV, or dQ (g1 unused)
  tc_zero<S>(g0);
  tc_zero<S>(g1);

  for (int v0 = role.visit_begin(); v0 < role.visit_end(); v0 += 64) {
    __syncthreads();  // the previous tile's products are done with the visited, score and operand tiles
    if constexpr (kKeys) load_qdo(vis0, vis1, v0);
    else load_kv(vis0, vis1, v0);
    __syncthreads();
    tc_scores<S>(sm.s0, own0, vis0);  // k_s . q_t
    tc_scores<S>(sm.s1, own1, vis1);  // v_s . dO_t (before dropout)
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = hb.ty * 4 + i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = hb.tx + 16 * j;
        const float2 g = role.score(sm.s0[r * kTcLd + c], sm.s1[r * kTcLd + c], r, c, v0);
        if constexpr (kKeys) pp.put(r, c, g.x);
        ds.put(r, c, g.y);
      }
    }
    __syncthreads();
    tc_mma_split<S>(g0, ds, vis0);                        // dK += dS^T Q, dQ += dS K
    if constexpr (kKeys) tc_mma_split<S>(g1, pp, vis1);  // dV += P'^T dO
  }

  __syncthreads();  // every warp is done reading the score and operand tiles
  tc_store<S>(sm.s0, g0);
  if constexpr (kKeys) tc_store<S>(sm.s1, g1);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float v0[DPT], v1[DPT] = {};
    load_dims<HSP>(v0, sm.s0 + (hb.ty * 4 + i) * kTcLd, hb.tx);
    if constexpr (kKeys) load_dims<HSP>(v1, sm.s1 + (hb.ty * 4 + i) * kTcLd, hb.tx);
    role.store(dqkv, i, v0, v1, scale, vec_dqkv);
  }
#else
  __trap();
#endif
}

template <class S>
constexpr auto attention_backward_dkv_tc_kernel = attention_backward_tc_kernel<true, S>;
template <class S>
constexpr auto attention_backward_dq_tc_kernel = attention_backward_tc_kernel<false, S>;

}  // namespace

namespace attn {

template <class S>
void TensorCore::forward(const ForwardArgsT<S>& a) {
  const size_t smem = forward_tc_smem_bytes<S>();
  static const bool configured = ensure_smem(attention_forward_tc_kernel<S>, smem, a);
  (void)configured;
  attention_forward_tc_kernel<S><<<a.grid(), kThreads, smem, a.stream>>>(
      a.out, a.lse, a.qkv, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed, a.rng.stream, a.vec(a.qkv),
      a.vec(a.out));
  cudak::check_launch(a.op);
}

template <class S>
void TensorCore::backward(const BackwardArgsT<S>& a) {
  const size_t smem = backward_tc_smem_bytes<S>();
  static const bool configured = ensure_smem(attention_backward_dkv_tc_kernel<S>, smem, a) &&
                                 ensure_smem(attention_backward_dq_tc_kernel<S>, smem, a);
  (void)configured;
  const bool vq = a.vec(a.qkv), vdo = a.vec(a.dout), vdq = a.vec(a.dqkv);
  attention_backward_dkv_tc_kernel<S><<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
  attention_backward_dq_tc_kernel<S><<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
}

template void TensorCore::forward<float>(const ForwardArgsT<float>&);
template void TensorCore::forward<bf16>(const ForwardArgsT<bf16>&);
template void TensorCore::backward<float>(const BackwardArgsT<float>&);
template void TensorCore::backward<bf16>(const BackwardArgsT<bf16>&);

}  // namespace attn
}  // namespace gptcuda
