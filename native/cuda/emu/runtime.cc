// The CUDA runtime, cuBLAS and cuBLASLt calls of the backend, implemented on
// the CPU for the emulated backend (see backend.sh). The point is to check the
// backend's host code as a GPU would: every argument is validated the way the
// real library validates it, device and host memory are told apart, work is
// queued and only runs when the host waits (so a missing synchronisation reads
// stale data), device memory starts as NaNs, and writes past the end of an
// allocation are caught.
//
// Environment knobs:
//   GPTCUDA_EMU_MEMORY   device memory in MiB (default 4096): exercises out-of-memory paths
//   GPTCUDA_EMU_CC       compute capability "major.minor" (default 9.0)
//   GPTCUDA_EMU_SMS      multiprocessor count (default 2: grid-stride loops loop)
//   GPTCUDA_EMU_NO_DEVICE=1  behave like a machine whose driver finds no GPU
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>

#include "bf16.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace emu {
namespace {

constexpr size_t kRedzone = 256;  // bytes of guard on each side of a device allocation
constexpr unsigned char kPoison = 0xFF;  // as float: NaN

struct Alloc {
  size_t bytes;    // as requested
  size_t rounded;  // usable bytes (a multiple of 256)
};

struct State {
  std::recursive_mutex mu;
  std::map<uintptr_t, Alloc> device;  // user pointer -> allocation
  std::set<const void*> pinned;
  size_t used = 0;
  size_t limit = 0;
  std::vector<std::pair<const char*, std::function<void()>>> queue;
  cudaError_t last_error = cudaSuccess;
  std::map<const void*, size_t> smem_limits;
  int cc_major = 9, cc_minor = 0, sms = 2;
  bool present = true;

  State() {
    const char* m = std::getenv("GPTCUDA_EMU_MEMORY");
    limit = (m ? std::strtoull(m, nullptr, 10) : 4096) << 20;
    if (const char* cc = std::getenv("GPTCUDA_EMU_CC")) std::sscanf(cc, "%d.%d", &cc_major, &cc_minor);
    if (const char* s = std::getenv("GPTCUDA_EMU_SMS")) sms = std::max(1, std::atoi(s));
    const char* none = std::getenv("GPTCUDA_EMU_NO_DEVICE");
    present = !(none && std::strcmp(none, "1") == 0);
  }
};
State& st() {
  static State s;
  return s;
}

const Alloc* find_alloc(const void* p, uintptr_t* base) {
  auto& d = st().device;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = d.upper_bound(a);
  if (it == d.begin()) return nullptr;
  --it;
  if (a > it->first + it->second.rounded) return nullptr;
  *base = it->first;
  return &it->second;
}

void check_redzones(const char* after) {
  for (auto& [base, a] : st().device) {
    const unsigned char* lo = reinterpret_cast<const unsigned char*>(base) - kRedzone;
    const unsigned char* hi = reinterpret_cast<const unsigned char*>(base) + a.rounded;
    for (size_t i = 0; i < kRedzone; ++i) {
      if (lo[i] != kPoison)
        fatal(std::string(after) + " wrote " + std::to_string(kRedzone - i) +
              " bytes before the start of a device allocation of " + std::to_string(a.bytes) + " bytes");
      if (hi[i] != kPoison)
        fatal(std::string(after) + " wrote past the end of a device allocation of " +
              std::to_string(a.bytes) + " bytes (at byte " + std::to_string(a.rounded + i) + ")");
    }
  }
}

bool is_pinned(const void* p) { return st().pinned.count(p) != 0; }

}  // namespace

void enqueue(const char* what, std::function<void()> work) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  st().queue.emplace_back(what, std::move(work));
}

void flush() {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  auto q = std::move(st().queue);
  st().queue.clear();
  for (auto& [what, work] : q) {
    work();
    check_redzones(what);
  }
}

