// NCCL for the emulated backend (shim/nccl.h), over MPI: the emulated device
// memory is host memory, so a collective waits for the queued work (its input)
// and then runs as MPI calls on a communicator of its own (a dup of
// MPI_COMM_WORLD), ordered like the real NCCL's collectives on a stream and
// independent of the host's MPI calls. libmpi is found in the global scope,
// where the addon opened it (native/addon/mpi.cc) before ncclCommInitRank.
//
// Arguments are checked as NCCL checks them (null and non-device buffers,
// counts, types, operations, communicators), with the messages NCCL would
// print under NCCL_DEBUG=WARN available from ncclGetLastError. Beyond NCCL,
// ranks compare their arguments first (in ncclCommInitRank the unique id,
// nranks and rank; in a collective the count, type and operation) and all fail
// together on a mismatch, where NCCL would hang or read out of bounds.
//
// One communicator spans MPI_COMM_WORLD: nranks must be the MPI world size,
// rank the MPI rank. Types: float32, float64, int32.
#include <nccl.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "mpi_abi.h"

namespace {

using Handle = intptr_t;

struct Mpi {
  bool ok = false;
  gptcuda::MpiAbi abi;
  int (*initialized)(int*) = nullptr;
  int (*finalized)(int*) = nullptr;
  int (*comm_rank)(Handle, int*) = nullptr;
  int (*comm_size)(Handle, int*) = nullptr;
  int (*comm_dup)(Handle, Handle*) = nullptr;
  int (*comm_free)(Handle*) = nullptr;
  int (*allreduce)(const void*, void*, int, Handle, Handle, Handle) = nullptr;
  int (*allgather)(const void*, int, Handle, void*, int, Handle, Handle) = nullptr;
  int (*reduce_scatter_block)(const void*, void*, int, Handle, Handle, Handle) = nullptr;
};

template <class F>
bool sym(const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
  return *out != nullptr;
}

Mpi& mpi() {
  static Mpi m = [] {
    Mpi m;
    m.ok = sym("MPI_Initialized", &m.initialized) && sym("MPI_Finalized", &m.finalized) &&
           sym("MPI_Comm_rank", &m.comm_rank) && sym("MPI_Comm_size", &m.comm_size) &&
           sym("MPI_Comm_dup", &m.comm_dup) && sym("MPI_Comm_free", &m.comm_free) &&
           sym("MPI_Allreduce", &m.allreduce) && sym("MPI_Allgather", &m.allgather) &&
           sym("MPI_Reduce_scatter_block", &m.reduce_scatter_block) && gptcuda::mpi_abi(RTLD_DEFAULT, &m.abi);
    return m;
  }();
  return m;
}

thread_local std::string last_error;

ncclResult_t fail(ncclResult_t r, const std::string& msg) {
  last_error = msg;
  return r;
}

const char kMagic[16] = {'g', 'p', 't', 'c', 'u', 'd', 'a', '-', 'e', 'm', 'u', '-', 'n', 'c', 'c', 'l'};

}  // namespace

struct ncclComm {
  int rank = 0, nranks = 1;
  Handle comm = 0;
};

namespace {

std::set<ncclComm*>& live() {
  static std::set<ncclComm*> s;
  return s;
}

const int kNoReduction = -1;  // AllGather's operation

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclFloat32: case ncclInt32: return 4;
    case ncclFloat64: return 8;
    default: return 0;
  }
}

Handle mpi_type(ncclDataType_t t) {
  const auto& a = mpi().abi;
  return t == ncclFloat32 ? a.f32 : t == ncclFloat64 ? a.f64 : a.i32;
}

Handle mpi_op(ncclRedOp_t op) {
  const auto& a = mpi().abi;
  switch (op) {
    case ncclProd: return a.prod;
    case ncclMax: return a.max;
    case ncclMin: return a.min;
    default: return a.sum;  // ncclSum, and ncclAvg (then divided)
  }
}

void divide(void* data, size_t count, ncclDataType_t t, int n) {
  if (t == ncclFloat32) for (size_t i = 0; i < count; ++i) static_cast<float*>(data)[i] /= float(n);
  if (t == ncclFloat64) for (size_t i = 0; i < count; ++i) static_cast<double*>(data)[i] /= double(n);
  if (t == ncclInt32) for (size_t i = 0; i < count; ++i) static_cast<int32_t*>(data)[i] /= n;
}

