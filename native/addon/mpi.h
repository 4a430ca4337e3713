// MPI collectives for data-parallel training over CPU tensors. libmpi is
// opened at run time (dlopen), so the addon builds and loads where MPI is
// absent; `mpi.probe()` says why it is unusable.
#pragma once
#include <napi.h>

namespace gptcuda {
// Adds `mpi`: probe, init, allreduceSum, allreduceScalars, reduceScatterSum,
// allgather, broadcast, barrier, finalize, abort.
void register_mpi(Napi::Env env, Napi::Object exports);
}  // namespace gptcuda
