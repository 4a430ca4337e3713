// The kernel tests' view of the SIMT emulator (simt.h): the kernel sections of
// the .cu files are extracted (run.sh) and compiled against this header.
#pragma once
#include "simt.h"

template <class K, class... A>
void emu_launch(dim3 grid, dim3 block, size_t smem, K kernel, A... args) {
  emu::run_grid("kernel", grid, block, smem, [&] { kernel(args...); });
}
using emu::g_dyn_smem;

// The real helpers (warp/block reductions, device error records), compiled
// against the fake toolkit headers in shim/.
#include "cuda_common.cuh"
