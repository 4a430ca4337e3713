// Fused causal self-attention in the FlashAttention manner (float32 data; products on
// TF32 tensor cores or on CUDA cores, see below).
//
// Layout: qkv[B, T, 3C] with Q, K, V of head h at columns h*hs (+0, +C, +2C);
// out[B, T, C]; lse[B, NH, T] = log(sum_{s<=t} exp(q_t . k_s / sqrt(hs))) (natural
// log, undropped scores). No T x T matrix ever touches global memory.
//
// All kernels use 256 threads seen as a 16 x 16 grid (ty = tid / 16, tx = tid % 16)
// and tiles of 64 "rows" per block. A thread owns rows ty*4 .. ty*4+3 and, of a
// score tile, the columns tx + 16 j (interleaved, so that reading them from shared
// memory is free of bank conflicts), and of a [rows, head dim] accumulator the
// dims dim_of(tx, j) (groups of 4 consecutive dims, so float4 reads are free of
// conflicts too). The 16 threads sharing a row are one half of a warp, so row
// reductions are 4 shuffles. Head dims are padded to HSP in {32, 64, 128, 256}
// with zeros in shared memory (any hs <= 256 works; hs = 64 is the GPT-2 fast
// path; 256 needs Hopper's 227 KiB of shared memory per block),
// and rows past T are zero-filled and masked.
//
// Forward (one block per (b, h, 64 queries)): Q tile stays in shared memory; for
// each 64-key tile up to the diagonal: S = Q K^T, online softmax (running max m
// and per-thread partial sums l, rescaled by the same factor across the row),
// dropout on the probabilities, P written to shared memory, O += P V. At the end
// O /= l and lse = m + log(l). Blocks with the most work (last query tiles) are
// scheduled first.
//
// Backward (deterministic, no atomics), after a small kernel computing
// D_t = sum(dout_t * out_t):
//   dK/dV kernel: one block per (b, h, 64 keys), looping over the query tiles at
//     or after the diagonal: recompute S^T and P^T = exp(S^T - lse), dP^T = V dO^T,
//     dS^T = P^T * (dP^T * M/(1-p) - D); dV += (P^T * M/(1-p)) dO, dK += scale dS^T Q.
//   dQ kernel: one block per (b, h, 64 queries), looping over the key tiles up to
//     the diagonal: same recomputation, dQ += scale dS K.
//   Both add (+=) into dqkv; every element has exactly one owner thread.
// Dropout uses the index ((b*NH + h)*T + t)*T + s of P[b, h, t, s], as on the CPU.
//
// With TF32 enabled (the default on Ampere and newer; GPTCUDA_TF32=0 turns it
// off) and hs <= 64, the same three kernels run their tile products on tensor
// cores through WMMA (see "TF32 tensor-core variants" below); otherwise the
// float32 CUDA-core kernels run.
//
// Decode (KV cache): a kernel copies the new K/V rows into the caches, then one
// block per (b, h, new query) of 8 warps; each warp takes 32 cache positions at a
// time (one per lane: a dot product against q in shared memory), keeps an online
// softmax and a partial output (lane = dims), and the 8 warps are merged at the
// end. A prefill from position 0 (32 or more new positions) uses the tiled
// forward kernel instead.
#include <mma.h>

#include <cmath>

#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {
// emu:kernels-begin (native/cuda/emu/run.sh tests the code up to emu:kernels-end)

