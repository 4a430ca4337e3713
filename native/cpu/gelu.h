// GELU's derivative for the ops that fuse it with a neighbour (matmul.cc's
// gelu_matmul_backward).
#pragma once
#include <cstddef>

#include "bf16.h"

namespace gptcuda {

// d[i] = gelu'(inp[i]) * d[i] (tanh approximation), in place: the same bits
// as gelu_backward accumulating into zeros from a dout of d.
void gelu_grad_scale(float* d, const float* inp, size_t n);
void gelu_grad_scale(bf16* d, const bf16* inp, size_t n);

}  // namespace gptcuda
