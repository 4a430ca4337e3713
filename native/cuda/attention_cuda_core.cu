// The float32 CUDA-core attention kernels (layout and algorithms: attention_common.cuh),
// one instance per padded head size HSP in {32, 64, 128, 256}. They run when TF32 is
// off or the head has more than 64 dims.
#include "attention_common.cuh"

namespace gptcuda {
namespace {
// emu:kernels-begin (native/cuda/emu/run.sh tests the code up to emu:kernels-end)

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

template <int HSP>
__global__ void __launch_bounds__(kThreads, HSP <= 64 ? 2 : 1)
    attention_forward_kernel(float* out, float* lse, const float* qkv, int T, int C, int NH,
                             float scale, float p_drop, uint64_t seed, uint64_t stream,
                             bool vec_in, bool vec_out) {
  constexpr int LD = HSP + 4, BN = 64, LDT = BN + 4, RN = BN / 16, DPT = HSP / 16;
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);
  float* Ks = Qs + kRows * LD;
  float* Vs = Ks + BN * LD;
  float* Ps = Vs + BN * LD;

  const HeadBlock hb(qkv, nullptr, T, C, NH, scale, p_drop, seed, stream);
  const int q0 = heavy_first_tile(T);

  load_head_tile<HSP>(Qs, hb.q, hb.stride, q0, kRows, T, hb.hs, vec_in);
  SoftmaxRows<DPT> rows;

  const int k_end = min(T, q0 + kRows);  // keys s <= t < q0 + 64
  for (int k0 = 0; k0 < k_end; k0 += BN) {
    __syncthreads();  // the previous tile's P V is done with Ks/Vs/Ps
    load_head_tile<HSP>(Ks, hb.q + C, hb.stride, k0, BN, T, hb.hs, vec_in);
    load_head_tile<HSP>(Vs, hb.q + 2 * C, hb.stride, k0, BN, T, hb.hs, vec_in);
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

// One block per (b, h, 64 keys): dK and dV for those keys, over all later queries.
template <int HSP, int BN>
__global__ void __launch_bounds__(kThreads, HSP <= 64 ? 2 : 1)
    attention_backward_dkv_kernel(float* dqkv, const float* dout, const float* qkv,
                                  const float* lse, const float* Dv, int T, int C, int NH,
                                  float scale, float p_drop, uint64_t seed, uint64_t stream,
                                  bool vec_qkv, bool vec_dout, bool vec_dqkv) {
  constexpr int LD = HSP + 4, LDT = BN + 4, RN = BN / 16, DPT = HSP / 16;
  extern __shared__ float4 smem4[];
  const BackwardSmem sm(smem4, LD, BN, LDT);
  float *Ks = sm.own0, *Vs = sm.own1, *Qs = sm.vis0, *dOs = sm.vis1;
  float* Pt = sm.s0;   // P'^T [keys][queries] (dropout applied)
  float* dSt = sm.s1;  // dS^T [keys][queries]

  const HeadBlock hb(qkv, dout, T, C, NH, scale, p_drop, seed, stream);
  const int k0 = blockIdx.y * kRows;  // key tile 0 has the most queries: first

  load_head_tile<HSP>(Ks, hb.q + C, hb.stride, k0, kRows, T, hb.hs, vec_qkv);
  load_head_tile<HSP>(Vs, hb.q + 2 * C, hb.stride, k0, kRows, T, hb.hs, vec_qkv);
  float dk[4][DPT], dv[4][DPT];
  zero_rows(dk);
  zero_rows(dv);

  // Queries t >= s >= k0; k0 is a multiple of 64 and so of BN.
  for (int q0 = k0; q0 < T; q0 += BN) {
    __syncthreads();  // the previous tile is done with Qs/dOs/Pt/dSt and the row stats
    load_head_tile<HSP>(Qs, hb.q, hb.stride, q0, BN, T, hb.hs, vec_qkv);
    load_head_tile<HSP>(dOs, hb.dO, C, q0, BN, T, hb.hs, vec_dout);
    load_row_stats(sm, lse, Dv, hb.bh, q0, BN, T);
    __syncthreads();

    float st[4][RN], dpt[4][RN];
    tile_dot<HSP, RN>(st, Ks, Qs, hb.ty, hb.tx);   // S^T[s][t] = k_s . q_t
    tile_dot<HSP, RN>(dpt, Vs, dOs, hb.ty, hb.tx); // dP^T[s][t] = v_s . dO_t
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = hb.ty * 4 + i;
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        const int c = hb.tx + 16 * j;
        const float2 g = backward_score(st[i][j], dpt[i][j], sm.lse[c], sm.D[c], q0 + c, k0 + r, hb);
        Pt[r * LDT + c] = g.x;
        dSt[r * LDT + c] = g.y;
      }
    }
    __syncthreads();
    tile_accumulate<HSP, BN>(dv, Pt, dOs, hb.ty, hb.tx);  // dV += P'^T dO
    tile_accumulate<HSP, BN>(dk, dSt, Qs, hb.ty, hb.tx);  // dK += dS^T Q (scaled below)
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int sk = k0 + hb.ty * 4 + i;
    if (sk < T) {
      float* row = dqkv + hb.row(sk, 3 * C);
      store_row<HSP, true>(row + C, dk[i], scale, hb.tx, hb.hs, vec_dqkv);
      store_row<HSP, true>(row + 2 * C, dv[i], 1.f, hb.tx, hb.hs, vec_dqkv);
    }
  }
}

// One block per (b, h, 64 queries): dQ for those queries, over keys up to the diagonal.
template <int HSP, int BN>
__global__ void __launch_bounds__(kThreads, HSP <= 64 ? 2 : 1)
    attention_backward_dq_kernel(float* dqkv, const float* dout, const float* qkv,
                                 const float* lse, const float* Dv, int T, int C, int NH,
                                 float scale, float p_drop, uint64_t seed, uint64_t stream,
                                 bool vec_qkv, bool vec_dout, bool vec_dqkv) {
  constexpr int LD = HSP + 4, LDT = BN + 4, RN = BN / 16, DPT = HSP / 16;
  extern __shared__ float4 smem4[];
  const BackwardSmem sm(smem4, LD, BN, LDT);
  float *Qs = sm.own0, *dOs = sm.own1, *Ks = sm.vis0, *Vs = sm.vis1;
  float* dSs = sm.s0;  // dS [queries][keys] (the second score tile is unused here)

  const HeadBlock hb(qkv, dout, T, C, NH, scale, p_drop, seed, stream);
  const int q0 = heavy_first_tile(T);

  load_head_tile<HSP>(Qs, hb.q, hb.stride, q0, kRows, T, hb.hs, vec_qkv);
  load_head_tile<HSP>(dOs, hb.dO, C, q0, kRows, T, hb.hs, vec_dout);
  load_row_stats(sm, lse, Dv, hb.bh, q0, kRows, T);
  float dq[4][DPT];
  zero_rows(dq);

  const int k_end = min(T, q0 + kRows);
  for (int k0 = 0; k0 < k_end; k0 += BN) {
    __syncthreads();  // Q/dO/lse/D loaded; the previous tile is done with Ks/Vs/dSs
    load_head_tile<HSP>(Ks, hb.q + C, hb.stride, k0, BN, T, hb.hs, vec_qkv);
    load_head_tile<HSP>(Vs, hb.q + 2 * C, hb.stride, k0, BN, T, hb.hs, vec_qkv);
    __syncthreads();

    float st[4][RN], dpt[4][RN];
    tile_dot<HSP, RN>(st, Qs, Ks, hb.ty, hb.tx);   // S[t][s]
    tile_dot<HSP, RN>(dpt, dOs, Vs, hb.ty, hb.tx); // dP[t][s] (before dropout)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = hb.ty * 4 + i;
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        const int c = hb.tx + 16 * j;
        dSs[r * LDT + c] =
            backward_score(st[i][j], dpt[i][j], sm.lse[r], sm.D[r], q0 + r, k0 + c, hb).y;
      }
    }
    __syncthreads();
    tile_accumulate<HSP, BN>(dq, dSs, Ks, hb.ty, hb.tx);  // dQ += dS K (scaled below)
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = q0 + hb.ty * 4 + i;
    if (t < T) store_row<HSP, true>(dqkv + hb.row(t, 3 * C), dq[i], scale, hb.tx, hb.hs, vec_dqkv);
  }
}