constexpr int kThreads = 256;
constexpr int kMaxHead = 256;  // the largest head size (the CPU backend's limit too)
constexpr int kRows = 64;  // rows (queries in forward/dQ, keys in dK/dV) per block
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float f4get(const float4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

// The j-th of a thread's HSP/16 head dims: float2 groups for HSP = 32, float4
// groups (64 dims apart when there are two) otherwise.
template <int HSP>
__device__ __forceinline__ int dim_of(int tx, int j) {
  if (HSP / 16 < 4) return tx * (HSP / 16) + j;
  return (j / 4) * 64 + tx * 4 + (j % 4);
}

// v[j] = row[dim_of(tx, j)] from shared memory.
template <int HSP>
__device__ __forceinline__ void load_dims(float (&v)[HSP / 16], const float* row, int tx) {
  if (HSP / 16 == 2) {
    const float2 a = *reinterpret_cast<const float2*>(row + tx * 2);
    v[0] = a.x;
    v[1] = a.y;
  } else {
#pragma unroll
    for (int q = 0; q < HSP / 64; ++q) {
      const float4 a = *reinterpret_cast<const float4*>(row + q * 64 + tx * 4);
      v[q * 4 + 0] = a.x;
      v[q * 4 + 1] = a.y;
      v[q * 4 + 2] = a.z;
      v[q * 4 + 3] = a.w;
    }
  }
}

// Copies rows row0 .. row0+nrows-1 of one head into a shared tile [nrows][HSP+4].
// `base` points at row 0, dim 0 of the head; rows are `stride` floats apart.
// Rows >= T and dims >= hs are zero. vec: hs % 4 == 0 and base 16-byte aligned
// (with stride % 4 == 0), so whole float4s are in or out of range.
template <int HSP>
__device__ __forceinline__ void load_head_tile(float* tile, const float* base, size_t stride,
                                               int row0, int nrows, int T, int hs, bool vec) {
  constexpr int LD = HSP + 4;
  if (vec) {
    constexpr int V4 = HSP / 4;
    for (int e = threadIdx.x; e < nrows * V4; e += blockDim.x) {
      const int r = e / V4, d = (e % V4) * 4;
      const int t = row0 + r;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (t < T && d < hs) v = *reinterpret_cast<const float4*>(base + t * stride + d);
      *reinterpret_cast<float4*>(tile + r * LD + d) = v;
    }
  } else {
    for (int e = threadIdx.x; e < nrows * HSP; e += blockDim.x) {
      const int r = e / HSP, d = e % HSP;
      const int t = row0 + r;
      tile[r * LD + d] = (t < T && d < hs) ? base[t * stride + d] : 0.f;
    }
  }
}

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

// dst[dim_of(tx, j)] (+)= s * acc[j] for the dims < hs of one row of a head in
// global memory. vec: hs % 4 == 0 and dst 16-byte aligned.
template <int HSP, bool kAccumulate>
__device__ __forceinline__ void store_row(float* dst, const float (&acc)[HSP / 16], float s, int tx,
                                          int hs, bool vec) {
  constexpr int DPT = HSP / 16;
  if (DPT >= 4 && vec) {
#pragma unroll
    for (int q = 0; q < DPT / 4; ++q) {
      const int d = dim_of<HSP>(tx, q * 4);
      if (d < hs) {
        float4* p = reinterpret_cast<float4*>(dst + d);
        float4 v = make_float4(s * acc[q * 4 + 0], s * acc[q * 4 + 1], s * acc[q * 4 + 2],
                               s * acc[q * 4 + 3]);
        if (kAccumulate) {
          const float4 o = *p;
          v.x += o.x; v.y += o.y; v.z += o.z; v.w += o.w;
        }
        *p = v;
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < DPT; ++j) {
      const int d = dim_of<HSP>(tx, j);
      if (d < hs) {
        if (kAccumulate) dst[d] += s * acc[j];
        else dst[d] = s * acc[j];
      }
    }
  }
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

  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int hs = C / NH;
  const int num_qt = (T + kRows - 1) / kRows;
  const int q0 = (num_qt - 1 - static_cast<int>(blockIdx.y)) * kRows;  // heavy tiles first
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const size_t stride = static_cast<size_t>(3) * C;
  const float* q_base = qkv + static_cast<size_t>(b) * T * stride + h * hs;
  const float* k_base = q_base + C;
  const float* v_base = q_base + 2 * C;
  const float sl2 = scale * kLog2e;  // scores in log2 units: exp(x) = exp2(x log2 e)
  const bool dropout = p_drop > 0.f;
  const float inv_keep = dropout ? 1.f / (1.f - p_drop) : 1.f;

  load_head_tile<HSP>(Qs, q_base, stride, q0, kRows, T, hs, vec_in);

  float o[4][DPT];
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < DPT; ++j) o[i][j] = 0.f;
  }

  const int k_end = min(T, q0 + kRows);  // keys s <= t < q0 + 64
  for (int k0 = 0; k0 < k_end; k0 += BN) {
    __syncthreads();  // the previous tile's P V is done with Ks/Vs/Ps
    load_head_tile<HSP>(Ks, k_base, stride, k0, BN, T, hs, vec_in);
    load_head_tile<HSP>(Vs, v_base, stride, k0, BN, T, hs, vec_in);
    __syncthreads();

    float s[4][RN];
    tile_dot<HSP, RN>(s, Qs, Ks, ty, tx);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = q0 + ty * 4 + i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        const int sk = k0 + tx + 16 * j;
        s[i][j] = (sk <= t && t < T) ? s[i][j] * sl2 : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[i], mx);
      // A row with nothing unmasked yet (only rows t >= T) keeps everything at 0.
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float corr = exp2f(m[i] - m_use);
      m[i] = m_new;
      float rowsum = 0.f;
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        float p = exp2f(s[i][j] - m_use);
        rowsum += p;
        if (dropout) {
          const int sk = k0 + tx + 16 * j;
          const uint64_t idx = (static_cast<uint64_t>(bh) * T + t) * T + sk;
          p = (t < T && dropout_keep(seed, stream, idx, p_drop)) ? p * inv_keep : 0.f;
        }
        Ps[(ty * 4 + i) * LDT + tx + 16 * j] = p;
      }
      l[i] = l[i] * corr + rowsum;
