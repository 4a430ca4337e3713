// NCCL collectives for data-parallel training on CUDA tensors (the
// Collectives of backend.h). libnccl is opened at run time with dlopen, so the
// backend still loads where NCCL is absent (one GPU needs none); only its
// header is needed to build, from the nvidia-nccl-cu13 wheel (NCCL_ROOT). The
// communicator is made as llm.c makes it: rank 0's ncclGetUniqueId, broadcast
// over MPI by the addon (native/addon/nccl.cc), then ncclCommInitRank on every
// rank. The emulated backend builds its own NCCL (emu/nccl.cc, over MPI) into
// the same library, where the lookup below finds it first.
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend_cuda.cuh"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define GPTCUDA_HAVE_NCCL_HEADER 1
#endif

namespace gptcuda {

#ifndef GPTCUDA_HAVE_NCCL_HEADER

Collectives* CudaBackend::collectives(std::string* why) {
  *why = "this CUDA backend was built without NCCL's header (set NCCL_ROOT to an unpacked nvidia-nccl-cu13 wheel and rebuild)";
  return nullptr;
}

#else

// The entry points, found with dlsym.
struct NcclApi {
  void* lib = nullptr;
  std::string where;
  ncclResult_t (*get_version)(int*) = nullptr;
  ncclResult_t (*get_unique_id)(ncclUniqueId*) = nullptr;
  ncclResult_t (*comm_init_rank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  ncclResult_t (*comm_destroy)(ncclComm_t) = nullptr;
  const char* (*get_error_string)(ncclResult_t) = nullptr;
  const char* (*get_last_error)(ncclComm_t) = nullptr;  // NCCL 2.13+; optional
  ncclResult_t (*all_reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*reduce_scatter)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*all_gather)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t) = nullptr;
};

namespace {

template <class F>
bool sym(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  return *out != nullptr;
}

bool bind(void* lib, NcclApi* api) {
  bool ok = sym(lib, "ncclGetVersion", &api->get_version) && sym(lib, "ncclGetUniqueId", &api->get_unique_id) &&
            sym(lib, "ncclCommInitRank", &api->comm_init_rank) && sym(lib, "ncclCommDestroy", &api->comm_destroy) &&
            sym(lib, "ncclGetErrorString", &api->get_error_string) && sym(lib, "ncclAllReduce", &api->all_reduce) &&
            sym(lib, "ncclReduceScatter", &api->reduce_scatter) && sym(lib, "ncclAllGather", &api->all_gather);
  if (ok) sym(lib, "ncclGetLastError", &api->get_last_error);
  return ok;
}

// The library this code is in: a build with NCCL inside (the emulated one).
std::string own_path() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&own_path), &info) == 0 || !info.dli_fname) return "";
  return info.dli_fname;
}

// Search order: NCCL built into this library, $GPTCUDA_LIBNCCL,
// $NCCL_ROOT/lib, the NCCL this backend was compiled against, the loader's path.
bool load(NcclApi* api, std::string* why) {
  std::string self = own_path();
  if (!self.empty()) {
    if (void* h = dlopen(self.c_str(), RTLD_NOW | RTLD_NOLOAD)) {
      if (dlsym(h, "ncclGetUniqueId") && bind(h, api)) {
        api->lib = h;
        api->where = "built into " + self;
        return true;
      }
      dlclose(h);
    }
  }
  std::vector<std::string> names;
  if (const char* e = std::getenv("GPTCUDA_LIBNCCL"); e && *e) names.push_back(e);
  if (const char* r = std::getenv("NCCL_ROOT"); r && *r) names.push_back(std::string(r) + "/lib/libnccl.so.2");
#ifdef GPTCUDA_NCCL_LIBDIR
  names.push_back(std::string(GPTCUDA_NCCL_LIBDIR) + "/libnccl.so.2");
#endif
  names.push_back("libnccl.so.2");
  std::string errors;
  for (const auto& n : names) {
    void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      errors += std::string(errors.empty() ? "" : "; ") + (e ? e : n);
      continue;
    }
    if (bind(h, api)) {
      api->lib = h;
      api->where = n;
      return true;
    }
    errors += std::string(errors.empty() ? "" : "; ") + n + " lacks NCCL 2 functions";
    dlclose(h);
  }
  *why = "libnccl.so.2 not found (" + errors +
         "); pip install nvidia-nccl-cu13 and set NCCL_ROOT to its nvidia/nccl folder, or set GPTCUDA_LIBNCCL to libnccl.so.2";
  return false;
}

