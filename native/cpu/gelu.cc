#include <cmath>

#include "kernels.h"
#include "parallel.h"

namespace gptcuda::cpu {

// GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)

void gelu_forward(float* out, const float* inp, size_t n) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      float x = inp[i];
      float u = kGeluScale * (x + 0.044715f * x * x * x);
      out[i] = 0.5f * x * (1.0f + std::tanh(u));
    }
  });
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  parallel_for(n, 1 << 14, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      float x = inp[i];
      float u = kGeluScale * (x + 0.044715f * x * x * x);
      float th = std::tanh(u);
      float sech2 = 1.0f - th * th;
      float grad = 0.5f * (1.0f + th) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * 0.044715f * x * x);
      dinp[i] += grad * dout[i];
    }
  });
}

}  // namespace gptcuda::cpu