#pragma unroll
      for (int j = 0; j < DPT; ++j) o[i][j] *= corr;
    }
    __syncthreads();
    tile_accumulate<HSP, BN>(o, Ps, Vs, ty, tx);
  }

  // Finish: full row sums across the 16 threads of the row, normalise, store.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float lt = l[i];
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) lt += __shfl_xor_sync(0xffffffffu, lt, off);
    const int t = q0 + ty * 4 + i;
    if (t < T) {
      float* dst = out + (static_cast<size_t>(b) * T + t) * C + h * hs;
      store_row<HSP, false>(dst, o[i], 1.f / lt, tx, hs, vec_out);
      if (lse && tx == 0) lse[static_cast<size_t>(bh) * T + t] = (m[i] + log2f(lt)) * kLn2;
    }
  }
}

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
  float* Ks = reinterpret_cast<float*>(smem4);
  float* Vs = Ks + kRows * LD;
  float* Qs = Vs + kRows * LD;
  float* dOs = Qs + BN * LD;
  float* Pt = dOs + BN * LD;   // P'^T [keys][queries] (dropout applied)
  float* dSt = Pt + kRows * LDT;  // dS^T [keys][queries]
  float* lse_s = dSt + kRows * LDT;  // lse of the query tile, log2 units
  float* D_s = lse_s + kRows;

  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int hs = C / NH;
  const int k0 = blockIdx.y * kRows;  // key tile 0 has the most queries: first
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const size_t stride = static_cast<size_t>(3) * C;
  const float* q_base = qkv + static_cast<size_t>(b) * T * stride + h * hs;
  const float* do_base = dout + static_cast<size_t>(b) * T * C + h * hs;
  const float* lse_bh = lse + static_cast<size_t>(bh) * T;
  const float* D_bh = Dv + static_cast<size_t>(bh) * T;
  const float sl2 = scale * kLog2e;
  const bool dropout = p_drop > 0.f;
  const float inv_keep = dropout ? 1.f / (1.f - p_drop) : 1.f;

  load_head_tile<HSP>(Ks, q_base + C, stride, k0, kRows, T, hs, vec_qkv);
  load_head_tile<HSP>(Vs, q_base + 2 * C, stride, k0, kRows, T, hs, vec_qkv);

  float dk[4][DPT], dv[4][DPT];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < DPT; ++j) dk[i][j] = dv[i][j] = 0.f;

  // Queries t >= s >= k0; k0 is a multiple of 64 and so of BN.
  for (int q0 = k0; q0 < T; q0 += BN) {
    __syncthreads();  // the previous tile is done with Qs/dOs/Pt/dSt/lse_s/D_s
    load_head_tile<HSP>(Qs, q_base, stride, q0, BN, T, hs, vec_qkv);
    load_head_tile<HSP>(dOs, do_base, C, q0, BN, T, hs, vec_dout);
    for (int i = tid; i < BN; i += blockDim.x) {
      const int t = q0 + i;
      lse_s[i] = t < T ? lse_bh[t] * kLog2e : 0.f;
      D_s[i] = t < T ? D_bh[t] : 0.f;
    }
    __syncthreads();

    float st[4][RN], dpt[4][RN];
    tile_dot<HSP, RN>(st, Ks, Qs, ty, tx);   // S^T[s][t] = k_s . q_t
    tile_dot<HSP, RN>(dpt, Vs, dOs, ty, tx); // dP^T[s][t] = v_s . dO_t
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int sk = k0 + ty * 4 + i;
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        const int c = tx + 16 * j;
        const int t = q0 + c;
        float pd = 0.f, ds = 0.f;
        if (sk <= t && t < T) {
          const float p = exp2f(st[i][j] * sl2 - lse_s[c]);
          float dp = dpt[i][j];
          pd = p;
          if (dropout) {
            const uint64_t idx = (static_cast<uint64_t>(bh) * T + t) * T + sk;
            const float mk = dropout_keep(seed, stream, idx, p_drop) ? inv_keep : 0.f;
            pd = p * mk;
            dp *= mk;
          }
          ds = p * (dp - D_s[c]);
        }
        Pt[(ty * 4 + i) * LDT + c] = pd;
        dSt[(ty * 4 + i) * LDT + c] = ds;
      }
    }
    __syncthreads();
    tile_accumulate<HSP, BN>(dv, Pt, dOs, ty, tx);  // dV += P'^T dO
    tile_accumulate<HSP, BN>(dk, dSt, Qs, ty, tx);  // dK += dS^T Q (scaled below)
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int sk = k0 + ty * 4 + i;
    if (sk < T) {
      float* row = dqkv + (static_cast<size_t>(b) * T + sk) * stride + h * hs;
      store_row<HSP, true>(row + C, dk[i], scale, tx, hs, vec_dqkv);
      store_row<HSP, true>(row + 2 * C, dv[i], 1.f, tx, hs, vec_dqkv);
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
  float* Qs = reinterpret_cast<float*>(smem4);
  float* dOs = Qs + kRows * LD;
  float* Ks = dOs + kRows * LD;
  float* Vs = Ks + BN * LD;
  float* dSs = Vs + BN * LD;          // dS [queries][keys]
  float* lse_s = dSs + 2 * kRows * LDT;  // (the second score tile's space is unused here)
  float* D_s = lse_s + kRows;

  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int hs = C / NH;
  const int num_qt = (T + kRows - 1) / kRows;
  const int q0 = (num_qt - 1 - static_cast<int>(blockIdx.y)) * kRows;  // heavy tiles first
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const size_t stride = static_cast<size_t>(3) * C;
  const float* q_base = qkv + static_cast<size_t>(b) * T * stride + h * hs;
  const float* do_base = dout + static_cast<size_t>(b) * T * C + h * hs;
  const float sl2 = scale * kLog2e;
  const bool dropout = p_drop > 0.f;
  const float inv_keep = dropout ? 1.f / (1.f - p_drop) : 1.f;

  load_head_tile<HSP>(Qs, q_base, stride, q0, kRows, T, hs, vec_qkv);
  load_head_tile<HSP>(dOs, do_base, C, q0, kRows, T, hs, vec_dout);
  for (int i = tid; i < kRows; i += blockDim.x) {
    const int t = q0 + i;
    lse_s[i] = t < T ? lse[static_cast<size_t>(bh) * T + t] * kLog2e : 0.f;
    D_s[i] = t < T ? Dv[static_cast<size_t>(bh) * T + t] : 0.f;
  }

  float dq[4][DPT];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < DPT; ++j) dq[i][j] = 0.f;

  const int k_end = min(T, q0 + kRows);
  for (int k0 = 0; k0 < k_end; k0 += BN) {
    __syncthreads();  // Q/dO/lse/D loaded; the previous tile is done with Ks/Vs/dSs
    load_head_tile<HSP>(Ks, q_base + C, stride, k0, BN, T, hs, vec_qkv);
    load_head_tile<HSP>(Vs, q_base + 2 * C, stride, k0, BN, T, hs, vec_qkv);
    __syncthreads();

    float st[4][RN], dpt[4][RN];
    tile_dot<HSP, RN>(st, Qs, Ks, ty, tx);   // S[t][s]
    tile_dot<HSP, RN>(dpt, dOs, Vs, ty, tx); // dP[t][s] (before dropout)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty * 4 + i;
      const int t = q0 + r;
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        const int c = tx + 16 * j;
        const int sk = k0 + c;
        float ds = 0.f;
        if (sk <= t && t < T) {
          const float p = exp2f(st[i][j] * sl2 - lse_s[r]);
          float dp = dpt[i][j];
          if (dropout) {
            const uint64_t idx = (static_cast<uint64_t>(bh) * T + t) * T + sk;
            dp *= dropout_keep(seed, stream, idx, p_drop) ? inv_keep : 0.f;
          }
          ds = p * (dp - D_s[r]);
        }
        dSs[r * LDT + c] = ds;
      }
    }
    __syncthreads();
    tile_accumulate<HSP, BN>(dq, dSs, Ks, ty, tx);  // dQ += dS K (scaled below)
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = q0 + ty * 4 + i;
    if (t < T) {
      float* row = dqkv + (static_cast<size_t>(b) * T + t) * stride + h * hs;
      store_row<HSP, true>(row, dq[i], scale, tx, hs, vec_dqkv);
    }
  }
}