const char* result_name(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "ncclSuccess";
    case ncclUnhandledCudaError: return "ncclUnhandledCudaError";
    case ncclSystemError: return "ncclSystemError";
    case ncclInternalError: return "ncclInternalError";
    case ncclInvalidArgument: return "ncclInvalidArgument";
    case ncclInvalidUsage: return "ncclInvalidUsage";
    case ncclRemoteError: return "ncclRemoteError";
    case ncclInProgress: return "ncclInProgress";
    default: return "ncclResult";
  }
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace

class NcclCollectives final : public Collectives {
 public:
  NcclCollectives(CudaBackend* backend, NcclApi api) : b_(backend), api_(api) {
    int v = 0;
    if (api_.get_version(&v) != ncclSuccess) v = 0;
    // Codes before 2.9 are X*1000 + Y*100 + Z, from 2.9 on X*10000 + Y*100 + Z.
    const int major = v >= 10000 ? v / 10000 : v / 1000;
    const int minor = v >= 10000 ? (v % 10000) / 100 : (v % 1000) / 100;
    version_ = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(v % 100);
  }
  ~NcclCollectives() override {
    if (comm_) {
      cudaStreamSynchronize(b_->stream_);
      api_.comm_destroy(comm_);
    }
    if (pad_) cudaFree(pad_);
  }

  std::string version() const override { return version_; }
  std::string library() const override { return api_.where; }
  bool joined() const override { return comm_ != nullptr; }

  void unique_id(unsigned char* id) override {
    ncclUniqueId u;
    check("uniqueId", api_.get_unique_id(&u));
    std::memcpy(id, u.internal, kIdBytes);
  }

  void init(const unsigned char* id, int rank, int size) override {
    if (comm_) throw std::runtime_error("nccl.init: this rank has already joined a communicator; destroy it first");
    ncclUniqueId u;
    std::memcpy(u.internal, id, kIdBytes);
    // Earlier work on this device first: NCCL's setup synchronises with it anyway.
    GPTCUDA_CHECK("nccl.init", cudaStreamSynchronize(b_->stream_));
    ncclComm_t c = nullptr;
    rank_ = rank;
    check("init", api_.comm_init_rank(&c, size, u, rank));
    comm_ = c;
    size_ = size;
  }

  void all_reduce(float* data, size_t n, Reduce op) override {
    require("allReduce");
    b_->begin_op("nccl.allReduce");
    check("allReduce", api_.all_reduce(data, data, n, ncclFloat32, op == Reduce::Avg ? ncclAvg : ncclSum, comm_, b_->stream_));
  }

  void reduce_scatter_sum(const float* full, float* shard, size_t n) override {
    require("reduceScatterSum");
    b_->begin_op("nccl.reduceScatterSum");
    const Part p = part(n);
    if (p.per * size_t(size_) == n) {
      check("reduceScatterSum", api_.reduce_scatter(full, shard, p.per, ncclFloat32, ncclSum, comm_, b_->stream_));
      return;
    }
    // NCCL's parts are equal: reduce a zero-padded copy in place, keep this rank's real elements.
    float* buf = padded(p.per * size_t(size_));
    GPTCUDA_CHECK("nccl.reduceScatterSum", cudaMemcpyAsync(buf, full, n * sizeof(float), cudaMemcpyDeviceToDevice, b_->stream_));
    GPTCUDA_CHECK("nccl.reduceScatterSum", cudaMemsetAsync(buf + n, 0, (p.per * size_t(size_) - n) * sizeof(float), b_->stream_));
    float* mine = buf + size_t(rank_) * p.per;
    check("reduceScatterSum", api_.reduce_scatter(buf, mine, p.per, ncclFloat32, ncclSum, comm_, b_->stream_));
    if (p.length > 0)
      GPTCUDA_CHECK("nccl.reduceScatterSum", cudaMemcpyAsync(shard, mine, p.length * sizeof(float), cudaMemcpyDeviceToDevice, b_->stream_));
  }

