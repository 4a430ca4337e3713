// Fused causal self-attention in the FlashAttention manner (float32 or bf16 data in
// global memory; products on tensor cores or on CUDA cores, float32 softmax and
// accumulation everywhere). This header holds what the kernel families share; the
// families live in
//   attention_cuda_core.cu    tiled forward/backward, float32 products (any hs <= 256)
//   attention_tensor_core.cu  the same on tensor cores through WMMA (hs <= 64): TF32
//                             for float storage, bf16 for bf16 storage
//   attention_decode.cu       KV-cache decode, one block per new query
// attention.cu has the forward/backward entry points (validation, the D pre-pass of
// the backward) and attention_decode.cu the decode one; all three choose the family
// through the one head-size dispatch, attn::dispatch below. With attention's tensor
// cores on (Ampere and newer unless GPTCUDA_TF32=0, for either storage type) and
// hs <= 64 that is the tensor-core family, otherwise the CUDA-core one.
//
// Layout: qkv[B, T, 3C] with Q, K, V of head h at columns h*hs (+0, +C, +2C);
// out[B, T, C]; lse[B, NH, T] = log(sum_{s<=t} exp(q_t . k_s / sqrt(hs))) (natural
// log, undropped scores). No T x T matrix ever touches global memory.
//
// The tiled kernels use 256 threads seen as a 16 x 16 grid (ty = tid / 16, tx = tid % 16)
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
#pragma once
#include <cmath>

#include "backend_cuda.cuh"
#include "philox.h"