// ---- TF32 tensor-core variants (hs <= 64, when TF32 is enabled) -----------------------
//
// Same algorithms and thread layout as above, but the five tile products run on
// tensor cores through WMMA (m16n16k8, TF32 inputs rounded with __float_to_tf32,
// float accumulation). Fragment element positions are opaque, so every
// position-dependent step (masking, softmax, dropout, dS) goes through shared
// memory: a product is stored with store_matrix_sync, the 256 threads work on
// it in the layout above, and the next product loads it back. Accumulators that
// are never rescaled (dK, dV, dQ) stay in fragments for the whole loop; the
// forward's output, which the online softmax rescales, stays in registers and
// each tile's P V is added to it through shared memory. All tiles are 64 x 64
// with the head dim padded to 64; 8 warps each own a 16 x 32 block of a 64 x 64
// result (rows 16 (w / 2) .., columns 32 (w % 2) ..).
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

// S[64][64] = A B^T over the 64 (padded) head dims; A, B row-major [64][kTcLd].
// Each warp writes its 16 x 32 block of S (row stride kTcLd).
__device__ __forceinline__ void tc_scores(float* S, const float* A, const float* Bm) {
  const int warp = threadIdx.x / 32, rb = warp / 2, cb = (warp % 2) * 2;
  FragC c[2];
  wmma::fill_fragment(c[0], 0.f);
  wmma::fill_fragment(c[1], 0.f);
#pragma unroll 2
  for (int k = 0; k < 64; k += 8) {
    FragA a;
    wmma::load_matrix_sync(a, A + rb * 16 * kTcLd + k, kTcLd);
    round_tf32(a);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      FragBt b;  // B^T: element (k, n) is Bm[n][k], i.e. column-major with ld kTcLd
      wmma::load_matrix_sync(b, Bm + (cb + j) * 16 * kTcLd + k, kTcLd);
      round_tf32(b);
      wmma::mma_sync(c[j], a, b, c[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(S + rb * 16 * kTcLd + (cb + j) * 16, c[j], kTcLd, wmma::mem_row_major);
}

// acc (this warp's 16 x 32 block of a [64][64] result) += Tm Vm, with Tm a
// row-major [64][64] score tile and Vm a row-major [64][64] head tile.
__device__ __forceinline__ void tc_accumulate(FragC (&acc)[2], const float* Tm, const float* Vm) {
  const int warp = threadIdx.x / 32, rb = warp / 2, cb = (warp % 2) * 2;
#pragma unroll 2
  for (int k = 0; k < 64; k += 8) {
    FragA a;
    wmma::load_matrix_sync(a, Tm + rb * 16 * kTcLd + k, kTcLd);
    round_tf32(a);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      FragB b;
      wmma::load_matrix_sync(b, Vm + k * kTcLd + (cb + j) * 16, kTcLd);
      round_tf32(b);
      wmma::mma_sync(acc[j], a, b, acc[j]);
    }
  }
}

__device__ __forceinline__ void tc_store(float* X, const FragC (&acc)[2]) {
  const int warp = threadIdx.x / 32, rb = warp / 2, cb = (warp % 2) * 2;
#pragma unroll
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(X + rb * 16 * kTcLd + (cb + j) * 16, acc[j], kTcLd, wmma::mem_row_major);
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

  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int hs = C / NH;
  const int num_qt = (T + 63) / 64;
  const int q0 = (num_qt - 1 - static_cast<int>(blockIdx.y)) * 64;  // heavy tiles first
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const size_t stride = static_cast<size_t>(3) * C;
  const float* q_base = qkv + static_cast<size_t>(b) * T * stride + h * hs;
  const float sl2 = scale * kLog2e;
  const bool dropout = p_drop > 0.f;
  const float inv_keep = dropout ? 1.f / (1.f - p_drop) : 1.f;

  load_head_tile<HSP>(Qs, q_base, stride, q0, 64, T, hs, vec_in);

  float o[4][DPT];
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < DPT; ++j) o[i][j] = 0.f;
  }

  const int k_end = min(T, q0 + 64);
  for (int k0 = 0; k0 < k_end; k0 += 64) {
    __syncthreads();  // the previous tile is done with Ks/Vs/Ss
    load_head_tile<HSP>(Ks, q_base + C, stride, k0, 64, T, hs, vec_in);
    load_head_tile<HSP>(Vs, q_base + 2 * C, stride, k0, 64, T, hs, vec_in);
    __syncthreads();
    tc_scores(Ss, Qs, Ks);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty * 4 + i;
      const int t = q0 + r;
      float s[4];
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int sk = k0 + tx + 16 * j;
        s[j] = (sk <= t && t < T) ? Ss[r * LD + tx + 16 * j] * sl2 : -INFINITY;
        mx = fmaxf(mx, s[j]);
      }
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[i], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float corr = exp2f(m[i] - m_use);
      m[i] = m_new;
      float rowsum = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float p = exp2f(s[j] - m_use);
        rowsum += p;
        if (dropout) {
          const int sk = k0 + tx + 16 * j;
          const uint64_t idx = (static_cast<uint64_t>(bh) * T + t) * T + sk;
          p = (t < T && dropout_keep(seed, stream, idx, p_drop)) ? p * inv_keep : 0.f;
        }
        Ss[r * LD + tx + 16 * j] = p;
      }
      l[i] = l[i] * corr + rowsum;
#pragma unroll
      for (int j = 0; j < DPT; ++j) o[i][j] *= corr;
    }
    __syncthreads();
    {
      FragC pv[2];
      wmma::fill_fragment(pv[0], 0.f);
      wmma::fill_fragment(pv[1], 0.f);
      tc_accumulate(pv, Ss, Vs);
      tc_store(Ks, pv);  // Ks is free since the scores (two barriers ago)
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v[DPT];
      load_dims<HSP>(v, Ks + (ty * 4 + i) * LD, tx);
#pragma unroll
      for (int j = 0; j < DPT; ++j) o[i][j] += v[j];
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float lt = l[i];
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) lt += __shfl_xor_sync(0xffffffffu, lt, off);
    const int t = q0 + ty * 4 + i;
    if (t < T) {
      float* dst = out + (static_cast<size_t>(b) * T + t) * C + h * hs;
      store_row<HSP, false>(dst, o[i], 1.f / lt, tx, hs, vec_out);
      if (lse && tx == 0) lse[static_cast<size_t>(bh) * T + t] = (m[i] + log2f(lt)) * kLn2;
    }
  }
