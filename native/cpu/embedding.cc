#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend_cpu.h"
#include "parallel.h"

namespace gptcuda {

namespace {

template <class S>
void forward(S* out, const int32_t* ids, const S* wte, const S* wpe, int B, int T, int C, int V, int pos0) {
  for (int i = 0; i < B * T; ++i) {
    if (ids[i] < 0 || ids[i] >= V)
      throw std::runtime_error("token id " + std::to_string(ids[i]) + " at position " +
                               std::to_string(i) + " is out of range [0, " + std::to_string(V) +
                               ")");
  }
  parallel_for(size_t(B) * T, 64, [&](size_t lo, size_t hi) {
    for (size_t bt = lo; bt < hi; ++bt) {
      const S* tok = wte + size_t(ids[bt]) * C;
      const S* pos = wpe + size_t(pos0 + int(bt % T)) * C;
      S* o = out + bt * C;
      for (int c = 0; c < C; ++c) o[c] = from_float<S>(to_float(tok[c]) + to_float(pos[c]));
    }
  });
}

// Parallel over channel ranges: every thread owns a slice of columns of dwte
// and dwpe, so rows hit by several tokens accumulate without races. Tokens are
// grouped by id (a stable sort: token order within a group), so each row's
// sum runs in float32 from its old value over its tokens in order and is
// stored once: for bf16 one rounding per element however many tokens share
// the id; for float the same additions in the same order as a plain
// token-by-token loop.
template <class S>
void backward(S* dwte, S* dwpe, const S* dout, const int32_t* ids, int B, int T, int C, int pos0) {
  const size_t BT = size_t(B) * T;
  std::vector<uint32_t> order;
  if (dwte) {
    order.resize(BT);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return ids[a] < ids[b]; });
  }
  parallel_for(size_t(C), 16, [&](size_t c0, size_t c1) {
    const size_t w = c1 - c0;
    std::vector<float> acc(w);
    if (dwte) {
      for (size_t g = 0; g < BT;) {
        const int32_t id = ids[order[g]];
        S* row = dwte + size_t(id) * C + c0;
        for (size_t c = 0; c < w; ++c) acc[c] = to_float(row[c]);
        for (; g < BT && ids[order[g]] == id; ++g) {
          const S* grad = dout + size_t(order[g]) * C + c0;
          for (size_t c = 0; c < w; ++c) acc[c] += to_float(grad[c]);
        }
        for (size_t c = 0; c < w; ++c) row[c] = from_float<S>(acc[c]);
      }
    }
    if (dwpe) {
      for (int t = 0; t < T; ++t) {
        S* row = dwpe + size_t(pos0 + t) * C + c0;
        for (size_t c = 0; c < w; ++c) acc[c] = to_float(row[c]);
        for (int b = 0; b < B; ++b) {
          const S* grad = dout + (size_t(b) * T + t) * C + c0;
          for (size_t c = 0; c < w; ++c) acc[c] += to_float(grad[c]);
        }
        for (size_t c = 0; c < w; ++c) row[c] = from_float<S>(acc[c]);
      }
    }
  });
}

}  // namespace

void CpuBackend::embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                                   int T, int C, int V, int pos0) {
  forward(out, ids, wte, wpe, B, T, C, V, pos0);
}
void CpuBackend::embedding_forward(bf16* out, const int32_t* ids, const bf16* wte, const bf16* wpe, int B,
                                   int T, int C, int V, int pos0) {
  forward(out, ids, wte, wpe, B, T, C, V, pos0);
}
void CpuBackend::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                                    int T, int C, int pos0) {
  backward(dwte, dwpe, dout, ids, B, T, C, pos0);
}
void CpuBackend::embedding_backward(bf16* dwte, bf16* dwpe, const bf16* dout, const int32_t* ids, int B,
                                    int T, int C, int pos0) {
  backward(dwte, dwpe, dout, ids, B, T, C, pos0);
}

}  // namespace gptcuda