// This rank's refusal, or "" when its arguments are fine (NCCL's own checks).
std::string check_collective(const char* op, const void* send, size_t send_count, const void* recv, size_t recv_count,
                             ncclDataType_t type, int red, ncclComm_t comm, ncclResult_t* code) {
  *code = ncclInvalidArgument;
  if (!comm) return std::string(op) + " : comm argument is NULL";
  if (!live().count(comm)) return std::string(op) + " : comm is not a live communicator (never initialised, or destroyed)";
  if (int(type) < 0 || int(type) >= int(ncclNumTypes)) return std::string(op) + " : invalid type " + std::to_string(int(type));
  if (red != kNoReduction && (red < 0 || red >= int(ncclNumOps))) return std::string(op) + " : invalid reduction operation " + std::to_string(red);
  if (type_size(type) == 0) {
    *code = ncclInternalError;
    return std::string(op) + " : the emulated NCCL implements float32, float64 and int32 only (type " + std::to_string(int(type)) + ")";
  }
  if (send_count == 0 && recv_count == 0) return "";
  if (!send) return std::string(op) + " : sendbuff argument is NULL";
  if (!recv) return std::string(op) + " : recvbuff argument is NULL";
  const size_t ts = type_size(type);
  if (!emu::is_device_range(send, send_count * ts))
    return std::string(op) + " : sendbuff is not device memory of " + std::to_string(send_count) + " elements";
  if (!emu::is_device_range(recv, recv_count * ts))
    return std::string(op) + " : recvbuff is not device memory of " + std::to_string(recv_count) + " elements";
  if (send_count * size_t(comm->nranks) > size_t(INT32_MAX) || recv_count * size_t(comm->nranks) > size_t(INT32_MAX)) {
    *code = ncclInternalError;
    return std::string(op) + " : the emulated NCCL moves at most 2^31-1 elements";
  }
  return "";
}