#else
  __trap();  // built without sm_80 code, but the host chose the tensor-core path
#endif
}

// dK/dV for 64 keys per block, over 64-query tiles (see attention_backward_dkv_kernel).
__global__ void __launch_bounds__(kThreads, 2)
    attention_backward_dkv_tc_kernel(float* dqkv, const float* dout, const float* qkv,
                                     const float* lse, const float* Dv, int T, int C, int NH,
                                     float scale, float p_drop, uint64_t seed, uint64_t stream,
                                     bool vec_qkv, bool vec_dout, bool vec_dqkv) {
#if GPTCUDA_ATTN_TC
  constexpr int HSP = 64, LD = kTcLd, DPT = 4;
  extern __shared__ __align__(128) float4 smem4[];
  float* Ks = reinterpret_cast<float*>(smem4);
  float* Vs = Ks + 64 * LD;
  float* Qs = Vs + 64 * LD;
  float* dOs = Qs + 64 * LD;
  float* St = dOs + 64 * LD;   // S^T, then P'^T [keys][queries]; finally dK
  float* dPt = St + 64 * LD;   // dP^T, then dS^T [keys][queries]; finally dV
  float* lse_s = dPt + 64 * LD;
  float* D_s = lse_s + 64;

  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int hs = C / NH;
  const int k0 = blockIdx.y * 64;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const size_t stride = static_cast<size_t>(3) * C;
  const float* q_base = qkv + static_cast<size_t>(b) * T * stride + h * hs;
  const float* do_base = dout + static_cast<size_t>(b) * T * C + h * hs;
  const float* lse_bh = lse + static_cast<size_t>(bh) * T;
  const float* D_bh = Dv + static_cast<size_t>(bh) * T;
  const float sl2 = scale * kLog2e;
  const bool dropout = p_drop > 0.f;
  const float inv_keep = dropout ? 1.f / (1.f - p_drop) : 1.f;

  load_head_tile<HSP>(Ks, q_base + C, stride, k0, 64, T, hs, vec_qkv);
  load_head_tile<HSP>(Vs, q_base + 2 * C, stride, k0, 64, T, hs, vec_qkv);

  FragC dk[2], dv[2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    wmma::fill_fragment(dk[j], 0.f);
    wmma::fill_fragment(dv[j], 0.f);
  }

  for (int q0 = k0; q0 < T; q0 += 64) {
    __syncthreads();  // the previous tile's products are done with Qs/dOs/St/dPt
    load_head_tile<HSP>(Qs, q_base, stride, q0, 64, T, hs, vec_qkv);
    load_head_tile<HSP>(dOs, do_base, C, q0, 64, T, hs, vec_dout);
    for (int i = tid; i < 64; i += blockDim.x) {
      const int t = q0 + i;
      lse_s[i] = t < T ? lse_bh[t] * kLog2e : 0.f;
      D_s[i] = t < T ? D_bh[t] : 0.f;
    }
    __syncthreads();
    tc_scores(St, Ks, Qs);   // S^T[s][t] = k_s . q_t
    tc_scores(dPt, Vs, dOs); // dP^T[s][t] = v_s . dO_t
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty * 4 + i;
      const int sk = k0 + r;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = tx + 16 * j;
        const int t = q0 + c;
        float pd = 0.f, ds = 0.f;
        if (sk <= t && t < T) {
          const float p = exp2f(St[r * LD + c] * sl2 - lse_s[c]);
          float dp = dPt[r * LD + c];
          pd = p;
          if (dropout) {
            const uint64_t idx = (static_cast<uint64_t>(bh) * T + t) * T + sk;
            const float mk = dropout_keep(seed, stream, idx, p_drop) ? inv_keep : 0.f;
            pd = p * mk;
            dp *= mk;
          }
          ds = p * (dp - D_s[c]);
        }
        St[r * LD + c] = pd;
        dPt[r * LD + c] = ds;
      }
    }
    __syncthreads();
    tc_accumulate(dv, St, dOs);   // dV += P'^T dO
    tc_accumulate(dk, dPt, Qs);   // dK += dS^T Q (scaled below)
  }

  __syncthreads();  // every warp is done reading St/dPt
  tc_store(St, dk);
  tc_store(dPt, dv);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int sk = k0 + ty * 4 + i;
    if (sk < T) {
      float vk[DPT], vv[DPT];
      load_dims<HSP>(vk, St + (ty * 4 + i) * LD, tx);
      load_dims<HSP>(vv, dPt + (ty * 4 + i) * LD, tx);
      float* row = dqkv + (static_cast<size_t>(b) * T + sk) * stride + h * hs;
      store_row<HSP, true>(row + C, vk, scale, tx, hs, vec_dqkv);
      store_row<HSP, true>(row + 2 * C, vv, 1.f, tx, hs, vec_dqkv);
    }
  }
#else
  __trap();
#endif
}