namespace gptcuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxHead = 256;  // the largest head size (the CPU backend's limit too)
constexpr int kRows = 64;  // rows (queries in forward/dQ, keys in dK/dV) per block
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float f4get(const float4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

// Max and sum over the 16 threads that share a row (one half of a warp).
__device__ __forceinline__ float row_max(float v) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
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

// Copies rows row0 .. row0+nrows-1 of one head into a shared float tile [nrows][HSP+4].
// `base` points at row 0, dim 0 of the head; rows are `stride` elements apart.
// Rows >= T and dims >= hs are zero. vec: hs % 4 == 0 and base 16-byte aligned
// (with stride % 4 == 0), so whole groups of 4 are in or out of range.
template <int HSP, class S>
__device__ __forceinline__ void load_head_tile(float* tile, const S* base, size_t stride,
                                               int row0, int nrows, int T, int hs, bool vec) {
  constexpr int LD = HSP + 4;
  if (vec) {
    constexpr int V4 = HSP / 4;
    for (int e = threadIdx.x; e < nrows * V4; e += blockDim.x) {
      const int r = e / V4, d = (e % V4) * 4;
      const int t = row0 + r;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (t < T && d < hs) v = cudak::load4(base + t * stride + d);
      *reinterpret_cast<float4*>(tile + r * LD + d) = v;
    }
  } else {
    for (int e = threadIdx.x; e < nrows * HSP; e += blockDim.x) {
      const int r = e / HSP, d = e % HSP;
      const int t = row0 + r;
      tile[r * LD + d] = (t < T && d < hs) ? to_float(base[t * stride + d]) : 0.f;
    }
  }
}

// dst[dim_of(tx, j)] (+)= s * acc[j] for the dims < hs of one row of a head in
// global memory (the sum in float, rounded to S once). vec: hs % 4 == 0 and dst
// 16-byte aligned.
template <int HSP, bool kAccumulate, class S>
__device__ __forceinline__ void store_row(S* dst, const float (&acc)[HSP / 16], float s, int tx,
                                          int hs, bool vec) {
  constexpr int DPT = HSP / 16;
  if (DPT >= 4 && vec) {
#pragma unroll
    for (int q = 0; q < DPT / 4; ++q) {
      const int d = dim_of<HSP>(tx, q * 4);
      if (d < hs) {
        float4 v = make_float4(s * acc[q * 4 + 0], s * acc[q * 4 + 1], s * acc[q * 4 + 2],
                               s * acc[q * 4 + 3]);
        if (kAccumulate) {
          const float4 o = cudak::load4(dst + d);
          v.x += o.x; v.y += o.y; v.z += o.z; v.w += o.w;
        }
        cudak::store4(dst + d, v);
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < DPT; ++j) {
      const int d = dim_of<HSP>(tx, j);
      if (d < hs) {
        if (kAccumulate) dst[d] = from_float<S>(to_float(dst[d]) + s * acc[j]);
        else dst[d] = from_float<S>(s * acc[j]);
      }
    }
  }
}

// The dropout mask of P[b, h, t, s], regenerated from its index wherever needed.
struct ProbDropout {
  float p, inv_keep;
  uint64_t seed, stream;
  bool on;
  __device__ ProbDropout(float p_drop, uint64_t seed_, uint64_t stream_)
      : p(p_drop), inv_keep(p_drop > 0.f ? 1.f / (1.f - p_drop) : 1.f), seed(seed_),
        stream(stream_), on(p_drop > 0.f) {}
  // 1/(1-p) for a kept probability, 0 for a dropped one.
  __device__ float mask(int bh, int T, int t, int s) const {
    const uint64_t idx = (static_cast<uint64_t>(bh) * T + t) * T + s;
    return dropout_keep(seed, stream, idx, p) ? inv_keep : 0.f;
  }
};

// The (b, h) head of a tiled kernel's block, the pieces of qkv and dout that
// belong to it (stored as S), and the scalars every score needs.
template <class S>
struct HeadBlockT {
  int bh, b, h, hs, ty, tx, T, C;
  size_t stride;      // elements between the rows of qkv (3C)
  const S* q;         // Q of row 0 of this head; K and V follow at +C and +2C
  const S* dO;        // dout of row 0 of this head (backward only)
  float sl2;          // the score scale in log2 units: exp(x) = exp2(x log2 e)
  ProbDropout drop;
  __device__ HeadBlockT(const S* qkv, const S* dout, int T_, int C_, int NH, float scale,
                        float p_drop, uint64_t seed, uint64_t stream)
      : bh(blockIdx.x), b(bh / NH), h(bh % NH), hs(C_ / NH), ty(threadIdx.x / 16),
        tx(threadIdx.x % 16), T(T_), C(C_), stride(static_cast<size_t>(3) * C_),
        q(qkv + static_cast<size_t>(b) * T_ * stride + h * hs),
        dO(dout ? dout + static_cast<size_t>(b) * T_ * C_ + h * hs : nullptr),
        sl2(scale * kLog2e), drop(p_drop, seed, stream) {}
  // Row t of this head in a [B, T, width] tensor.
  __device__ size_t row(int t, int width) const {
    return (static_cast<size_t>(b) * T + t) * width + h * hs;
  }
  // Rows row0 .. row0+n-1 of K and V, or of Q and dO, into two shared tiles.
  template <int HSP>
  __device__ void load_kv(float* k_tile, float* v_tile, int row0, int n, bool vec_qkv) const {
    load_head_tile<HSP>(k_tile, q + C, stride, row0, n, T, hs, vec_qkv);
    load_head_tile<HSP>(v_tile, q + 2 * C, stride, row0, n, T, hs, vec_qkv);
  }
  template <int HSP>
  __device__ void load_qdo(float* q_tile, float* do_tile, int row0, int n, bool vec_qkv,
                           bool vec_dout) const {
    load_head_tile<HSP>(q_tile, q, stride, row0, n, T, hs, vec_qkv);
    load_head_tile<HSP>(do_tile, dO, C, row0, n, T, hs, vec_dout);
  }
};
using HeadBlock = HeadBlockT<float>;

// The shared memory of a backward block: two tiles of the block's own 64 rows
// (K and V for dK/dV, Q and dO for dQ) of row stride LD, two tiles of the BN
// rows it visits in turn (Q and dO, or K and V), two [64][LDT] score tiles, and
// lse and D of the current query rows.
struct BackwardSmem {
  float *own0, *own1, *vis0, *vis1, *s0, *s1, *lse, *D;
  // Pointers set by the kernel (the tensor-core kernels, whose operand tiles may be bf16).
  BackwardSmem() = default;
  __device__ BackwardSmem(float4* smem, int LD, int BN, int LDT)
      : own0(reinterpret_cast<float*>(smem)), own1(own0 + kRows * LD), vis0(own1 + kRows * LD),
        vis1(vis0 + BN * LD), s0(vis1 + BN * LD), s1(s0 + kRows * LDT), lse(s1 + kRows * LDT),
        D(lse + kRows) {}
};

// The first row of this block's query tile: the last tiles, with the most keys
// to visit, come first.
__device__ __forceinline__ int heavy_first_tile(int T) {
  return ((T + kRows - 1) / kRows - 1 - static_cast<int>(blockIdx.y)) * kRows;
}

// A thread's four query rows of the forward: running max m (log2 units),
// partial sum l of this thread's columns, and the output accumulator o.
template <int DPT>
struct SoftmaxRows {
  float o[4][DPT];
  float m[4], l[4];
  __device__ SoftmaxRows() {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      m[i] = -INFINITY;
      l[i] = 0.f;
#pragma unroll
      for (int j = 0; j < DPT; ++j) o[i][j] = 0.f;
    }
  }

  // Row i's online-softmax step over a key tile: s holds the raw scores of
  // keys k0 + tx + 16 j for query q0 + ty*4 + i; the probabilities (dropout applied) go to
  // prow[tx + 16 j] and o[i] is rescaled for the new running max.
  template <int N, class HB>
  __device__ __forceinline__ void step(int i, float (&s)[N], float* prow, int q0, int k0,
                                       const HB& hb) {
    const int t = q0 + hb.ty * 4 + i, tx = hb.tx, T = hb.T;
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const int sk = k0 + tx + 16 * j;
      s[j] = (sk <= t && t < T) ? s[j] * hb.sl2 : -INFINITY;
      mx = fmaxf(mx, s[j]);
    }
    const float m_new = fmaxf(m[i], row_max(mx));
    // A row with nothing unmasked yet (only rows t >= T) keeps everything at 0.
    const float m_use = m_new == -INFINITY ? 0.f : m_new;
    const float corr = exp2f(m[i] - m_use);
    m[i] = m_new;
    float rowsum = 0.f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float p = exp2f(s[j] - m_use);
      rowsum += p;
      if (hb.drop.on) p = t < T ? p * hb.drop.mask(hb.bh, T, t, k0 + tx + 16 * j) : 0.f;
      prow[tx + 16 * j] = p;
    }
    l[i] = l[i] * corr + rowsum;
#pragma unroll
    for (int j = 0; j < DPT; ++j) o[i][j] *= corr;
  }

  // out = o / l for the rows < T (the full row sums across the row's 16
  // threads), and lse = m + log(l) when lse is wanted.
  template <int HSP, class S>
  __device__ __forceinline__ void store(S* out, float* lse, const HeadBlockT<S>& hb, int q0,
                                        bool vec_out) const {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float lt = row_sum(l[i]);
      const int t = q0 + hb.ty * 4 + i;
      if (t < hb.T) {
        store_row<HSP, false>(out + hb.row(t, hb.C), o[i], 1.f / lt, hb.tx, hb.hs, vec_out);
        if (lse && hb.tx == 0) lse[static_cast<size_t>(hb.bh) * hb.T + t] = (m[i] + log2f(lt)) * kLn2;
      }
    }
  }
};