void set_launch_error(cudaError_t err, const std::string& why) {
  std::fprintf(stderr, "[cuda emulator] launch rejected: %s\n", why.c_str());
  st().last_error = err;
}

size_t dynamic_smem_limit(const void* kernel) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  auto it = st().smem_limits.find(kernel);
  return it == st().smem_limits.end() ? 48 * 1024 : it->second;
}
void set_dynamic_smem_limit(const void* kernel, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  st().smem_limits[kernel] = bytes;
}
size_t optin_smem_limit() {
  const int cc = st().cc_major * 10 + st().cc_minor;
  return cc >= 90 ? 232448 : cc >= 80 ? 166912 : 49152;
}

bool is_device_range(const void* p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  uintptr_t base;
  const Alloc* a = find_alloc(p, &base);
  return a && reinterpret_cast<uintptr_t>(p) + bytes <= base + a->rounded;
}
bool is_device_pointer(const void* p) { return is_device_range(p, 0); }

}  // namespace emu

using emu::st;

// ---- runtime ------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  if (!st().present) {
    *count = 0;
    return cudaErrorNoDevice;
  }
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "CUDA emulator on the CPU (sm_%d%d)", st().cc_major,
                st().cc_minor);
  prop->totalGlobalMem = st().limit;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = emu::optin_smem_limit();
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->multiProcessorCount = st().sms;
  prop->major = st().cc_major;
  prop->minor = st().cc_minor;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  emu::flush();
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = st().last_error;
  st().last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return st().last_error; }

namespace {
// A status code with its enumerator's name and the library's message (null:
// the library gives the name).
template <typename E>
struct Named {
  E code;
  const char* name;
  const char* text;
};
#define EMU_NAMED(code, text) {code, #code, text}

const Named<cudaError_t> kCudaErrors[] = {
    EMU_NAMED(cudaSuccess, "no error"),
    EMU_NAMED(cudaErrorInvalidValue, "invalid argument"),
    EMU_NAMED(cudaErrorMemoryAllocation, "out of memory"),
    EMU_NAMED(cudaErrorInvalidConfiguration, "invalid configuration argument"),
    EMU_NAMED(cudaErrorInvalidDevicePointer, "invalid device pointer"),
    EMU_NAMED(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy"),
    EMU_NAMED(cudaErrorInsufficientDriver, "CUDA driver version is insufficient for CUDA runtime version"),
    EMU_NAMED(cudaErrorStubLibrary, "CUDA driver is a stub library"),
    EMU_NAMED(cudaErrorNoDevice, "no CUDA-capable device is detected"),
    EMU_NAMED(cudaErrorInvalidDevice, "invalid device ordinal"),
    EMU_NAMED(cudaErrorIllegalAddress, "an illegal memory access was encountered"),
    EMU_NAMED(cudaErrorLaunchOutOfResources, "too many resources requested for launch"),
};
const Named<cublasStatus_t> kCublasStatuses[] = {
    EMU_NAMED(CUBLAS_STATUS_SUCCESS, "success"),
    EMU_NAMED(CUBLAS_STATUS_NOT_INITIALIZED, nullptr),
    EMU_NAMED(CUBLAS_STATUS_ALLOC_FAILED, nullptr),
    EMU_NAMED(CUBLAS_STATUS_INVALID_VALUE, "an invalid value was used as an argument"),
    EMU_NAMED(CUBLAS_STATUS_ARCH_MISMATCH, nullptr),
    EMU_NAMED(CUBLAS_STATUS_MAPPING_ERROR, nullptr),
    EMU_NAMED(CUBLAS_STATUS_EXECUTION_FAILED, nullptr),
    EMU_NAMED(CUBLAS_STATUS_INTERNAL_ERROR, nullptr),
    EMU_NAMED(CUBLAS_STATUS_NOT_SUPPORTED, "the functionality requested is not supported"),
};
#undef EMU_NAMED

template <typename E, size_t N>
const Named<E>* find_named(const Named<E> (&table)[N], E code) {
  for (const Named<E>& e : table)
    if (e.code == code) return &e;
  return nullptr;
}
}  // namespace

const char* cudaGetErrorName(cudaError_t err) {
  const auto* e = find_named(kCudaErrors, err);
  return e ? e->name : "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t err) {
  const auto* e = find_named(kCudaErrors, err);
  return e ? e->text : "unknown error";
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (!ptr) return cudaErrorInvalidValue;
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  const size_t rounded = (bytes + 255) / 256 * 256;
  if (st().used + rounded > st().limit) return cudaErrorMemoryAllocation;
  auto* raw = static_cast<unsigned char*>(std::aligned_alloc(256, rounded + 2 * emu::kRedzone));
  if (!raw) return cudaErrorMemoryAllocation;
  std::memset(raw, emu::kPoison, rounded + 2 * emu::kRedzone);  // never-written data reads as NaN
  void* p = raw + emu::kRedzone;
  st().device[reinterpret_cast<uintptr_t>(p)] = {bytes, rounded};
  st().used += rounded;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  emu::flush();  // cudaFree waits for the device
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (!ptr) return cudaSuccess;
  auto it = st().device.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == st().device.end()) return cudaErrorInvalidValue;
  st().used -= it->second.rounded;
  st().device.erase(it);
  std::free(static_cast<unsigned char*>(ptr) - emu::kRedzone);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  *ptr = std::malloc(bytes ? bytes : 1);
  if (!*ptr) return cudaErrorMemoryAllocation;
  st().pinned.insert(*ptr);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  emu::flush();
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (!ptr) return cudaSuccess;
  if (!st().pinned.erase(ptr)) return cudaErrorInvalidValue;
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  *free_bytes = st().limit - st().used;
  *total_bytes = st().limit;
  return cudaSuccess;
}