// dQ for 64 queries per block, over 64-key tiles (see attention_backward_dq_kernel).
__global__ void __launch_bounds__(kThreads, 2)
    attention_backward_dq_tc_kernel(float* dqkv, const float* dout, const float* qkv,
                                    const float* lse, const float* Dv, int T, int C, int NH,
                                    float scale, float p_drop, uint64_t seed, uint64_t stream,
                                    bool vec_qkv, bool vec_dout, bool vec_dqkv) {
#if GPTCUDA_ATTN_TC
  constexpr int HSP = 64, LD = kTcLd, DPT = 4;
  extern __shared__ __align__(128) float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);
  float* dOs = Qs + 64 * LD;
  float* Ks = dOs + 64 * LD;
  float* Vs = Ks + 64 * LD;
  float* Ss = Vs + 64 * LD;   // S [queries][keys]; finally dQ
  float* dPs = Ss + 64 * LD;  // dP, then dS
  float* lse_s = dPs + 64 * LD;
  float* D_s = lse_s + 64;

  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int hs = C / NH;
  const int num_qt = (T + 63) / 64;
  const int q0 = (num_qt - 1 - static_cast<int>(blockIdx.y)) * 64;  // heavy tiles first
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const size_t stride = static_cast<size_t>(3) * C;
  const float* q_base = qkv + static_cast<size_t>(b) * T * stride + h * hs;
  const float* do_base = dout + static_cast<size_t>(b) * T * C + h * hs;
  const float sl2 = scale * kLog2e;
  const bool dropout = p_drop > 0.f;
  const float inv_keep = dropout ? 1.f / (1.f - p_drop) : 1.f;

  load_head_tile<HSP>(Qs, q_base, stride, q0, 64, T, hs, vec_qkv);
  load_head_tile<HSP>(dOs, do_base, C, q0, 64, T, hs, vec_dout);
  for (int i = tid; i < 64; i += blockDim.x) {
    const int t = q0 + i;
    lse_s[i] = t < T ? lse[static_cast<size_t>(bh) * T + t] * kLog2e : 0.f;
    D_s[i] = t < T ? Dv[static_cast<size_t>(bh) * T + t] : 0.f;
  }

  FragC dq[2];
  wmma::fill_fragment(dq[0], 0.f);
  wmma::fill_fragment(dq[1], 0.f);

  const int k_end = min(T, q0 + 64);
  for (int k0 = 0; k0 < k_end; k0 += 64) {
    __syncthreads();  // Q/dO/lse/D loaded; the previous tile is done with Ks/Vs/Ss/dPs
    load_head_tile<HSP>(Ks, q_base + C, stride, k0, 64, T, hs, vec_qkv);
    load_head_tile<HSP>(Vs, q_base + 2 * C, stride, k0, 64, T, hs, vec_qkv);
    __syncthreads();
    tc_scores(Ss, Qs, Ks);    // S[t][s]
    tc_scores(dPs, dOs, Vs);  // dP[t][s] before dropout
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty * 4 + i;
      const int t = q0 + r;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = tx + 16 * j;
        const int sk = k0 + c;
        float ds = 0.f;
        if (sk <= t && t < T) {
          const float p = exp2f(Ss[r * LD + c] * sl2 - lse_s[r]);
          float dp = dPs[r * LD + c];
          if (dropout) {
            const uint64_t idx = (static_cast<uint64_t>(bh) * T + t) * T + sk;
            dp *= dropout_keep(seed, stream, idx, p_drop) ? inv_keep : 0.f;
          }
          ds = p * (dp - D_s[r]);
        }
        dPs[r * LD + c] = ds;
      }
    }
    __syncthreads();
    tc_accumulate(dq, dPs, Ks);  // dQ += dS K (scaled below)
  }

  __syncthreads();
  tc_store(Ss, dq);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = q0 + ty * 4 + i;
    if (t < T) {
      float v[DPT];
      load_dims<HSP>(v, Ss + (ty * 4 + i) * LD, tx);
      float* row = dqkv + (static_cast<size_t>(b) * T + t) * stride + h * hs;
      store_row<HSP, true>(row, v, scale, tx, hs, vec_dqkv);
    }
  }
#else
  __trap();
#endif
}

// kcache/vcache[b, h, pos0 + i, d] = K/V of qkv[b, i, h, d] for the Tn new positions.
__global__ void kv_cache_write_kernel(float* kcache, float* vcache, const float* qkv, int B,
                                      int Tn, int C, int NH, int Tmax, int pos0) {
  const int hs = C / NH;
  const size_t total = static_cast<size_t>(B) * Tn * C;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += stride) {
    const int c = static_cast<int>(idx % C);
    const size_t bi = idx / C;  // b*Tn + i
    const int i = static_cast<int>(bi % Tn);
    const int b = static_cast<int>(bi / Tn);
    const int h = c / hs, d = c % hs;
    const size_t dst = ((static_cast<size_t>(b) * NH + h) * Tmax + pos0 + i) * hs + d;
    const float* src = qkv + bi * 3 * C + c;
    kcache[dst] = src[C];
    vcache[dst] = src[2 * C];
  }
}

constexpr int kDecodeWarps = 8;
constexpr int kDecodeDims = kMaxHead / 32;  // head dims per lane

