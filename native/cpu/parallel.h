// A small persistent thread pool for the CPU backend. Workers sleep on a
// condition variable between ops (no spinning), so they leave the cores to
// OpenBLAS's own threads during GEMMs and to Node's event loop otherwise.
#pragma once
#include <cstddef>
#include <functional>

namespace gptcuda {

// Number of threads ops run on: GPTCUDA_NUM_THREADS, else the hardware's.
int cpu_num_threads();

// Calls fn(begin, end) over [0, n) split into contiguous chunks, one chunk per
// thread (the caller runs one of them). Chunks are at least min_chunk long, so
// small ops stay on the calling thread. fn must not throw.
void parallel_for(size_t n, size_t min_chunk,
                  const std::function<void(size_t, size_t)>& fn);

}  // namespace gptcuda