// One score of a backward tile, for query t and key sk: the probability after
// dropout (x) and dS (y), both 0 where masked. score and dp are the raw
// products q_t . k_s and dO_t . v_s; lse2 is the row's lse in log2 units.
template <class HB>
__device__ __forceinline__ float2 backward_score(float score, float dp, float lse2, float D, int t,
                                                 int sk, const HB& hb) {
  float pd = 0.f, ds = 0.f;
  if (sk <= t && t < hb.T) {
    const float p = exp2f(score * hb.sl2 - lse2);
    pd = p;
    if (hb.drop.on) {
      const float mk = hb.drop.mask(hb.bh, hb.T, t, sk);
      pd = p * mk;
      dp *= mk;
    }
    ds = p * (dp - D);
  }
  return make_float2(pd, ds);
}

// The two roles of a backward block, mirror images of each other: kKeys, one
// block per (b, h, 64 keys) computing dK and dV over the queries at or after
// them; otherwise one block per (b, h, 64 queries) computing dQ over the keys up
// to the diagonal. The block keeps its own rows r0 .. r0+63 in shared memory (K
// and V, or Q and dO) and visits the other side's rows a tile at a time (Q and
// dO with their lse and D, or K and V). The score tiles are [own][visited]: S^T
// and dP^T for keys, S and dP for queries.
template <int HSP, bool kKeys, class S = float>
struct BackwardRole {
  const BackwardSmem& sm;
  const HeadBlockT<S>& hb;
  const float* lse;
  const float* Dv;
  bool vec_qkv, vec_dout;
  int r0;  // key tile 0 (the most queries) or the heaviest query tile first

