// Token + position embedding.
//
// Forward: one thread per output element (a 16-byte pack when C is a multiple
// of it and the buffers are aligned). An id outside [0, V) is clamped so the GPU never reads
// out of bounds, and recorded in the device error record; the host reports it
// at the next synchronize()/download().
//
// Backward, deterministic without float atomics:
//   dwpe: one thread per (t, c) adds dout[b, t, c] over b in order.
//   dwte: the (b, t) positions are stably sorted by token id (CUB radix sort on
//   the ids; stable, so equal ids keep increasing position order). Each run of
//   equal ids is then owned by one block (a block per run start and channel
//   chunk), which adds that run's dout rows into dwte[id] in position order,
//   channels in parallel. Every dwte row is written by exactly one thread per
//   channel and the order of additions is fixed, so the result is the same on
//   every run, and matches a sequential loop over positions. Cost: one small
//   sort plus one read of dout; a token repeated k times costs k serial row
//   reads in its block (fine for text; a batch of one repeated token is the
//   worst case).
// No NVTX profiler ranges from CUB: less host overhead, fewer exported symbols.
#define CCCL_DISABLE_NVTX
#include <cub/device/device_radix_sort.cuh>

#include "backend_cuda.cuh"

namespace gptcuda {
namespace {

using cudak::DeviceError;

// out[bt, c] = wte[id, c] + wpe[pos0 + t, c]; one thread per 16-byte pack of
// channels (vec) or per channel, grid-stride over B*T*C/width.
template <class S>
__global__ void embedding_forward_kernel(S* out, const int32_t* ids, const S* wte, const S* wpe,
                                         int BT, int T, int C, int V, int pos0, bool vec,
                                         DeviceError* err) {
  using cudak::Pack;
  const int width = vec ? Pack<S>::kWidth : 1;
  const int per_row = C / width;
  const size_t total = static_cast<size_t>(BT) * per_row;
  cudak::grid_stride(total, [&](size_t idx) {
    const int bt = static_cast<int>(idx / per_row);
    const int c = static_cast<int>(idx % per_row) * width;
    const int t = bt % T;
    int id = ids[bt];
    if (id < 0 || id >= V) {
      if (c == 0) cudak::report_device_error(err, cudak::kEmbeddingIdOutOfRange, id, V);
      id = id < 0 ? 0 : V - 1;
    }
    const S* w = wte + static_cast<size_t>(id) * C + c;
    const S* p = wpe + static_cast<size_t>(pos0 + t) * C + c;
    S* o = out + static_cast<size_t>(bt) * C + c;
    if (vec) {
      const Pack<S> a = cudak::load_pack(w), b = cudak::load_pack(p);
      Pack<S> r;
#pragma unroll
      for (int j = 0; j < Pack<S>::kWidth; ++j) r.set(j, a.get(j) + b.get(j));
      cudak::store_pack(o, r);
    } else {
      *o = from_float<S>(to_float(*w) + to_float(*p));
    }
  });
}

// dwpe[pos0 + t, c] += sum_b dout[b, t, c], b in increasing order.
// The sums are float; a bf16 gradient is rounded once, after the last term.
template <class S>
__global__ void embedding_backward_wpe_kernel(S* dwpe, const S* dout, int B, int T, int C,
                                              int pos0) {
  const size_t total = static_cast<size_t>(T) * C;
  cudak::grid_stride(total, [&](size_t idx) {
    const size_t t = idx / C, c = idx % C;
    float acc = to_float(dwpe[(pos0 + t) * C + c]);
    for (int b = 0; b < B; ++b) acc += to_float(dout[(static_cast<size_t>(b) * T + t) * C + c]);
    dwpe[(pos0 + t) * C + c] = from_float<S>(acc);
  });
}

__global__ void iota_kernel(int32_t* x, int n) {
  cudak::grid_stride(n, [&](size_t i) { x[i] = static_cast<int32_t>(i); });
}

// Block (i, chunk): if sorted position i starts a run of equal ids, adds the
// run's dout rows (in position order) into dwte[id] for this block's channels.
template <class S>
__global__ void embedding_backward_wte_kernel(S* dwte, const S* dout,
                                              const int32_t* sorted_ids,
                                              const int32_t* sorted_pos, int BT, int C,
                                              const DeviceError* err) {
  const int i = blockIdx.x;
  const int id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;  // not the start of a run
  // A negative id, or any id after embedding_forward flagged one, would index
  // outside dwte (whose V this op does not know): skip; the error is reported.
  if (id < 0 || err->code != 0) return;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  S* row = dwte + static_cast<size_t>(id) * C + c;
  float acc = to_float(*row);
  for (int j = i; j < BT && sorted_ids[j] == id; ++j)
    acc += to_float(dout[static_cast<size_t>(sorted_pos[j]) * C + c]);
  *row = from_float<S>(acc);
}

}  // namespace

template <class S>
void CudaBackend::embedding_forward_impl(S* out, const int32_t* ids, const S* wte, const S* wpe,
                                         int B, int T, int C, int V, int pos0) {
  const int BT = B * T;
  if (BT == 0 || C == 0) return;
  begin_op("embedding_forward");
  constexpr int W = cudak::Pack<S>::kWidth;
  const bool vec = C % W == 0 && cudak::aligned16(out) && cudak::aligned16(wte) &&
                   cudak::aligned16(wpe);
  const size_t work = static_cast<size_t>(BT) * (vec ? C / W : C);
  const unsigned grid = cudak::grid_for(work, 256, sm_count_);
  embedding_forward_kernel<S><<<grid, 256, 0, stream_>>>(out, ids, wte, wpe, BT, T, C, V, pos0,
                                                         vec, d_error_);
  cudak::check_launch("embedding_forward");
}
void CudaBackend::embedding_forward(float* out, const int32_t* ids, const float* wte,
                                    const float* wpe, int B, int T, int C, int V, int pos0) {
  embedding_forward_impl(out, ids, wte, wpe, B, T, C, V, pos0);
}
void CudaBackend::embedding_forward(bf16* out, const int32_t* ids, const bf16* wte,
                                    const bf16* wpe, int B, int T, int C, int V, int pos0) {
  embedding_forward_impl(out, ids, wte, wpe, B, T, C, V, pos0);
}

template <class S>
void CudaBackend::embedding_backward_impl(S* dwte, S* dwpe, const S* dout, const int32_t* ids,
                                          int B, int T, int C, int pos0) {
  const int BT = B * T;
  if (BT == 0 || C == 0) return;
  const char* op = "embedding_backward";
  begin_op(op);
  if (dwpe) {
    const unsigned grid = cudak::grid_for(static_cast<size_t>(T) * C, 256, sm_count_);
    embedding_backward_wpe_kernel<S><<<grid, 256, 0, stream_>>>(dwpe, dout, B, T, C, pos0);
    cudak::check_launch(op);
  }
  if (!dwte) return;

  // Sort (id, position) pairs by id; the sort is stable.
  size_t temp_bytes = 0;
  GPTCUDA_CHECK(op, cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ids,
                                                    static_cast<int32_t*>(nullptr),
                                                    static_cast<const int32_t*>(nullptr),
                                                    static_cast<int32_t*>(nullptr), BT, 0, 32,
                                                    stream_));
  const size_t n_bytes = static_cast<size_t>(BT) * sizeof(int32_t);
  auto* keys_out = static_cast<int32_t*>(scratch(kScratchSortKeys, n_bytes));
  auto* pos_in = static_cast<int32_t*>(scratch(kScratchSortIn, n_bytes));
  auto* pos_out = static_cast<int32_t*>(scratch(kScratchSortVals, n_bytes));
  void* temp = scratch(kScratchSortTemp, temp_bytes);
  iota_kernel<<<cudak::grid_for(BT, 256, sm_count_), 256, 0, stream_>>>(pos_in, BT);
  cudak::check_launch(op);
  GPTCUDA_CHECK(op, cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, keys_out, pos_in,
                                                    pos_out, BT, 0, 32, stream_));
  const int block = C >= 256 ? 256 : ((C + 31) / 32) * 32;
  dim3 grid(BT, cudak::ceil_div(C, block));
  embedding_backward_wte_kernel<S><<<grid, block, 0, stream_>>>(dwte, dout, keys_out, pos_out, BT,
                                                                C, d_error_);
  cudak::check_launch(op);
}
void CudaBackend::embedding_backward(float* dwte, float* dwpe, const float* dout,
                                     const int32_t* ids, int B, int T, int C, int pos0) {
  embedding_backward_impl(dwte, dwpe, dout, ids, B, T, C, pos0);
}
void CudaBackend::embedding_backward(bf16* dwte, bf16* dwpe, const bf16* dout,
                                     const int32_t* ids, int B, int T, int C, int pos0) {
  embedding_backward_impl(dwte, dwpe, dout, ids, B, T, C, pos0);
}

}  // namespace gptcuda