// emu:kernels-end
}  // namespace

namespace attn {

template <int HSP>
void CudaCore<HSP>::forward(const ForwardArgs& a) {
  const size_t smem = forward_smem_bytes<HSP>();
  static const bool configured = ensure_smem(attention_forward_kernel<HSP>, smem, a);
  (void)configured;
  attention_forward_kernel<HSP><<<a.grid(), kThreads, smem, a.stream>>>(
      a.out, a.lse, a.qkv, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed, a.rng.stream, a.vec(a.qkv),
      a.vec(a.out));
  cudak::check_launch(a.op);
}

template <int HSP>
void CudaCore<HSP>::backward(const BackwardArgs& a) {
  // 32-wide inner tiles from hs = 64 up: with 64 the dK/dV kernel needs ~190
  // registers, i.e. one block per SM; with 32 it fits two (registers and
  // shared memory).
  constexpr int BN = HSP <= 32 ? 64 : 32;
  const size_t smem = backward_smem_bytes<HSP, BN>();
  static const bool configured =
      ensure_smem(attention_backward_dkv_kernel<HSP, BN>, smem, a) &&
      ensure_smem(attention_backward_dq_kernel<HSP, BN>, smem, a);
  (void)configured;
  const bool vq = a.vec(a.qkv), vdo = a.vec(a.dout), vdq = a.vec(a.dqkv);
  attention_backward_dkv_kernel<HSP, BN><<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
  attention_backward_dq_kernel<HSP, BN><<<a.grid(), kThreads, smem, a.stream>>>(
      a.dqkv, a.dout, a.qkv, a.lse, a.D, a.T, a.C, a.NH, a.scale(), a.p, a.rng.seed,
      a.rng.stream, vq, vdo, vdq);
  cudak::check_launch(a.op);
}

template struct CudaCore<32>;
template struct CudaCore<64>;
template struct CudaCore<128>;
template struct CudaCore<256>;

}  // namespace attn
}  // namespace gptcuda