// One block per (b, h, i): query pos0 + i against cache positions 0 .. pos0 + i.
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attention_decode_kernel(float* out, const float* kcache, const float* vcache,
                            const float* qkv, int Tn, int C, int NH, int Tmax, int pos0,
                            float scale, bool vec) {
  __shared__ __align__(16) float q_s[kMaxHead];
  __shared__ float m_s[kDecodeWarps], l_s[kDecodeWarps];
  __shared__ float acc_s[kDecodeWarps][kMaxHead];
  const int hs = C / NH;
  const int i = blockIdx.x % Tn;
  const int bh = blockIdx.x / Tn, b = bh / NH, h = bh % NH;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int last = pos0 + i;  // attends to positions 0 .. last
  const float* q = qkv + (static_cast<size_t>(b) * Tn + i) * 3 * C + h * hs;
  for (int d = threadIdx.x; d < kMaxHead; d += blockDim.x) q_s[d] = d < hs ? q[d] * scale : 0.f;
  __syncthreads();

  const float* kc = kcache + static_cast<size_t>(bh) * Tmax * hs;
  const float* vc = vcache + static_cast<size_t>(bh) * Tmax * hs;
  float m = -INFINITY, l = 0.f;
  float acc[kDecodeDims] = {};  // dims lane + 32 r
  for (int base = warp * 32; base <= last; base += kDecodeWarps * 32) {
    // Scores, one cache position per lane.
    const int s = base + lane;
    float score = -INFINITY;
    if (s <= last) {
      const float* k = kc + static_cast<size_t>(s) * hs;
      float dot = 0.f;
      if (vec) {
        for (int d = 0; d < hs; d += 4) {
          const float4 kv = *reinterpret_cast<const float4*>(k + d);
          const float4 qv = *reinterpret_cast<const float4*>(q_s + d);
          dot += kv.x * qv.x + kv.y * qv.y + kv.z * qv.z + kv.w * qv.w;
        }
      } else {
        for (int d = 0; d < hs; ++d) dot += k[d] * q_s[d];
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
      const float* v = vc + static_cast<size_t>(base + j) * hs;
#pragma unroll
      for (int r = 0; r < kDecodeDims; ++r) {
        const int d = lane + 32 * r;
        if (d < hs) acc[r] = fmaf(pj, v[d], acc[r]);
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
    out[(static_cast<size_t>(b) * Tn + i) * C + h * hs + d] = o / tot;
  }
}

// emu:kernels-end
// ---- host-side launchers ------------------------------------------------------------

// Opts a kernel into more than 48 KiB of dynamic shared memory (once per kernel).
template <typename Kernel>
void ensure_smem(Kernel kernel, size_t bytes, size_t optin_limit, const char* op) {
  if (bytes > optin_limit)
    throw std::runtime_error(std::string(op) + ": needs " + std::to_string(bytes) +
                             " bytes of shared memory per block, the GPU allows " +
                             std::to_string(optin_limit));
  if (bytes > 48 * 1024)
    GPTCUDA_CHECK(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes)));
}

template <int HSP>
void launch_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                    float p, DropoutRng rng, cudaStream_t stream, size_t smem_limit,
                    const char* op) {
  const int hs = C / NH;
  const bool vec_in = hs % 4 == 0 && cudak::aligned16(qkv);
  const bool vec_out = hs % 4 == 0 && cudak::aligned16(out);
  const size_t smem = forward_smem_bytes<HSP>();
  static bool configured = false;  // one device per process: set the attribute once
  if (!configured) {
    ensure_smem(attention_forward_kernel<HSP>, smem, smem_limit, op);
    configured = true;
  }
  dim3 grid(B * NH, (T + kRows - 1) / kRows);
  attention_forward_kernel<HSP><<<grid, kThreads, smem, stream>>>(
      out, lse, qkv, T, C, NH, 1.f / sqrtf(static_cast<float>(hs)), p, rng.seed, rng.stream,
      vec_in, vec_out);
  cudak::check_launch(op);
}

template <int HSP, int BN>
void launch_backward(float* dqkv, const float* dout, const float* qkv, const float* lse,
                     const float* D, int B, int T, int C, int NH, float p, DropoutRng rng,
                     cudaStream_t stream, size_t smem_limit, const char* op) {
  const int hs = C / NH;
  const bool vec_qkv = hs % 4 == 0 && cudak::aligned16(qkv);
  const bool vec_dout = hs % 4 == 0 && cudak::aligned16(dout);
  const bool vec_dqkv = hs % 4 == 0 && cudak::aligned16(dqkv);
  const float scale = 1.f / sqrtf(static_cast<float>(hs));
  const size_t smem = backward_smem_bytes<HSP, BN>();
  static bool configured = false;
  if (!configured) {
    ensure_smem(attention_backward_dkv_kernel<HSP, BN>, smem, smem_limit, op);
    ensure_smem(attention_backward_dq_kernel<HSP, BN>, smem, smem_limit, op);
    configured = true;
  }
  dim3 grid(B * NH, (T + kRows - 1) / kRows);
  attention_backward_dkv_kernel<HSP, BN><<<grid, kThreads, smem, stream>>>(
      dqkv, dout, qkv, lse, D, T, C, NH, scale, p, rng.seed, rng.stream, vec_qkv, vec_dout,
      vec_dqkv);
  cudak::check_launch(op);
  attention_backward_dq_kernel<HSP, BN><<<grid, kThreads, smem, stream>>>(
      dqkv, dout, qkv, lse, D, T, C, NH, scale, p, rng.seed, rng.stream, vec_qkv, vec_dout,
      vec_dqkv);
  cudak::check_launch(op);
}

void launch_forward_tc(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                       float p, DropoutRng rng, cudaStream_t stream, size_t smem_limit,
                       const char* op) {
  const int hs = C / NH;
  const bool vec_in = hs % 4 == 0 && cudak::aligned16(qkv);
  const bool vec_out = hs % 4 == 0 && cudak::aligned16(out);
  const size_t smem = forward_tc_smem_bytes();
  static bool configured = false;
  if (!configured) {
    ensure_smem(attention_forward_tc_kernel, smem, smem_limit, op);
    configured = true;
  }
  dim3 grid(B * NH, (T + 63) / 64);
  attention_forward_tc_kernel<<<grid, kThreads, smem, stream>>>(
      out, lse, qkv, T, C, NH, 1.f / sqrtf(static_cast<float>(hs)), p, rng.seed, rng.stream,
      vec_in, vec_out);
  cudak::check_launch(op);
}

void launch_backward_tc(float* dqkv, const float* dout, const float* qkv, const float* lse,
                        const float* D, int B, int T, int C, int NH, float p, DropoutRng rng,
                        cudaStream_t stream, size_t smem_limit, const char* op) {
  const int hs = C / NH;
  const bool vec_qkv = hs % 4 == 0 && cudak::aligned16(qkv);
  const bool vec_dout = hs % 4 == 0 && cudak::aligned16(dout);
  const bool vec_dqkv = hs % 4 == 0 && cudak::aligned16(dqkv);
  const float scale = 1.f / sqrtf(static_cast<float>(hs));
  const size_t smem = backward_tc_smem_bytes();
  static bool configured = false;
  if (!configured) {
    ensure_smem(attention_backward_dkv_tc_kernel, smem, smem_limit, op);
    ensure_smem(attention_backward_dq_tc_kernel, smem, smem_limit, op);
    configured = true;
  }
  dim3 grid(B * NH, (T + 63) / 64);
  attention_backward_dkv_tc_kernel<<<grid, kThreads, smem, stream>>>(
      dqkv, dout, qkv, lse, D, T, C, NH, scale, p, rng.seed, rng.stream, vec_qkv, vec_dout,
      vec_dqkv);
  cudak::check_launch(op);
  attention_backward_dq_tc_kernel<<<grid, kThreads, smem, stream>>>(
      dqkv, dout, qkv, lse, D, T, C, NH, scale, p, rng.seed, rng.stream, vec_qkv, vec_dout,
      vec_dqkv);
  cudak::check_launch(op);
}

