// Calls the emulated NCCL (native/cuda/emu/nccl.cc, inside build/emu's
// gptcuda_cuda.so) directly, with the bad arguments the addon never passes,
// under `mpirun -np 2`; test/distributed.test.ts compares what comes back
// with what NCCL documents. One JSON line per rank, in the file argv[1].<rank>:
// each call's name, result code and ncclGetLastError(), and the sums of the
// good collectives.
#include <mpi.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static std::string out;

static void record(const char* what, ncclResult_t r) {
  std::string last = r == ncclSuccess ? "" : ncclGetLastError(nullptr);
  std::string esc;
  for (char c : last) esc += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
  out += std::string(out.empty() ? "" : ",") + "{\"call\":\"" + what + "\",\"code\":" + std::to_string(int(r)) + ",\"last\":\"" + esc + "\"}";
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  float* dev = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&dev), 8 * sizeof(float));
  std::vector<float> host(8, 1.0f);

  record("GetVersion(NULL)", ncclGetVersion(nullptr));
  record("GetUniqueId(NULL)", ncclGetUniqueId(nullptr));
  ncclUniqueId id;
  if (rank == 0) ncclGetUniqueId(&id);
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclUniqueId other;
  ncclGetUniqueId(&other);
  ncclUniqueId junk = {};

  ncclComm_t comm = nullptr;
  record("CommInitRank(comm NULL on rank 0)", ncclCommInitRank(rank == 0 ? nullptr : &comm, size, id, rank));
  record("CommInitRank(rank 5)", ncclCommInitRank(&comm, size, id, 5));
  record("CommInitRank(junk id)", ncclCommInitRank(&comm, size, junk, rank));
  record("CommInitRank(another id on rank 1)", ncclCommInitRank(&comm, size, rank == 1 ? other : id, rank));
  record("CommInitRank(nranks 3)", ncclCommInitRank(&comm, 3, id, rank));
  record("CommInitRank", ncclCommInitRank(&comm, size, id, rank));

  record("AllReduce(comm NULL)", ncclAllReduce(dev, dev, 8, ncclFloat, ncclSum, nullptr, nullptr));
  record("AllReduce(sendbuff NULL)", ncclAllReduce(nullptr, dev, 8, ncclFloat, ncclSum, comm, nullptr));
  record("AllReduce(host memory)", ncclAllReduce(host.data(), dev, 8, ncclFloat, ncclSum, comm, nullptr));
  // Past the allocation's 256-byte granule: within it, a real GPU cannot tell either.
  record("AllReduce(100 of 8 elements)", ncclAllReduce(dev, dev, 100, ncclFloat, ncclSum, comm, nullptr));
  record("AllReduce(type 42)", ncclAllReduce(dev, dev, 8, ncclDataType_t(42), ncclSum, comm, nullptr));
  record("AllReduce(op 9)", ncclAllReduce(dev, dev, 8, ncclFloat, ncclRedOp_t(9), comm, nullptr));
  record("AllReduce(bfloat16)", ncclAllReduce(dev, dev, 8, ncclBfloat16, ncclSum, comm, nullptr));
  record("AllReduce(count 4 on rank 0, 3 on rank 1)", ncclAllReduce(dev, dev, rank == 0 ? 4 : 3, ncclFloat, ncclSum, comm, nullptr));
  record("ReduceScatter(recvcount 50: sendbuff 100 of 8)", ncclReduceScatter(dev, dev, 50, ncclFloat, ncclSum, comm, nullptr));
  record("AllGather(sendcount 50: recvbuff 100 of 8)", ncclAllGather(dev, dev, 50, ncclFloat, comm, nullptr));
  record("AllReduce(count 0, NULL buffers)", ncclAllReduce(nullptr, nullptr, 0, ncclFloat, ncclSum, comm, nullptr));

  // Good calls: element i of rank r is 10 r + i.
  std::vector<float> mine(8), got(8);
  for (int i = 0; i < 8; ++i) mine[size_t(i)] = float(10 * rank + i);
  cudaMemcpy(dev, mine.data(), sizeof(float) * 8, cudaMemcpyHostToDevice);
  record("AllReduce(avg)", ncclAllReduce(dev, dev, 8, ncclFloat, ncclAvg, comm, nullptr));
  cudaMemcpy(got.data(), dev, sizeof(float) * 8, cudaMemcpyDeviceToHost);
  std::string avg, rs, ag;
  for (float v : got) avg += (avg.empty() ? "" : ",") + std::to_string(v);
  cudaMemcpy(dev, mine.data(), sizeof(float) * 8, cudaMemcpyHostToDevice);
  // In place: this rank's block of the sum lands in its own part of dev.
  record("ReduceScatter(sum, in place)", ncclReduceScatter(dev, dev + 4 * rank, 4, ncclFloat, ncclSum, comm, nullptr));
  cudaMemcpy(got.data(), dev + 4 * rank, sizeof(float) * 4, cudaMemcpyDeviceToHost);
  for (int i = 0; i < 4; ++i) rs += (rs.empty() ? "" : ",") + std::to_string(got[size_t(i)]);
  cudaMemcpy(dev, mine.data(), sizeof(float) * 8, cudaMemcpyHostToDevice);
  record("AllGather(in place)", ncclAllGather(dev + 4 * rank, dev, 4, ncclFloat, comm, nullptr));
  cudaMemcpy(got.data(), dev, sizeof(float) * 8, cudaMemcpyDeviceToHost);
  for (float v : got) ag += (ag.empty() ? "" : ",") + std::to_string(v);

  record("CommDestroy", ncclCommDestroy(comm));
  record("AllReduce(destroyed comm)", ncclAllReduce(dev, dev, 8, ncclFloat, ncclSum, comm, nullptr));
  record("CommDestroy(again)", ncclCommDestroy(comm));
  // Each rank's line goes to its own file (argv[1] + "." + rank): through mpirun's forwarding two
  // ranks' long stdout lines can interleave mid-line.
  const std::string path = std::string(argc > 1 ? argv[1] : "nccl-args") + "." + std::to_string(rank);
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::perror(path.c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  std::fprintf(f, "{\"rank\":%d,\"calls\":[%s],\"avg\":[%s],\"reduceScatter\":[%s],\"allGather\":[%s],\"invalidArgument\":\"%s\"}\n", rank,
               out.c_str(), avg.c_str(), rs.c_str(), ag.c_str(), ncclGetErrorString(ncclInvalidArgument));
  std::fclose(f);
  cudaFree(dev);
  MPI_Finalize();
  return 0;
}
