// MPI loaded at run time. OpenMPI's components (mca plugins) resolve libmpi's
// symbols from the global namespace, and a Node addon is dlopen'ed
// RTLD_LOCAL, so libmpi is opened RTLD_GLOBAL here before MPI_Init (which
// also lets the emulated NCCL find it). The predefined handles: mpi_abi.h.
#include "mpi.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "args.h"
#include "mpi_abi.h"
#include "tensor.h"

namespace gptcuda {
namespace {

using Handle = intptr_t;
using FnInt = int (*)(int*);
using FnInit = int (*)(int*, char***);
using FnVoid = int (*)();
using FnCommInt = int (*)(Handle, int*);
using FnAllreduce = int (*)(const void*, void*, int, Handle, Handle, Handle);
using FnBcast = int (*)(void*, int, Handle, int, Handle);
using FnBarrier = int (*)(Handle);
using FnAbort = int (*)(Handle, int);
using FnVersion = int (*)(char*, int*);
using FnErrString = int (*)(int, char*, int*);
using FnSetErr = int (*)(Handle, Handle);
using FnReduceScatter = int (*)(const void*, void*, const int*, Handle, Handle, Handle);
using FnAllgatherv = int (*)(const void*, int, Handle, void*, const int*, const int*, Handle, Handle);

struct Mpi {
  void* lib = nullptr;
  std::string impl, soname, reason;
  Handle comm = 0, f32 = 0, f64 = 0, byte = 0, sum = 0, max = 0, errors_return = 0;
  void* in_place = nullptr;
  FnInt initialized = nullptr, finalized = nullptr;
  FnInit init = nullptr;
  FnVoid finalize = nullptr;
  FnCommInt comm_rank = nullptr, comm_size = nullptr;
  FnAllreduce allreduce = nullptr;
  FnBcast bcast = nullptr;
  FnBarrier barrier = nullptr;
  FnAbort abort = nullptr;
  FnVersion version = nullptr;
  FnErrString error_string = nullptr;
  FnSetErr set_errhandler = nullptr;
  FnReduceScatter reduce_scatter = nullptr;
  FnAllgatherv allgatherv = nullptr;
  int rank = 0, size = 1;
  bool started = false;
};

Mpi& mpi() {
  static Mpi m;
  return m;
}

template <class F>
bool sym(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  return *out != nullptr;
}

// Opens libmpi once; false with m.reason when no usable MPI is installed.
bool load() {
  Mpi& m = mpi();
  if (m.lib) return true;
  if (!m.reason.empty()) return false;
  std::vector<std::string> names;
  if (const char* e = std::getenv("GPTCUDA_LIBMPI")) names.push_back(e);
  for (const char* n : {"libmpi.so.40", "libmpi.so.12", "libmpich.so.12", "libmpi.so"}) names.push_back(n);
  std::string errors;
  for (const auto& n : names) {
    m.lib = dlopen(n.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (m.lib) {
      m.soname = n;
      break;
    }
    errors += std::string(errors.empty() ? "" : "; ") + dlerror();
  }
  if (!m.lib) {
    m.reason = "libmpi not found (" + errors + "); install OpenMPI (apt-get install openmpi-bin libopenmpi-dev) or MPICH, or set GPTCUDA_LIBMPI to its path";
    return false;
  }
  void* l = m.lib;
  bool ok = sym(l, "MPI_Initialized", &m.initialized) && sym(l, "MPI_Finalized", &m.finalized) &&
            sym(l, "MPI_Init", &m.init) && sym(l, "MPI_Finalize", &m.finalize) &&
            sym(l, "MPI_Comm_rank", &m.comm_rank) && sym(l, "MPI_Comm_size", &m.comm_size) &&
            sym(l, "MPI_Allreduce", &m.allreduce) && sym(l, "MPI_Bcast", &m.bcast) &&
            sym(l, "MPI_Barrier", &m.barrier) && sym(l, "MPI_Abort", &m.abort) &&
            sym(l, "MPI_Get_library_version", &m.version) && sym(l, "MPI_Error_string", &m.error_string) &&
            sym(l, "MPI_Comm_set_errhandler", &m.set_errhandler) &&
            sym(l, "MPI_Reduce_scatter", &m.reduce_scatter) && sym(l, "MPI_Allgatherv", &m.allgatherv);
  if (!ok) {
    m.reason = m.soname + " lacks MPI-3 functions (" + dlerror() + "); install OpenMPI 4+ or MPICH 3+";
    dlclose(l);
    m.lib = nullptr;
    return false;
  }
  MpiAbi abi;
  if (!mpi_abi(l, &abi)) {
    m.reason = m.soname + ": OpenMPI's predefined handles are missing; set GPTCUDA_LIBMPI to a complete libmpi";
    m.lib = nullptr;
    return false;
  }
  m.impl = abi.impl;
  m.comm = abi.comm_world;
  m.f32 = abi.f32;
  m.f64 = abi.f64;
  m.byte = abi.byte;
  m.sum = abi.sum;
  m.max = abi.max;
  m.errors_return = abi.errors_return;
  m.in_place = abi.in_place;
  return true;
}

std::string library_version() {
  Mpi& m = mpi();
  std::vector<char> buf(8192);
  int len = 0;
  if (m.version(buf.data(), &len) != 0) return m.impl;
  std::string s(buf.data(), size_t(len));
  auto nl = s.find_first_of("\r\n,");
  return nl == std::string::npos ? s : s.substr(0, nl);
}

[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw Napi::Error::New(env, msg); }

void check(Napi::Env env, const char* op, int rc) {
  if (rc == 0) return;
  Mpi& m = mpi();
  std::vector<char> buf(1024);
  int len = 0;
  std::string what = m.error_string(rc, buf.data(), &len) == 0 ? std::string(buf.data(), size_t(len)) : "error " + std::to_string(rc);
  fail(env, std::string("mpi.") + op + " failed on rank " + std::to_string(m.rank) + ": " + what +
                " (another rank may have died; see its output)");
}

void require_started(Napi::Env env, const char* op) {
  if (!mpi().started) fail(env, std::string("mpi.") + op + ": MPI is not initialised; call mpi.init() first (under mpirun or srun)");
}

// A live float32 CPU tensor that no recording is using (its memory is read now).
NativeTensor* cpu_tensor(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !NativeTensor::IsTensor(env, info[i]))
    fail(env, std::string("mpi.") + op + ": " + name + " must be a tensor");
  NativeTensor* t = NativeTensor::Unwrap(info[i].As<Napi::Object>());
  if (t->disposed()) fail(env, std::string("mpi.") + op + ": " + name + " is disposed");
  if (t->dtype() != DType::F32) fail(env, std::string("mpi.") + op + ": " + name + " must be float32, got " + t->describe());
  if (t->device() != DeviceKind::CPU)
    fail(env, std::string("mpi.") + op + ": " + name + " must be on the cpu, got " + t->describe() + " (CUDA tensors go through NCCL)");
  if (t->storage()->pins > 0) fail(env, std::string("mpi.") + op + ": " + name + " is in use by a running recording; wait for it first");
  if (t->numel() > size_t(INT32_MAX)) fail(env, std::string("mpi.") + op + ": " + name + " has more than 2^31-1 elements");
  return t;
}

// The tensor argument of a collective: MPI started, then cpu_tensor's checks.
NativeTensor* collective_tensor(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  require_started(info.Env(), op);
  return cpu_tensor(info, i, op, name);
}

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  bool ok = load();
  o.Set("available", ok);
  if (ok) {
    o.Set("impl", mpi().impl);
    o.Set("library", mpi().soname);
  } else o.Set("reason", mpi().reason);
  return o;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mpi& m = mpi();
  if (!load()) fail(env, "mpi.init: " + m.reason);
  if (!m.started) {
    int done = 0;
    m.finalized(&done);
    if (done) fail(env, "mpi.init: MPI was already finalised in this process; it cannot start twice");
    int already = 0;
    m.initialized(&already);
    if (!already) {
      int argc = 0;
      char** argv = nullptr;
      if (m.init(&argc, &argv) != 0) fail(env, "mpi.init: MPI_Init failed; run under mpirun or srun");
    }
    // Errors come back as codes (then a one-line JS error), not an abort inside MPI.
    m.set_errhandler(m.comm, m.errors_return);
    check(env, "init", m.comm_rank(m.comm, &m.rank));
    check(env, "init", m.comm_size(m.comm, &m.size));
    m.started = true;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", m.rank);
  o.Set("size", m.size);
  o.Set("impl", m.impl);
  o.Set("version", library_version());
  return o;
}

// allreduceSum(t): t = sum over ranks of t, in place.
Napi::Value AllreduceSum(const Napi::CallbackInfo& info) {
  NativeTensor* t = collective_tensor(info, 0, "allreduceSum", "tensor");
  Mpi& m = mpi();
  check(info.Env(), "allreduceSum", m.allreduce(m.in_place, t->data(), int(t->numel()), m.f32, m.sum, m.comm));
  return info.Env().Undefined();
}

// allreduceScalars(values: Float64Array, op: 'sum' | 'max'), in place.
Napi::Value AllreduceScalars(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_started(env, "allreduceScalars");
  if (info.Length() != 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    fail(env, "mpi.allreduceScalars(values: Float64Array, op: 'sum' | 'max')");
  std::string op = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  if (op != "sum" && op != "max") fail(env, "mpi.allreduceScalars: op must be 'sum' or 'max', got " + info[1].ToString().Utf8Value());
  auto a = info[0].As<Napi::Float64Array>();
  Mpi& m = mpi();
  check(env, "allreduceScalars", m.allreduce(m.in_place, a.Data(), int(a.ElementLength()), m.f64, op == "sum" ? m.sum : m.max, m.comm));
  return env.Undefined();
}

// Rank r's part of n elements split in `size` near-equal contiguous parts.
void partition(size_t n, int size, std::vector<int>* counts, std::vector<int>* displs) {
  counts->assign(size_t(size), 0);
  displs->assign(size_t(size), 0);
  size_t per = (n + size_t(size) - 1) / size_t(size), off = 0;
  for (int r = 0; r < size; ++r) {
    size_t c = off >= n ? 0 : std::min(per, n - off);
    (*counts)[size_t(r)] = int(c);
    (*displs)[size_t(r)] = int(off);
    off += c;
  }
}

// reduceScatterSum(full, shard): shard = this rank's part of the sum over ranks of full.
Napi::Value ReduceScatterSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeTensor* full = collective_tensor(info, 0, "reduceScatterSum", "full");
  NativeTensor* shard = cpu_tensor(info, 1, "reduceScatterSum", "shard");
  Mpi& m = mpi();
  std::vector<int> counts, displs;
  partition(full->numel(), m.size, &counts, &displs);
  if (shard->numel() < size_t(counts[size_t(m.rank)]))
    fail(env, "mpi.reduceScatterSum: shard has " + std::to_string(shard->numel()) + " elements; rank " +
                  std::to_string(m.rank) + " needs " + std::to_string(counts[size_t(m.rank)]));
  check(env, "reduceScatterSum", m.reduce_scatter(full->data(), shard->data(), counts.data(), m.f32, m.sum, m.comm));
  return env.Undefined();
}

// allgather(full): every rank's part (as reduceScatterSum splits it) sent to all, in place.
Napi::Value Allgather(const Napi::CallbackInfo& info) {
  NativeTensor* full = collective_tensor(info, 0, "allgather", "full");
  Mpi& m = mpi();
  std::vector<int> counts, displs;
  partition(full->numel(), m.size, &counts, &displs);
  check(info.Env(), "allgather", m.allgatherv(m.in_place, 0, m.f32, full->data(), counts.data(), displs.data(), m.f32, m.comm));
  return info.Env().Undefined();
}

// broadcast(t, root): every rank's t = root's t.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NativeTensor* t = collective_tensor(info, 0, "broadcast", "tensor");
  Mpi& m = mpi();
  double root = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(root >= 0 && root < m.size) || root != double(int(root)))
    fail(env, "mpi.broadcast: root must be a rank in [0, " + std::to_string(m.size - 1) + "], got " +
                  (info.Length() > 1 ? info[1].ToString().Utf8Value() : std::string("nothing")));
  check(env, "broadcast", m.bcast(t->data(), int(t->numel()), m.f32, int(root), m.comm));
  return env.Undefined();
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_started(env, "barrier");
  check(env, "barrier", mpi().barrier(mpi().comm));
  return env.Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mpi& m = mpi();
  if (m.started) {
    m.started = false;
    check(env, "finalize", m.finalize());
  }
  return env.Undefined();
}