  void all_gather(float* full, size_t n) override {
    require("allgather");
    b_->begin_op("nccl.allgather");
    const Part p = part(n);
    if (p.per * size_t(size_) == n) {
      check("allgather", api_.all_gather(full + p.start, full, p.per, ncclFloat32, comm_, b_->stream_));
      return;
    }
    // Gathered in place in a padded buffer; the padding past n (whatever it holds) is dropped.
    float* buf = padded(p.per * size_t(size_));
    float* mine = buf + size_t(rank_) * p.per;
    if (p.length > 0)
      GPTCUDA_CHECK("nccl.allgather", cudaMemcpyAsync(mine, full + p.start, p.length * sizeof(float), cudaMemcpyDeviceToDevice, b_->stream_));
    check("allgather", api_.all_gather(mine, buf, p.per, ncclFloat32, comm_, b_->stream_));
    GPTCUDA_CHECK("nccl.allgather", cudaMemcpyAsync(full, buf, n * sizeof(float), cudaMemcpyDeviceToDevice, b_->stream_));
  }

  void destroy() override {
    if (!comm_) return;
    GPTCUDA_CHECK("nccl.destroy", cudaStreamSynchronize(b_->stream_));
    ncclComm_t c = comm_;
    comm_ = nullptr;
    check("destroy", api_.comm_destroy(c));
  }

 private:
  struct Part {
    size_t per, start, length;
  };
  Part part(size_t n) const {
    const size_t per = (n + size_t(size_) - 1) / size_t(size_);
    const size_t start = std::min(n, per * size_t(rank_));
    return {per, start, std::min(per, n - start)};
  }

  void require(const char* op) const {
    if (!comm_) throw std::runtime_error(std::string("nccl.") + op + ": NCCL is not initialised on this rank; call nccl.init() first");
  }

  // A device buffer of at least n floats for uneven partitions, kept between calls.
  float* padded(size_t n) {
    if (pad_n_ >= n) return pad_;
    if (pad_) {
      GPTCUDA_CHECK("nccl", cudaStreamSynchronize(b_->stream_));  // queued collectives may still use it
      GPTCUDA_CHECK("nccl", cudaFree(pad_));
      pad_ = nullptr;
      pad_n_ = 0;
    }
    void* p = nullptr;
    GPTCUDA_CHECK("nccl", cudaMalloc(&p, n * sizeof(float)));
    pad_ = static_cast<float*>(p);
    pad_n_ = n;
    return pad_;
  }

  void check(const char* op, ncclResult_t r) const {
    if (r == ncclSuccess) return;
    std::string msg = std::string("nccl.") + op + " failed on rank " + std::to_string(rank_) + ": " + result_name(r) + ": " +
                      one_line(api_.get_error_string(r));
    const char* last = api_.get_last_error ? api_.get_last_error(comm_) : nullptr;
    if (last && *last) msg += " (" + one_line(last) + ")";
    throw std::runtime_error(msg);
  }

  CudaBackend* b_;
  NcclApi api_;
  std::string version_;
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
  float* pad_ = nullptr;
  size_t pad_n_ = 0;
};

Collectives* CudaBackend::collectives(std::string* why) {
  if (!collectives_ && collectives_why_.empty()) {
    NcclApi api;
    if (load(&api, &collectives_why_)) collectives_ = std::make_unique<NcclCollectives>(this, api);
  }
  if (!collectives_) *why = collectives_why_;
  return collectives_.get();
}

#endif  // GPTCUDA_HAVE_NCCL_HEADER

}  // namespace gptcuda
