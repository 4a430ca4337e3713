#include "backends.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

namespace gptcuda {
namespace {

struct CudaLoad {
  CudaStatus status;
  Backend* backend = nullptr;
};

// The directory this addon was loaded from: gptcuda_cuda.so sits beside it.
std::string addon_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&addon_dir), &info) == 0 || !info.dli_fname) return ".";
  std::string path = info.dli_fname;
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

CudaLoad load_cuda() {
  CudaLoad load;
#ifdef GPTCUDA_BUILT_WITH_CUDA
  load.status.built = true;
#endif
  // GPTCUDA_CUDA_LIBRARY picks another build of the backend, such as the
  // CPU-emulated one (native/cuda/emu/backend.sh) that tests the CUDA code
  // without a GPU; it works with any build of the addon.
  const char* override_path = std::getenv("GPTCUDA_CUDA_LIBRARY");
  const bool overridden = override_path && *override_path;
  if (!load.status.built && !overridden) {
    load.status.reason = std::string("this addon was built without CUDA: ") + GPTCUDA_CUDA_STATUS;
    return load;
  }
  if (const char* env = std::getenv("GPTCUDA_DISABLE_CUDA"); env && std::string(env) == "1") {
    load.status.reason = "disabled by GPTCUDA_DISABLE_CUDA=1";
    return load;
  }
  std::string path = overridden ? override_path : addon_dir() + "/gptcuda_cuda.so";
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* err = dlerror();
    load.status.reason = std::string("could not load the CUDA backend (") + (err ? err : path) + ")";
    return load;
  }
  auto create = reinterpret_cast<gptcuda_cuda_create_fn>(dlsym(lib, "gptcuda_cuda_create"));
  if (!create) {
    load.status.reason = path + " has no gptcuda_cuda_create symbol (rebuild with npm run build)";
    return load;
  }
  char error[512] = {0};
  load.backend = create(error, sizeof(error));
  if (!load.backend) {
    load.status.reason = error[0] ? error : "no usable CUDA device";
    return load;
  }
  load.status.available = true;
  return load;
}

CudaLoad& cuda_load() {
  static CudaLoad load = load_cuda();
  return load;
}

}  // namespace

CudaStatus cuda_status() { return cuda_load().status; }
Backend* cuda_backend() { return cuda_load().backend; }

Backend* backend_for(DeviceKind kind, const char* op) {
  if (kind == DeviceKind::CPU) return cpu_backend();
  Backend* b = cuda_backend();
  if (!b) {
    throw std::runtime_error(std::string(op) + ": the CUDA device is not available: " +
                             cuda_status().reason + ". Use device 'cpu' or 'auto'.");
  }
  return b;
}

}  // namespace gptcuda