namespace {
// Checks a copy's direction against where its pointers live, as the driver does
// with unified addressing.
cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind& kind) {
  const bool dd = emu::is_device_pointer(dst), sd = emu::is_device_pointer(src);
  if (kind == cudaMemcpyDefault)
    kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
              : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  const bool want_dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool want_sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dd != want_dd || sd != want_sd) return cudaErrorInvalidValue;
  if (want_dd && !emu::is_device_range(dst, bytes)) return cudaErrorInvalidValue;
  if (want_sd && !emu::is_device_range(src, bytes)) return cudaErrorInvalidValue;
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t e = check_copy(dst, src, bytes, kind); e != cudaSuccess) return e;
  const bool pinned_src = emu::is_pinned(src), pinned_dst = emu::is_pinned(dst);
  if (kind == cudaMemcpyHostToDevice && !pinned_src) {
    // From pageable memory the driver stages the data before returning.
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    emu::enqueue("cudaMemcpyAsync (host to device)", [=] { std::memcpy(dst, staged->data(), bytes); });
  } else if (kind == cudaMemcpyDeviceToHost && !pinned_dst) {
    // To pageable memory the call returns once the copy is done.
    emu::flush();
    std::memcpy(dst, src, bytes);
  } else {
    emu::enqueue("cudaMemcpyAsync", [=] { std::memmove(dst, src, bytes); });
  }
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t e = check_copy(dst, src, bytes, kind); e != cudaSuccess) return e;
  emu::flush();
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  if (!emu::is_device_range(dst, bytes)) return cudaErrorInvalidValue;
  emu::enqueue("cudaMemsetAsync", [=] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (cudaError_t e = cudaMemsetAsync(dst, value, bytes); e != cudaSuccess) return e;
  emu::flush();
  return cudaSuccess;
}

struct CUstream_st {
  int id;
};
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  *stream = new CUstream_st{1};
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  emu::flush();
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  emu::flush();
  return cudaSuccess;
}

// ---- cuBLAS -------------------------------------------------------------------------------

