// Which backends this addon has: the CPU always; CUDA when the addon was built
// with it AND gptcuda_cuda.so loads AND a device is usable. The reason CUDA is
// unavailable is kept for `gptcuda info` and `device: 'auto'`.
#pragma once
#include <string>

#include "backend.h"

namespace gptcuda {

struct CudaStatus {
  bool built = false;
  bool available = false;
  std::string reason;  // why unavailable, empty when available
};

CudaStatus cuda_status();   // loads the CUDA backend on first call
Backend* cuda_backend();    // nullptr when unavailable
Backend* backend_for(DeviceKind kind, const char* op);  // throws when unavailable

}  // namespace gptcuda