void check_head_size(int C, int NH, const char* op) {
  if (NH <= 0 || C % NH != 0)
    throw std::runtime_error(std::string(op) + ": C=" + std::to_string(C) +
                             " is not a multiple of NH=" + std::to_string(NH));
  if (C / NH > kMaxHead)
    throw std::runtime_error(std::string(op) + ": head size " + std::to_string(C / NH) +
                             " > " + std::to_string(kMaxHead) + " is not supported");
}

}  // namespace

void CudaBackend::attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                                    int NH, float dropout_p, DropoutRng rng) {
  const char* op = "attention_forward";
  check_head_size(C, NH, op);
  if (B <= 0 || T <= 0 || C <= 0) return;
  begin_op(op);
  const int hs = C / NH;
  const float p = dropout_p > 0.f ? dropout_p : 0.f;
  const size_t lim = max_smem_optin_;
  if (use_tc_attention(hs)) launch_forward_tc(out, lse, qkv, B, T, C, NH, p, rng, stream_, lim, op);
  else if (hs <= 32) launch_forward<32>(out, lse, qkv, B, T, C, NH, p, rng, stream_, lim, op);
  else if (hs <= 64) launch_forward<64>(out, lse, qkv, B, T, C, NH, p, rng, stream_, lim, op);
  else if (hs <= 128) launch_forward<128>(out, lse, qkv, B, T, C, NH, p, rng, stream_, lim, op);
  else launch_forward<256>(out, lse, qkv, B, T, C, NH, p, rng, stream_, lim, op);
}

void CudaBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                     const float* out, const float* lse, int B, int T, int C,
                                     int NH, float dropout_p, DropoutRng rng) {
  const char* op = "attention_backward";
  check_head_size(C, NH, op);
  if (B <= 0 || T <= 0 || C <= 0) return;
  begin_op(op);
  const int hs = C / NH;
  const float p = dropout_p > 0.f ? dropout_p : 0.f;
  const size_t rows = static_cast<size_t>(B) * NH * T;
  float* D = static_cast<float*>(scratch(kScratchAttnD, rows * sizeof(float)));
  attention_backward_d_kernel<<<cudak::ceil_div(rows, 8), 256, 0, stream_>>>(D, dout, out, B, T, C,
                                                                            NH);
  cudak::check_launch(op);
  const size_t lim = max_smem_optin_;
  if (use_tc_attention(hs)) {
    launch_backward_tc(dqkv, dout, qkv, lse, D, B, T, C, NH, p, rng, stream_, lim, op);
  } else if (hs <= 32) {
    launch_backward<32, 64>(dqkv, dout, qkv, lse, D, B, T, C, NH, p, rng, stream_, lim, op);
  } else if (hs <= 64) {
    // 32-wide inner tiles: with 64 the dK/dV kernel needs ~190 registers, i.e.
    // one block per SM; with 32 it fits two (registers and shared memory).
    launch_backward<64, 32>(dqkv, dout, qkv, lse, D, B, T, C, NH, p, rng, stream_, lim, op);
  } else if (hs <= 128) {
    launch_backward<128, 32>(dqkv, dout, qkv, lse, D, B, T, C, NH, p, rng, stream_, lim, op);
  } else {
    launch_backward<256, 32>(dqkv, dout, qkv, lse, D, B, T, C, NH, p, rng, stream_, lim, op);
  }
}

void CudaBackend::attention_decode(float* out, float* kcache, float* vcache, const float* qkv,
                                   int B, int Tn, int C, int NH, int Tmax, int pos0) {
  const char* op = "attention_decode";
  check_head_size(C, NH, op);
  if (B <= 0 || Tn <= 0 || C <= 0) return;
  if (pos0 < 0 || pos0 + Tn > Tmax)
    throw std::runtime_error(std::string(op) + ": positions " + std::to_string(pos0) + ".." +
                             std::to_string(pos0 + Tn - 1) + " do not fit the cache of " +
                             std::to_string(Tmax));
  begin_op(op);
  const int hs = C / NH;
  const size_t total = static_cast<size_t>(B) * Tn * C;
  kv_cache_write_kernel<<<cudak::grid_for(total, 256, sm_count_), 256, 0, stream_>>>(
      kcache, vcache, qkv, B, Tn, C, NH, Tmax, pos0);
  cudak::check_launch(op);
  if (pos0 == 0 && Tn >= 32) {
    // A prefill: the new positions are the whole context, which is exactly
    // causal attention over qkv; the tiled kernel is much faster than one
    // block per query. lse is not needed.
    const DropoutRng none;
    const size_t lim = max_smem_optin_;
    if (use_tc_attention(hs))
      launch_forward_tc(out, nullptr, qkv, B, Tn, C, NH, 0.f, none, stream_, lim, op);
    else if (hs <= 32) launch_forward<32>(out, nullptr, qkv, B, Tn, C, NH, 0.f, none, stream_, lim, op);
    else if (hs <= 64) launch_forward<64>(out, nullptr, qkv, B, Tn, C, NH, 0.f, none, stream_, lim, op);
    else if (hs <= 128) launch_forward<128>(out, nullptr, qkv, B, Tn, C, NH, 0.f, none, stream_, lim, op);
    else launch_forward<256>(out, nullptr, qkv, B, Tn, C, NH, 0.f, none, stream_, lim, op);
    return;
  }
  const bool vec = hs % 4 == 0 && cudak::aligned16(kcache);
  const unsigned blocks = static_cast<unsigned>(static_cast<size_t>(B) * NH * Tn);
  attention_decode_kernel<<<blocks, kDecodeWarps * 32, 0, stream_>>>(
      out, kcache, vcache, qkv, Tn, C, NH, Tmax, pos0, 1.f / sqrtf(static_cast<float>(hs)), vec);
  cudak::check_launch(op);
}

}  // namespace gptcuda
