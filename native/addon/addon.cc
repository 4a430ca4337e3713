// Module entry: tensor creation, backend/device queries, and the op table.
#include <napi.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "backends.h"
#include "js_errors.h"
#include "mpi.h"
#include "nccl.h"
#include "ops.h"
#include "recording.h"
#include "tensor.h"
#include "text.h"

namespace gptcuda {
int cpu_num_threads();
void register_membench(Napi::Env env, Napi::Object exports);
}

namespace gptcuda {
namespace {

DeviceKind parse_device(Napi::Env env, const Napi::Value& v, const char* op) {
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "cpu") return DeviceKind::CPU;
  if (s == "cuda") return DeviceKind::CUDA;
  throw Napi::TypeError::New(env, std::string(op) + ": device must be 'cpu' or 'cuda'");
}

DType parse_dtype(Napi::Env env, const Napi::Value& v, const char* op) {
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "float32") return DType::F32;
  if (s == "int32") return DType::I32;
  if (s == "bfloat16") return DType::BF16;
  throw Napi::TypeError::New(env, std::string(op) + ": dtype must be 'float32', 'int32' or 'bfloat16'");
}

// createTensor(shape, dtype, device): zero-filled.
Napi::Value CreateTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsArray())
    throw Napi::TypeError::New(env, "createTensor(shape: number[], dtype, device)");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    // Range first: casting a double beyond int64 to an integer is undefined.
    if (!(d >= 0 && d <= double(kMaxElements)) || d != std::floor(d))
      throw Napi::RangeError::New(env, "createTensor: shape entries must be non-negative integers, got " +
                                           v.ToString().Utf8Value());
    shape.push_back(static_cast<int64_t>(d));
  }
  DType dtype = parse_dtype(env, info[1], "createTensor");
  DeviceKind device = parse_device(env, info[2], "createTensor");
  // Sizes in 64-bit integers, overflow-checked: a wrapped product would
  // allocate a small buffer that ops then index as if it were huge.
  uint64_t n = 0, bytes = 0;
  if (!checked_numel(shape, &n) || __builtin_mul_overflow(n, uint64_t(dtype_size(dtype)), &bytes) ||
      bytes > uint64_t(1e13))
    throw Napi::RangeError::New(env, "createTensor: shape " + shape_string(shape) +
                                         " is too large (at most 10^13 bytes); use a smaller shape");
  Backend* backend = js_errors(env, "", [&] { return backend_for(device, "createTensor"); });
  auto storage = std::make_shared<Storage>();
  storage->backend = backend;
  storage->bytes = static_cast<size_t>(bytes);
  js_errors(env, "createTensor: ", [&] {
    storage->data = storage->bytes ? backend->alloc(storage->bytes) : nullptr;
    if (storage->bytes) backend->fill(static_cast<float*>(storage->data), storage->bytes / 4, 0.0f);
  });
  if (storage->bytes % 4 != 0) {
    // bf16 tensors with an odd element count: zero the last half-word too.
    std::vector<char> zero(storage->bytes % 4, 0);
    js_errors(env, "createTensor: ", [&] {
      backend->upload(static_cast<char*>(storage->data) + storage->bytes - zero.size(), zero.data(),
                      zero.size());
    });
  }
  return NativeTensor::New(env, std::move(storage), 0, std::move(shape), dtype, true);
}

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("threads", cpu_num_threads());
  cpu.Set("gemm", GPTCUDA_BLAS_NAME);
  o.Set("cpu", cpu);
  CudaStatus s = cuda_status();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("built", s.built);
  cuda.Set("buildInfo", GPTCUDA_CUDA_STATUS);
  cuda.Set("available", s.available);
  if (!s.available) cuda.Set("reason", s.reason);
  o.Set("cuda", cuda);
  return o;
}

Napi::Value DeviceInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DeviceKind d = parse_device(env, info[0], "deviceInfo");
  return js_errors(env, "", [&] {
    Backend* b = backend_for(d, "deviceInfo");
    DeviceInfo di = b->device_info();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", di.name);
    o.Set("totalMemory", double(di.total_memory));
    o.Set("freeMemory", double(di.free_memory));
    o.Set("computeCapability", std::to_string(di.compute_major) + "." + std::to_string(di.compute_minor));
    o.Set("memoryInUse", double(b->memory_in_use()));
    o.Set("peakMemory", double(b->peak_memory()));
    return o;
  });
}

Napi::Value ResetPeakMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  js_errors(env, "", [&] {
    backend_for(parse_device(env, info[0], "resetPeakMemory"), "resetPeakMemory")->reset_peak_memory();
  });
  return env.Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  js_errors(env, "", [&] {
    backend_for(parse_device(env, info[0], "synchronize"), "synchronize")->synchronize();
  });
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeTensor", NativeTensor::Init(env));
  exports.Set("createTensor", Napi::Function::New(env, CreateTensor, "createTensor"));
  exports.Set("backends", Napi::Function::New(env, Backends, "backends"));
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfoJs, "deviceInfo"));
  exports.Set("resetPeakMemory", Napi::Function::New(env, ResetPeakMemory, "resetPeakMemory"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
  register_ops(env, exports);
  register_recording(env, exports);
  register_text(env, exports);
  register_membench(env, exports);
  register_mpi(env, exports);
  register_nccl(env, exports);
  return exports;
}

}  // namespace
}  // namespace gptcuda

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return gptcuda::Init(env, exports); }
NODE_API_MODULE(gptcuda_addon, InitAddon)