namespace {
float to_tf32(float x) { return nvcuda::wmma::__float_to_tf32(x); }

size_t type_size(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }

// Element i of a float32 or bf16 matrix, widened (bf16 is exact in float).
float load(const void* p, cudaDataType_t t, size_t i) {
  return t == CUDA_R_16BF ? gptcuda::bf16_to_float(static_cast<const gptcuda::bf16*>(p)[i])
                          : static_cast<const float*>(p)[i];
}

// v rounded to bf16 once, to nearest even. Going through float first would
// round twice: a float that lands exactly halfway between two bf16 neighbours
// may come from a double that was not, and then the tie rule must not apply.
gptcuda::bf16 double_to_bf16(double v) {
  const float f = static_cast<float>(v);
  const uint32_t u = gptcuda::float_bits(f);
  if ((u & 0xffffu) == 0x8000u && std::isfinite(v) && static_cast<double>(f) != v) {
    const bool beyond = std::fabs(v) > std::fabs(static_cast<double>(f));  // above the tie in magnitude
    return gptcuda::bf16{static_cast<uint16_t>((u >> 16) + (beyond ? 1 : 0))};
  }
  return gptcuda::float_to_bf16(f);
}

// Column-major D[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C (+ bias[m]), in
// double, written to D's type with one rounding. A and B share a type, as do C,
// D and the bias (the combinations the backend uses; the callers check).
// GELU (tanh approximation) and its derivative for the GELU epilogues, in
// double: the emulator's stand-in for cuBLASLt's own (undocumented) evaluation.
double gelu_exact(double x) {
  return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
double gelu_grad_exact(double x) {
  const double th = std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
}

enum class Epilogue { kNone, kGeluAux, kDGelu };

struct Gemm {
  bool ta, tb, tf32;
  int m, n, k;
  float alpha, beta;
  const void *A, *B, *C, *bias;
  int lda, ldb, ldc, ldd;
  void* D;
  cudaDataType_t ab_type = CUDA_R_32F, cd_type = CUDA_R_32F;
  // kGeluAux: aux = the sum (bias added), D = gelu(sum); kDGelu: D = sum * gelu'(aux).
  // aux is stored as D is, column-major with leading dimension ldaux.
  Epilogue epilogue = Epilogue::kNone;
  void* aux = nullptr;
  int64_t ldaux = 0;
  void store(void* p, size_t at, double v) const {
    if (cd_type == CUDA_R_16BF)
      static_cast<gptcuda::bf16*>(p)[at] = double_to_bf16(v);
    else
      static_cast<float*>(p)[at] = static_cast<float>(v);
  }
  void run() const {
    std::vector<double> out(static_cast<size_t>(m) * n);
    auto rd = [&](float x) { return tf32 ? to_tf32(x) : x; };
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        double s = 0;
        for (int l = 0; l < k; ++l) {
          const float a = load(A, ab_type, ta ? i * static_cast<size_t>(lda) + l : l * static_cast<size_t>(lda) + i);
          const float b = load(B, ab_type, tb ? l * static_cast<size_t>(ldb) + j : j * static_cast<size_t>(ldb) + l);
          s += static_cast<double>(rd(a)) * rd(b);
        }
        double v = alpha * s;
        if (beta != 0.f) v += static_cast<double>(beta) * load(C, cd_type, j * static_cast<size_t>(ldc) + i);
        if (bias) v += load(bias, cd_type, i);
        out[j * static_cast<size_t>(m) + i] = v;
      }
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        const size_t at = j * static_cast<size_t>(ldd) + i, at_aux = j * static_cast<size_t>(ldaux) + i;
        double v = out[j * static_cast<size_t>(m) + i];
        if (epilogue == Epilogue::kGeluAux) {
          store(aux, at_aux, v);
          v = gelu_exact(v);
        } else if (epilogue == Epilogue::kDGelu) {
          v *= gelu_grad_exact(load(aux, cd_type, at_aux));
        }
        store(D, at, v);
      }
  }
};