// abort(code): ends every rank of the job (a rank that failed must not leave the others waiting).
Napi::Value Abort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Mpi& m = mpi();
  int code = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  if (m.started) m.abort(m.comm, code);
  return env.Undefined();
}

}  // namespace

bool mpi_world(int* rank, int* size) {
  if (!mpi().started) return false;
  *rank = mpi().rank;
  *size = mpi().size;
  return true;
}

void mpi_broadcast_bytes(Napi::Env env, const char* op, void* data, size_t bytes, int root) {
  require_started(env, op);
  if (bytes > size_t(INT32_MAX)) fail(env, std::string("mpi.") + op + ": more than 2^31-1 bytes");
  check(env, op, mpi().bcast(data, int(bytes), mpi().byte, root, mpi().comm));
}

void register_mpi(Napi::Env env, Napi::Object exports) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("probe", Napi::Function::New(env, Probe, "probe"));
  o.Set("init", Napi::Function::New(env, Init, "init"));
  o.Set("allreduceSum", Napi::Function::New(env, AllreduceSum, "allreduceSum"));
  o.Set("allreduceScalars", Napi::Function::New(env, AllreduceScalars, "allreduceScalars"));
  o.Set("reduceScatterSum", Napi::Function::New(env, ReduceScatterSum, "reduceScatterSum"));
  o.Set("allgather", Napi::Function::New(env, Allgather, "allgather"));
  o.Set("broadcast", Napi::Function::New(env, Broadcast, "broadcast"));
  o.Set("barrier", Napi::Function::New(env, Barrier, "barrier"));
  o.Set("finalize", Napi::Function::New(env, Finalize, "finalize"));
  o.Set("abort", Napi::Function::New(env, Abort, "abort"));
  exports.Set("mpi", o);
}

}  // namespace gptcuda
