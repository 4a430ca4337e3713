// Skinny matmul for decoding: out[M,N] = inp[M,K] weight[N,K]^T (+ bias) for
// M <= kGemvMaxRows. A GEMM packs panels of the weight before using them,
// which for one to a few rows costs more than the arithmetic; here every
// weight row is read once, straight from memory, and dotted with all M inputs.
#pragma once
#include "bf16.h"

namespace gptcuda {

constexpr int kGemvMaxRows = 8;

// Each output element is summed in the same order whatever M is, so a row
// decoded in a batch gives bit-identical results to the same row alone (batched
// generation then matches solo generation exactly). Runs over N on the thread pool.
void gemv_rows(float* out, const float* inp, const float* weight, const float* bias, int M, int K, int N);
// The same with bf16 weights, widened in registers (half the bytes read): the
// sums are those of the float version on the widened weights, bit for bit.
void gemv_rows(float* out, const float* inp, const bf16* weight, const float* bias, int M, int K, int N);

}  // namespace gptcuda