  __device__ BackwardRole(const BackwardSmem& sm_, const HeadBlockT<S>& hb_, const float* lse_,
                          const float* Dv_, bool vec_qkv_, bool vec_dout_)
      : sm(sm_), hb(hb_), lse(lse_), Dv(Dv_), vec_qkv(vec_qkv_), vec_dout(vec_dout_),
        r0(kKeys ? static_cast<int>(blockIdx.y) * kRows : heavy_first_tile(hb_.T)) {}

  // The visited rows: queries r0 .. T-1 for keys (r0 is a multiple of 64, so of
  // any tile width), keys 0 .. min(T, r0 + 64)-1 for queries.
  __device__ int visit_begin() const { return kKeys ? r0 : 0; }
  __device__ int visit_end() const { return kKeys ? hb.T : min(hb.T, r0 + kRows); }

  __device__ void load_own() const {
    if constexpr (kKeys) {
      hb.template load_kv<HSP>(sm.own0, sm.own1, r0, kRows, vec_qkv);
    } else {
      hb.template load_qdo<HSP>(sm.own0, sm.own1, r0, kRows, vec_qkv, vec_dout);
      load_stats(r0, kRows);
    }
  }
  __device__ void load_visited(int v0, int n) const {
    if constexpr (kKeys) {
      hb.template load_qdo<HSP>(sm.vis0, sm.vis1, v0, n, vec_qkv, vec_dout);
      load_stats(v0, n);
    } else {
      hb.template load_kv<HSP>(sm.vis0, sm.vis1, v0, n, vec_qkv);
    }
  }
  // lse (in log2 units) and D of queries t0 .. t0+n-1.
  __device__ void load_stats(int t0, int n) const {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int t = t0 + i;
      sm.lse[i] = t < hb.T ? lse[static_cast<size_t>(hb.bh) * hb.T + t] * kLog2e : 0.f;
      sm.D[i] = t < hb.T ? Dv[static_cast<size_t>(hb.bh) * hb.T + t] : 0.f;
    }
  }

  // backward_score of own row r and visited row v0 + c.
  __device__ float2 score(float s, float dp, int r, int c, int v0) const {
    const int q = kKeys ? c : r;  // the query's row in the stats
    const int t = kKeys ? v0 + c : r0 + r, sk = kKeys ? r0 + r : v0 + c;
    return backward_score(s, dp, sm.lse[q], sm.D[q], t, sk, hb);
  }

  // Adds the gradients of this thread's own row i into dqkv: dK = scale * g0 and
  // dV = g1 for keys, dQ = scale * g0 for queries.
  __device__ void store(S* dqkv, int i, const float (&g0)[HSP / 16],
                        const float (&g1)[HSP / 16], float scale, bool vec_dqkv) const {
    const int row = r0 + hb.ty * 4 + i;
    if (row >= hb.T) return;
    S* dst = dqkv + hb.row(row, 3 * hb.C);
    if constexpr (kKeys) {
      store_row<HSP, true>(dst + hb.C, g0, scale, hb.tx, hb.hs, vec_dqkv);
      store_row<HSP, true>(dst + 2 * hb.C, g1, 1.f, hb.tx, hb.hs, vec_dqkv);
    } else {
      store_row<HSP, true>(dst, g0, scale, hb.tx, hb.hs, vec_dqkv);
    }
  }
};

}  // namespace

