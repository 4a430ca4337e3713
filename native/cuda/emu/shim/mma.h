// WMMA for the emulated backend: provided by the SIMT emulator (simt.h: the
// fragments, TF32, mma_sync and its arithmetic), plus the bf16 operands here:
// m16n16k16 with a float accumulator, loaded from __nv_bfloat16 memory. A bf16
// fragment holds its elements widened to float, which is exact, so mma_sync's
// exact products and float accumulation are the GPU's bf16 semantics.
#pragma once
#include "simt.h"
#include <cuda_bf16.h>

namespace nvcuda {
namespace wmma {
template <class Use, int M, int N, int K, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, __nv_bfloat16, L>& f, const __nv_bfloat16* p,
                             unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "bf16 accumulators are not emulated (the kernels accumulate in float)");
  check_ptr(p, ldm);
  using F = fragment<Use, M, N, K, __nv_bfloat16, L>;
  for (int r = 0; r < F::R; ++r)
    for (int c = 0; c < F::Cc; ++c)
      f.x[r * F::Cc + c] = __bfloat162float(std::is_same_v<L, col_major> ? p[c * ldm + r] : p[r * ldm + c]);
}
}  // namespace wmma
}  // namespace nvcuda
