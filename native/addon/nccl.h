// NCCL collectives on float32 CUDA tensors, through the CUDA backend (which
// opens libnccl at run time); `nccl.probe()` says why they are unusable.
#pragma once
#include <napi.h>

namespace gptcuda {
// Adds `nccl`: probe, init, allReduce, reduceScatterSum, allgather, destroy.
void register_nccl(Napi::Env env, Napi::Object exports);
}  // namespace gptcuda
