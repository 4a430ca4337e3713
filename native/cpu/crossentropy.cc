#include <cmath>
#include <type_traits>
#include <vector>

#include "backend_cpu.h"
#include "parallel.h"
#include "storage.h"
#include "vec.h"

namespace gptcuda {

namespace {
// Returns max and log(sum(exp(x - max))) of one row.
inline void row_logsumexp(const float* x, int V, float* max_out, float* log_sum_out) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int j = 0; j < V; ++j) mx = x[j] > mx ? x[j] : mx;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < V; ++j) sum += exp_fast(x[j] - mx);
  *max_out = mx;
  *log_sum_out = std::log(sum);
}

template <class S>
void forward(float* losses, const S* logits, const int32_t* targets, int N, int V, int ignore_index) {
  parallel_for(size_t(N), 1, [&](size_t lo, size_t hi) {
    std::vector<float> xbuf;
    for (size_t i = lo; i < hi; ++i) {
      if (targets[i] == ignore_index) {
        losses[i] = 0.f;
        continue;
      }
      const float* x = as_float(logits + i * V, V, xbuf);
      float mx, log_sum;
      row_logsumexp(x, V, &mx, &log_sum);
      losses[i] = log_sum - (x[targets[i]] - mx);
    }
  });
}

template <class S>
void forward_backward(float* losses, S* dlogits, const S* logits, const int32_t* targets, int N, int V,
                      float dloss, int ignore_index) {
  parallel_for(size_t(N), 1, [&](size_t lo, size_t hi) {
    std::vector<float> xbuf;
    for (size_t i = lo; i < hi; ++i) {
      S* d = dlogits + i * V;
      int target = targets[i];
      if (target == ignore_index) {
        losses[i] = 0.f;
        for (int j = 0; j < V; ++j) d[j] = from_float<S>(0.f);
        continue;
      }
      // For bf16 x is a float copy, so d (which may alias the logits) can be written freely.
      const float* x = as_float(logits + i * V, V, xbuf);
      float mx, log_sum;
      row_logsumexp(x, V, &mx, &log_sum);
      float target_logit = x[target];  // read before d (which may alias x) is written
      losses[i] = log_sum - (target_logit - mx);
      float shift = mx + log_sum;
      if constexpr (std::is_same_v<S, float>) {
#pragma omp simd
        for (int j = 0; j < V; ++j) d[j] = dloss * exp_fast(x[j] - shift);
        d[target] -= dloss;
      } else {
        float* df = xbuf.data();  // in place over the copy: element j is read before it is written
#pragma omp simd
        for (int j = 0; j < V; ++j) df[j] = dloss * exp_fast(df[j] - shift);
        df[target] -= dloss;  // rounded once, with its softmax term
        narrow(d, df, V);
      }
    }
  });
}
}  // namespace

void CpuBackend::crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V,
                                      int ignore_index) {
  forward(losses, logits, targets, N, V, ignore_index);
}
void CpuBackend::crossentropy_forward(float* losses, const bf16* logits, const int32_t* targets, int N, int V,
                                      int ignore_index) {
  forward(losses, logits, targets, N, V, ignore_index);
}
void CpuBackend::crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                               const int32_t* targets, int N, int V, float dloss,
                                               int ignore_index) {
  forward_backward(losses, dlogits, logits, targets, N, V, dloss, ignore_index);
}
void CpuBackend::crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                               const int32_t* targets, int N, int V, float dloss,
                                               int ignore_index) {
  forward_backward(losses, dlogits, logits, targets, N, V, dloss, ignore_index);
}

}  // namespace gptcuda
