#include <stdexcept>
#include <string>

#include "backend_cpu.h"
#include "parallel.h"

namespace gptcuda {

void CpuBackend::embedding_forward(float* out, const int32_t* ids, const float* wte, const float* wpe, int B,
                       int T, int C, int V, int pos0) {
  for (int i = 0; i < B * T; ++i) {
    if (ids[i] < 0 || ids[i] >= V)
      throw std::runtime_error("token id " + std::to_string(ids[i]) + " at position " +
                               std::to_string(i) + " is out of range [0, " + std::to_string(V) +
                               ")");
  }
  parallel_for(size_t(B) * T, 64, [&](size_t lo, size_t hi) {
    for (size_t bt = lo; bt < hi; ++bt) {
      const float* tok = wte + size_t(ids[bt]) * C;
      const float* pos = wpe + size_t(pos0 + int(bt % T)) * C;
      float* o = out + bt * C;
      for (int c = 0; c < C; ++c) o[c] = tok[c] + pos[c];
    }
  });
}

// Parallel over channel ranges: every thread owns a slice of columns of dwte
// and dwpe, so rows hit by several tokens accumulate without races, and in a
// fixed order (deterministic).
void CpuBackend::embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, int B,
                        int T, int C, int pos0) {
  parallel_for(size_t(C), 16, [&](size_t c0, size_t c1) {
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < T; ++t) {
        const float* g = dout + (size_t(b) * T + t) * C;
        if (dwte) {
          float* w = dwte + size_t(ids[size_t(b) * T + t]) * C;
          for (size_t c = c0; c < c1; ++c) w[c] += g[c];
        }
        if (dwpe) {
          float* p = dwpe + size_t(pos0 + t) * C;
          for (size_t c = c0; c < c1; ++c) p[c] += g[c];
        }
      }
    }
  });
}

}  // namespace gptcuda
