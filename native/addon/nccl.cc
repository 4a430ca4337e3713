// NCCL collectives on CUDA tensors for data-parallel training: the JS face of
// the CUDA backend's Collectives (native/cuda/collectives.cu, which opens
// libnccl at run time). The communicator's unique id goes from rank 0 to the
// others over MPI (mpi.cc), so mpi.init() comes first.
#include "nccl.h"

#include <string>

#include "backends.h"
#include "mpi.h"
#include "tensor.h"

namespace gptcuda {
namespace {

[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw Napi::Error::New(env, msg); }

// The CUDA backend's NCCL, or null with the reason.
Collectives* find(std::string* why) {
  Backend* b = cuda_backend();
  if (!b) {
    *why = "the CUDA backend is not available: " + cuda_status().reason;
    return nullptr;
  }
  return b->collectives(why);
}

Collectives* require(Napi::Env env, const char* op) {
  std::string why;
  Collectives* c = find(&why);
  if (!c) fail(env, std::string("nccl.") + op + ": " + why);
  return c;
}

Collectives* require_joined(Napi::Env env, const char* op) {
  Collectives* c = require(env, op);
  if (!c->joined()) fail(env, std::string("nccl.") + op + ": NCCL is not initialised on this rank; call nccl.init() first");
  return c;
}

// A live float32 CUDA tensor that no recording is using.
NativeTensor* cuda_tensor(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !NativeTensor::IsTensor(env, info[i])) fail(env, std::string("nccl.") + op + ": " + name + " must be a tensor");
  NativeTensor* t = NativeTensor::Unwrap(info[i].As<Napi::Object>());
  if (t->disposed()) fail(env, std::string("nccl.") + op + ": " + name + " is disposed");
  if (t->dtype() != DType::F32) fail(env, std::string("nccl.") + op + ": " + name + " must be float32, got " + t->describe());
  if (t->device() != DeviceKind::CUDA)
    fail(env, std::string("nccl.") + op + ": " + name + " must be on cuda, got " + t->describe() + " (CPU tensors go through MPI)");
  if (t->storage()->pins > 0) fail(env, std::string("nccl.") + op + ": " + name + " is in use by a running recording; wait for it first");
  return t;
}

// Runs a backend call, its std::runtime_error becoming a JS error.
template <class F>
void run(Napi::Env env, F f) {
  try {
    f();
  } catch (const std::exception& e) {
    fail(env, e.what());
  }
}

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::string why;
  Collectives* c = find(&why);
  o.Set("available", c != nullptr);
  if (c) {
    o.Set("version", c->version());
    o.Set("library", c->library());
  } else o.Set("reason", why);
  return o;
}

// init(): joins the communicator of the MPI world (every rank calls it).
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int rank = 0, size = 0;
  if (!mpi_world(&rank, &size)) fail(env, "nccl.init: MPI is not initialised; call mpi.init() first (NCCL's id is broadcast over MPI)");
  Collectives* c = require(env, "init");
  if (c->joined()) fail(env, "nccl.init: this rank has already joined; call nccl.destroy() first");
  unsigned char id[Collectives::kIdBytes] = {0};
  if (rank == 0) run(env, [&] { c->unique_id(id); });
  mpi_broadcast_bytes(env, "broadcast (nccl.init)", id, sizeof id, 0);
  run(env, [&] { c->init(id, rank, size); });
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", rank);
  o.Set("size", size);
  o.Set("version", c->version());
  return o;
}

// allReduce(t, op: 'sum' | 'avg'): in place over ranks.
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Collectives* c = require_joined(env, "allReduce");
  NativeTensor* t = cuda_tensor(info, 0, "allReduce", "tensor");
  std::string op = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  if (op != "sum" && op != "avg")
    fail(env, "nccl.allReduce: op must be 'sum' or 'avg', got " + (info.Length() > 1 ? info[1].ToString().Utf8Value() : std::string("nothing")));
  run(env, [&] { c->all_reduce(static_cast<float*>(t->data()), t->numel(), op == "avg" ? Collectives::Reduce::Avg : Collectives::Reduce::Sum); });
  return env.Undefined();
}

// reduceScatterSum(full, shard): shard = this rank's part of the sum over ranks of full.
Napi::Value ReduceScatterSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Collectives* c = require_joined(env, "reduceScatterSum");
  NativeTensor* full = cuda_tensor(info, 0, "reduceScatterSum", "full");
  NativeTensor* shard = cuda_tensor(info, 1, "reduceScatterSum", "shard");
  int rank = 0, size = 1;
  mpi_world(&rank, &size);
  const size_t n = full->numel(), per = (n + size_t(size) - 1) / size_t(size);
  const size_t start = std::min(n, per * size_t(rank)), need = std::min(per, n - start);
  if (shard->numel() < need)
    fail(env, "nccl.reduceScatterSum: shard has " + std::to_string(shard->numel()) + " elements; rank " + std::to_string(rank) + " needs " +
                  std::to_string(need));
  if (shard->storage() == full->storage()) fail(env, "nccl.reduceScatterSum: shard must not share memory with full");
  run(env, [&] { c->reduce_scatter_sum(static_cast<const float*>(full->data()), static_cast<float*>(shard->data()), n); });
  return env.Undefined();
}

// allgather(full): in place, every rank's part (as reduceScatterSum splits it) sent to all.
Napi::Value Allgather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Collectives* c = require_joined(env, "allgather");
  NativeTensor* full = cuda_tensor(info, 0, "allgather", "full");
  run(env, [&] { c->all_gather(static_cast<float*>(full->data()), full->numel()); });
  return env.Undefined();
}

Napi::Value Destroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string why;
  if (Collectives* c = find(&why)) run(env, [&] { c->destroy(); });
  return env.Undefined();
}

}  // namespace

void register_nccl(Napi::Env env, Napi::Object exports) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("probe", Napi::Function::New(env, Probe, "probe"));
  o.Set("init", Napi::Function::New(env, Init, "init"));
  o.Set("allReduce", Napi::Function::New(env, AllReduce, "allReduce"));
  o.Set("reduceScatterSum", Napi::Function::New(env, ReduceScatterSum, "reduceScatterSum"));
  o.Set("allgather", Napi::Function::New(env, Allgather, "allgather"));
  o.Set("destroy", Napi::Function::New(env, Destroy, "destroy"));
  exports.Set("nccl", o);
}

}  // namespace gptcuda