// Bytes spanned by a column-major rows x cols matrix with leading dimension ld.
size_t span(int rows, int cols, int64_t ld, size_t elem = sizeof(float)) {
  if (rows <= 0 || cols <= 0) return 0;
  return (static_cast<size_t>(cols - 1) * ld + rows) * elem;
}

// The type combinations of cublasGemmEx / cublasLtMatmul that the emulator
// runs, as the libraries' tables allow them for float32 scaling: all float32
// (plain, pedantic or TF32 compute), or bf16 A and B with bf16 or float32 C
// and float32 compute. Anything else is CUBLAS_STATUS_NOT_SUPPORTED.
bool gemm_types_ok(cudaDataType_t a, cudaDataType_t b, cudaDataType_t c, cublasComputeType_t compute) {
  if (a != b) return false;
  const bool plain = compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC;
  if (a == CUDA_R_32F) return c == CUDA_R_32F && (plain || compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  if (a == CUDA_R_16BF) return (c == CUDA_R_16BF || c == CUDA_R_32F) && plain;
  return false;
}
}  // namespace

struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  if (!st().present) return CUBLAS_STATUS_NOT_INITIALIZED;
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void* ws, size_t bytes) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && !emu::is_device_range(ws, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  if (reinterpret_cast<uintptr_t>(ws) % 256 != 0) return CUBLAS_STATUS_INVALID_VALUE;
  h->workspace = ws;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t s) {
  const auto* e = find_named(kCublasStatuses, s);
  return e ? e->name : "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t s) {
  const auto* e = find_named(kCublasStatuses, s);
  return e && e->text ? e->text : cublasGetStatusName(s);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype,
                            int ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) || (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  if (lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!gemm_types_ok(Atype, Btype, Ctype, compute)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (h->pointer_mode != CUBLAS_POINTER_MODE_HOST || emu::is_device_pointer(alpha) ||
      emu::is_device_pointer(beta))
    return CUBLAS_STATUS_INVALID_VALUE;  // the emulator only does host scalars, as the backend uses
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  Gemm g{ta, tb, false, m, n, k, *static_cast<const float*>(alpha), *static_cast<const float*>(beta),
         A, B, C, nullptr, lda, ldb, ldc, ldc, C, Atype, Ctype};
  // TF32 rounding only applies to float32 operands (bf16 values are exact in TF32 anyway).
  g.tf32 = Atype == CUDA_R_32F && (compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                                   (compute == CUBLAS_COMPUTE_32F && h->math == CUBLAS_TF32_TENSOR_OP_MATH));
  const size_t ea = type_size(Atype), ec = type_size(Ctype);
  if (!emu::is_device_range(C, span(m, n, ldc, ec))) return CUBLAS_STATUS_INVALID_VALUE;
  if (k > 0 && (!emu::is_device_range(A, ta ? span(k, m, lda, ea) : span(m, k, lda, ea)) ||
                !emu::is_device_range(B, tb ? span(n, k, ldb, ea) : span(k, n, ldb, ea))))
    return CUBLAS_STATUS_INVALID_VALUE;
  emu::enqueue("cublasGemmEx", [g] { g.run(); });
  return CUBLAS_STATUS_SUCCESS;
}

// ---- cuBLASLt -----------------------------------------------------------------------------

struct cublasLtContext {};
struct cublasLtMatmulDescOpaque {
  cublasComputeType_t compute;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;  // -1: the default, D's type
  void* aux = nullptr;
  int64_t aux_ld = 0;
};
namespace {
bool has_bias(const cublasLtMatmulDescOpaque* d) {
  return d->epilogue == CUBLASLT_EPILOGUE_BIAS || d->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool has_aux(const cublasLtMatmulDescOpaque* d) {
  return d->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || d->epilogue == CUBLASLT_EPILOGUE_DGELU;
}
}  // namespace
struct cublasLtMatrixLayoutOpaque {
  uint64_t rows, cols;
  int64_t ld;
  cudaDataType_t type;
};
struct cublasLtMatmulPreferenceOpaque {
  uint64_t workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  if (!st().present) return CUBLAS_STATUS_NOT_INITIALIZED;
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  if (scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *d = new cublasLtMatmulDescOpaque{compute};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  if (!d || !buf) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
      if (size != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      int32_t v;
      std::memcpy(&v, buf, 4);
      if (v != CUBLAS_OP_N && v != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
      (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->ta : d->tb) = static_cast<cublasOperation_t>(v);
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
      if (size != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->epilogue, buf, 4);
      if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && d->epilogue != CUBLASLT_EPILOGUE_BIAS &&
          d->epilogue != CUBLASLT_EPILOGUE_GELU_AUX_BIAS && d->epilogue != CUBLASLT_EPILOGUE_DGELU)
        return CUBLAS_STATUS_NOT_SUPPORTED;  // (not emulated)
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      if (size != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->aux, buf, sizeof(void*));
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      if (size != sizeof(int64_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->aux_ld, buf, sizeof(int64_t));
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      if (size != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->bias, buf, sizeof(void*));
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: {
      if (size != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      int32_t t;
      std::memcpy(&t, buf, 4);
      if (t != -1 && t != CUDA_R_32F && t != CUDA_R_16BF) return CUBLAS_STATUS_NOT_SUPPORTED;
      d->bias_type = t;
      return CUBLAS_STATUS_SUCCESS;
    }
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;  // (not emulated)
  }
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (type != CUDA_R_32F && type != CUDA_R_16BF) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ld < static_cast<int64_t>(std::max<uint64_t>(1, rows))) return CUBLAS_STATUS_INVALID_VALUE;
  *l = new cublasLtMatrixLayoutOpaque{rows, cols, ld, type};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new cublasLtMatmulPreferenceOpaque;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  if (!p || !buf) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
    if (size != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&p->workspace, buf, 8);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
    if (size != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

namespace {
// m, n, k of D = op(A) op(B) when the layouts agree.
bool lt_shape(const cublasLtMatmulDescOpaque* d, const cublasLtMatrixLayoutOpaque* a,
              const cublasLtMatrixLayoutOpaque* b, const cublasLtMatrixLayoutOpaque* c,
              const cublasLtMatrixLayoutOpaque* dd, int* m, int* n, int* k) {
  const uint64_t am = d->ta == CUBLAS_OP_T ? a->cols : a->rows, ak = d->ta == CUBLAS_OP_T ? a->rows : a->cols;
  const uint64_t bk = d->tb == CUBLAS_OP_T ? b->cols : b->rows, bn = d->tb == CUBLAS_OP_T ? b->rows : b->cols;
  if (ak != bk || dd->rows != am || dd->cols != bn || c->rows != dd->rows || c->cols != dd->cols) return false;
  *m = static_cast<int>(am);
  *n = static_cast<int>(bn);
  *k = static_cast<int>(ak);
  return true;
}
constexpr uint64_t kAlgoMagic = 0x67707463756461ull;

// The layouts' types are a supported combination (C and D alike), and the bias
// (when the epilogue adds one) is stored as D is: the one bias type the
// emulator runs (cuBLASLt also takes a float32 bias for bf16 D; not used here).
bool lt_types_ok(const cublasLtMatmulDescOpaque* d, const cublasLtMatrixLayoutOpaque* a,
                 const cublasLtMatrixLayoutOpaque* b, const cublasLtMatrixLayoutOpaque* c,
                 const cublasLtMatrixLayoutOpaque* dd) {
  if (c->type != dd->type || !gemm_types_ok(a->type, b->type, dd->type, d->compute)) return false;
  if (has_bias(d) && d->bias_type != -1 && d->bias_type != dd->type) return false;
  return true;
}
// The GELU epilogues' aux matrix (cublasLt.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD): a
// leading dimension divisible by 8 and at least D's rows; its pointer 16-byte aligned.
bool lt_aux_ok(const cublasLtMatmulDescOpaque* d, const cublasLtMatrixLayoutOpaque* dd) {
  if (!has_aux(d)) return true;
  return d->aux && reinterpret_cast<uintptr_t>(d->aux) % 16 == 0 && d->aux_ld % 8 == 0 &&
         d->aux_ld >= static_cast<int64_t>(dd->rows);
}
}  // namespace

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t results[],
                                              int* found) {
  if (!h || !d || !a || !b || !c || !dd || !pref || requested < 1 || !results || !found)
    return CUBLAS_STATUS_INVALID_VALUE;
  int m, n, k;
  if (!lt_shape(d, a, b, c, dd, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!lt_types_ok(d, a, b, c, dd) || !lt_aux_ok(d, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
  *found = 1;
  std::memset(&results[0], 0, sizeof results[0]);
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].algo.data[0] = kAlgoMagic;
  // The algorithm assumes the alignments promised in the preference.
  for (int i = 0; i < 4; ++i) results[0].algo.data[1 + i] = pref->align[i];
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t dd,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                              cudaStream_t) {
  if (!h || !d || !a || !b || !c || !dd || !alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  int m, n, k;
  if (!lt_shape(d, a, b, c, dd, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (algo && algo->data[0] != kAlgoMagic) return CUBLAS_STATUS_INVALID_VALUE;
  if (!lt_types_ok(d, a, b, c, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
  const size_t eab = type_size(a->type), ecd = type_size(dd->type);
  const void* ptrs[4] = {A, B, C, D};
  for (int i = 0; algo && i < 4; ++i)
    if (reinterpret_cast<uintptr_t>(ptrs[i]) % algo->data[1 + i] != 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (workspace_bytes > 0 && !emu::is_device_range(workspace, workspace_bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  const bool with_bias = has_bias(d);
  if (with_bias && (!d->bias || !emu::is_device_range(d->bias, static_cast<size_t>(m) * ecd)))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!lt_aux_ok(d, dd)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (has_aux(d) && !emu::is_device_range(d->aux, span(m, n, d->aux_ld, ecd))) return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = d->ta == CUBLAS_OP_T, tb = d->tb == CUBLAS_OP_T;
  if (!emu::is_device_range(A, span(static_cast<int>(a->rows), static_cast<int>(a->cols), a->ld, eab)) ||
      !emu::is_device_range(B, span(static_cast<int>(b->rows), static_cast<int>(b->cols), b->ld, eab)) ||
      !emu::is_device_range(D, span(m, n, dd->ld, ecd)))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float fb = *static_cast<const float*>(beta);
  if (fb != 0.f && !emu::is_device_range(C, span(m, n, c->ld, ecd))) return CUBLAS_STATUS_INVALID_VALUE;
  Gemm g{ta, tb, d->compute == CUBLAS_COMPUTE_32F_FAST_TF32 && a->type == CUDA_R_32F, m, n, k,
         *static_cast<const float*>(alpha), fb, A, B, C, with_bias ? d->bias : nullptr, static_cast<int>(a->ld),
         static_cast<int>(b->ld), static_cast<int>(c->ld), static_cast<int>(dd->ld), D, a->type, dd->type};
  if (has_aux(d)) {
    g.epilogue = d->epilogue == CUBLASLT_EPILOGUE_DGELU ? Epilogue::kDGelu : Epilogue::kGeluAux;
    g.aux = d->aux;
    g.ldaux = d->aux_ld;
  }
  emu::enqueue("cublasLtMatmul", [g] { g.run(); });
  return CUBLAS_STATUS_SUCCESS;
}