// Every rank's verdict and arguments, compared: all ranks go on, or all fail.
ncclResult_t agree(ncclComm_t comm, const char* op, const std::string& mine, ncclResult_t code, int64_t count, int type, int red) {
  struct Vote {
    int64_t count, type, red, ok;
  } v{count, type, red, mine.empty() ? 1 : 0};
  if (!mine.empty() && (!comm || !live().count(comm))) return fail(code, mine);  // no communicator to vote on
  std::vector<Vote> all(static_cast<size_t>(comm->nranks));
  if (mpi().allgather(&v, int(sizeof v), mpi().abi.byte, all.data(), int(sizeof v), mpi().abi.byte, comm->comm) != 0)
    return fail(ncclSystemError, std::string(op) + " : MPI_Allgather failed");
  if (!mine.empty()) return fail(code, mine);
  for (int r = 0; r < comm->nranks; ++r) {
    const Vote& o = all[size_t(r)];
    if (!o.ok) return fail(ncclInvalidUsage, std::string(op) + " : rank " + std::to_string(r) + " refused its arguments");
    if (o.count != v.count || o.type != v.type || o.red != v.red)
      return fail(ncclInvalidUsage, std::string(op) + " : rank " + std::to_string(r) + " called with count " + std::to_string(o.count) +
                                        ", type " + std::to_string(o.type) + ", op " + std::to_string(o.red) + " but rank " +
                                        std::to_string(comm->rank) + " with count " + std::to_string(v.count) + ", type " +
                                        std::to_string(v.type) + ", op " + std::to_string(v.red));
  }
  return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return fail(ncclInvalidArgument, "ncclGetVersion : version argument is NULL");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    case ncclTimeout: return "NCCL operation timed out";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return last_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId : uniqueId argument is NULL");
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, kMagic, sizeof kMagic);
  std::random_device rd;
  const uint64_t nonce = (uint64_t(rd()) << 32) ^ rd() ^ uint64_t(getpid());
  std::memcpy(id->internal + sizeof kMagic, &nonce, sizeof nonce);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  Mpi& m = mpi();
  int up = 0, down = 0;
  if (!m.ok || m.initialized(&up) != 0 || !up || m.finalized(&down) != 0 || down)
    return fail(ncclSystemError, "ncclCommInitRank : the emulated NCCL runs over MPI, which is not initialised in this process");
  int world_rank = 0, world_size = 0;
  m.comm_rank(m.abi.comm_world, &world_rank);
  m.comm_size(m.abi.comm_world, &world_size);
  std::string mine;
  ncclResult_t code = ncclInvalidArgument;
  if (!out) mine = "ncclCommInitRank : comm argument is NULL";
  else if (nranks < 1) mine = "ncclCommInitRank : invalid nranks " + std::to_string(nranks);
  else if (rank < 0 || rank >= nranks) mine = "ncclCommInitRank : rank " + std::to_string(rank) + " is out of range [0, " + std::to_string(nranks) + ")";
  else if (std::memcmp(id.internal, kMagic, sizeof kMagic) != 0) mine = "ncclCommInitRank : the unique id was not made by ncclGetUniqueId";
  else if (nranks != world_size || rank != world_rank) {
    code = ncclInvalidUsage;
    mine = "ncclCommInitRank : the emulated NCCL spans MPI_COMM_WORLD: nranks " + std::to_string(nranks) + " and rank " +
           std::to_string(rank) + " must be its size " + std::to_string(world_size) + " and this process's rank " + std::to_string(world_rank);
  }
  // Every rank's arguments, compared: the same id, the same nranks, distinct ranks.
  struct Join {
    char id[NCCL_UNIQUE_ID_BYTES];
    int32_t nranks, rank, ok;
  } j;
  std::memcpy(j.id, id.internal, sizeof j.id);
  j.nranks = nranks;
  j.rank = rank;
  j.ok = mine.empty() ? 1 : 0;
  std::vector<Join> all(static_cast<size_t>(world_size));
  if (m.allgather(&j, int(sizeof j), m.abi.byte, all.data(), int(sizeof j), m.abi.byte, m.abi.comm_world) != 0)
    return fail(ncclSystemError, "ncclCommInitRank : MPI_Allgather failed");
  if (!mine.empty()) return fail(code, mine);
  for (int r = 0; r < world_size; ++r) {
    const Join& o = all[size_t(r)];
    if (!o.ok) return fail(ncclInvalidUsage, "ncclCommInitRank : MPI rank " + std::to_string(r) + " refused its arguments");
    if (std::memcmp(o.id, j.id, sizeof j.id) != 0)
      return fail(ncclInvalidUsage, "ncclCommInitRank : MPI rank " + std::to_string(r) + " passed another unique id than MPI rank " + std::to_string(world_rank));
    if (o.nranks != nranks)
      return fail(ncclInvalidUsage, "ncclCommInitRank : MPI rank " + std::to_string(r) + " passed nranks " + std::to_string(o.nranks) + ", not " + std::to_string(nranks));
  }
  Handle dup = 0;
  if (m.comm_dup(m.abi.comm_world, &dup) != 0) return fail(ncclSystemError, "ncclCommInitRank : MPI_Comm_dup failed");
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  c->comm = dup;
  live().insert(c);
  *out = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return fail(ncclInvalidArgument, "ncclCommDestroy : comm argument is NULL");
  if (!live().erase(comm)) return fail(ncclInvalidArgument, "ncclCommDestroy : comm is not a live communicator (never initialised, or destroyed)");
  emu::flush();
  int down = 0;
  if (mpi().finalized(&down) == 0 && !down) mpi().comm_free(&comm->comm);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t) {
  ncclResult_t code;
  std::string mine = check_collective("AllReduce", send, count, recv, count, type, int(op), comm, &code);
  if (ncclResult_t r = agree(comm, "AllReduce", mine, code, int64_t(count), int(type), int(op)); r != ncclSuccess) return r;
  if (count == 0) return ncclSuccess;
  emu::flush();  // the input is written by queued work
  const size_t bytes = count * type_size(type);
  if (send != recv) std::memmove(recv, send, bytes);
  if (mpi().allreduce(mpi().abi.in_place, recv, int(count), mpi_type(type), mpi_op(op), comm->comm) != 0)
    return fail(ncclSystemError, "AllReduce : MPI_Allreduce failed");
  if (op == ncclAvg) divide(recv, count, type, comm->nranks);
  return ncclSuccess;
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recvcount, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t) {
  ncclResult_t code;
  const size_t n = comm && live().count(comm) ? size_t(comm->nranks) : 1;
  std::string mine = check_collective("ReduceScatter", send, recvcount * n, recv, recvcount, type, int(op), comm, &code);
  if (ncclResult_t r = agree(comm, "ReduceScatter", mine, code, int64_t(recvcount), int(type), int(op)); r != ncclSuccess) return r;
  if (recvcount == 0) return ncclSuccess;
  emu::flush();
  const size_t ts = type_size(type);
  // A copy: recvbuff may be this rank's block of sendbuff (NCCL's in-place form).
  std::vector<unsigned char> in(static_cast<const unsigned char*>(send), static_cast<const unsigned char*>(send) + recvcount * n * ts);
  if (mpi().reduce_scatter_block(in.data(), recv, int(recvcount), mpi_type(type), mpi_op(op), comm->comm) != 0)
    return fail(ncclSystemError, "ReduceScatter : MPI_Reduce_scatter_block failed");
  if (op == ncclAvg) divide(recv, recvcount, type, comm->nranks);
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t sendcount, ncclDataType_t type, ncclComm_t comm, cudaStream_t) {
  ncclResult_t code;
  const size_t n = comm && live().count(comm) ? size_t(comm->nranks) : 1;
  std::string mine = check_collective("AllGather", send, sendcount, recv, sendcount * n, type, kNoReduction, comm, &code);
  if (ncclResult_t r = agree(comm, "AllGather", mine, code, int64_t(sendcount), int(type), kNoReduction); r != ncclSuccess) return r;
  if (sendcount == 0) return ncclSuccess;
  emu::flush();
  const size_t bytes = sendcount * type_size(type);
  auto* mine_block = static_cast<unsigned char*>(recv) + size_t(comm->rank) * bytes;
  std::vector<unsigned char> in;
  const void* from = mpi().abi.in_place;
  if (send != mine_block) {
    in.assign(static_cast<const unsigned char*>(send), static_cast<const unsigned char*>(send) + bytes);
    from = in.data();
  }
  if (mpi().allgather(from, from == mpi().abi.in_place ? 0 : int(sendcount), mpi_type(type), recv, int(sendcount), mpi_type(type), comm->comm) != 0)
    return fail(ncclSystemError, "AllGather : MPI_Allgather failed");
  return ncclSuccess;
}

}  // extern "C"