// ---- host side: the families' launchers and the one head-size dispatch ------------------
namespace attn {

// What every launcher needs; ForwardArgs and BackwardArgs add the op's tensors,
// stored as S.
template <class S>
struct ProblemT {
  const S* qkv;
  int B, T, C, NH;
  float p;
  DropoutRng rng;
  cudaStream_t stream;
  size_t smem_limit;  // the GPU's opt-in shared memory per block
  const char* op;
  int hs() const { return C / NH; }
  float scale() const { return 1.f / sqrtf(static_cast<float>(hs())); }
  // Whole float4 rows: hs % 4 == 0 and the pointer 16-byte aligned.
  bool vec(const void* ptr) const { return hs() % 4 == 0 && cudak::aligned16(ptr); }
  dim3 grid() const { return dim3(B * NH, (T + kRows - 1) / kRows); }
};
template <class S>
struct ForwardArgsT : ProblemT<S> {
  S* out;
  float* lse;  // may be null (decode prefill)
};
template <class S>
struct BackwardArgsT : ProblemT<S> {
  S* dqkv;
  const S* dout;
  const float* lse;
  const float* D;  // rowsum(dout * out), [B, NH, T]
};
using Problem = ProblemT<float>;
using ForwardArgs = ForwardArgsT<float>;
using BackwardArgs = BackwardArgsT<float>;

// Opts a kernel into more than 48 KiB of dynamic shared memory. The launchers
// call it once per kernel (one device per process), through a static.
template <typename Kernel, class S>
bool ensure_smem(Kernel kernel, size_t bytes, const ProblemT<S>& a) {
  if (bytes > a.smem_limit)
    throw std::runtime_error(std::string(a.op) + ": needs " + std::to_string(bytes) +
                             " bytes of shared memory per block, the GPU allows " +
                             std::to_string(a.smem_limit));
  if (bytes > 48 * 1024)
    GPTCUDA_CHECK(a.op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(bytes)));
  return true;
}

// The CUDA-core kernels for heads padded to HSP dims (attention_cuda_core.cu), for
// float and bf16 storage.
template <int HSP>
struct CudaCore {
  template <class S>
  static void forward(const ForwardArgsT<S>& a);
  template <class S>
  static void backward(const BackwardArgsT<S>& a);
};
// The tensor-core kernels, heads of at most 64 dims (attention_tensor_core.cu):
// TF32 for float storage, bf16 for bf16.
struct TensorCore {
  template <class S>
  static void forward(const ForwardArgsT<S>& a);
  template <class S>
  static void backward(const BackwardArgsT<S>& a);
};

// The one head-size dispatch: calls f with the family that runs heads of hs
// dims (tensor_cores: the caller's choice, see CudaBackend::use_tc_attention).
// dispatch_cuda_core: the CUDA-core family only.
template <typename F>
void dispatch_cuda_core(int hs, F f) {
  if (hs <= 32) f(CudaCore<32>{});
  else if (hs <= 64) f(CudaCore<64>{});
  else if (hs <= 128) f(CudaCore<128>{});
  else f(CudaCore<256>{});
}
template <typename F>
void dispatch(int hs, bool tensor_cores, F f) {
  if (tensor_cores) f(TensorCore{});
  else dispatch_cuda_core(hs, f);
}

// Validates the head size; false when there is nothing to compute.
inline bool has_work(int B, int T, int C, int NH, const char* op) {
  if (NH <= 0 || C % NH != 0)
    throw std::runtime_error(std::string(op) + ": C=" + std::to_string(C) +
                             " is not a multiple of NH=" + std::to_string(NH));
  if (C / NH > kMaxHead)
    throw std::runtime_error(std::string(op) + ": head size " + std::to_string(C / NH) +
                             " > " + std::to_string(kMaxHead) + " is not supported");
  return B > 0 && T > 0 && C > 0;
}

}  // namespace attn
}  // namespace gptcuda
