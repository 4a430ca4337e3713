// MPI collectives for data-parallel training over CPU tensors. libmpi is
// opened at run time (dlopen), so the addon builds and loads where MPI is
// absent; `mpi.probe()` says why it is unusable.
#pragma once
#include <napi.h>

namespace gptcuda {
// Adds `mpi`: probe, init, allreduceSum, allreduceScalars, reduceScatterSum,
// allgather, broadcast, barrier, finalize, abort.
void register_mpi(Napi::Env env, Napi::Object exports);

// For NCCL's bootstrap (nccl.cc): this rank and the world size once mpi.init
// has run (false before), and a broadcast of raw bytes from root.
bool mpi_world(int* rank, int* size);
void mpi_broadcast_bytes(Napi::Env env, const char* op, void* data, size_t bytes, int root);
}  // namespace gptcuda
