// readBandwidth(megabytes, reps): the machine's read bandwidth in GB/s, for the
// benchmark's memory bound on decoding (bytes read per token / bandwidth).
// Every CPU thread sums its share of one buffer far larger than the caches,
// in the access pattern of a matrix-vector product over the weights.
#include <napi.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "../cpu/parallel.h"

namespace gptcuda {
namespace {

typedef float v8 __attribute__((vector_size(32)));

// Eight streams at once, as a matrix-vector product reads eight weight rows:
// one sequential stream per core leaves the memory system underused (the
// prefetchers track several streams), and would understate what the decoder
// can reach.
constexpr int kStreams = 8;

float read_sum(const float* p, size_t n) {
  const size_t per = n / kStreams / 8 * 8;
  v8 acc[kStreams] = {};
  for (size_t i = 0; i < per; i += 8)
    for (int s = 0; s < kStreams; ++s) {
      v8 x;
      std::memcpy(&x, p + s * per + i, sizeof x);
      acc[s] += x;
    }
  float total = 0.f;
  for (int s = 0; s < kStreams; ++s)
    for (int k = 0; k < 8; ++k) total += acc[s][k];
  for (size_t i = kStreams * per; i < n; ++i) total += p[i];
  return total;
}

Napi::Value ReadBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double mb = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  double reps_d = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(mb >= 1 && mb <= 16384) || !(reps_d >= 1 && reps_d <= 1000))
    throw Napi::RangeError::New(env, "readBandwidth(megabytes, reps): give 1..16384 MB and 1..1000 repetitions");
  const size_t n = size_t(mb * 1024 * 1024 / sizeof(float));
  std::vector<float> buf(n, 1.0f);  // written once, so the pages exist before timing
  const int threads = cpu_num_threads();
  std::vector<float> sink(size_t(threads) * 16, 0.f);
  double best = 0;
  for (int r = 0; r < int(reps_d); ++r) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(n, n / size_t(threads), [&](size_t lo, size_t hi) {
      sink[(lo * threads / n) * 16] += read_sum(buf.data() + lo, hi - lo);
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(n * sizeof(float)) / s / 1e9);
  }
  // Reading the sums keeps the compiler from eliding the loads.
  volatile float keep = sink[0];
  (void)keep;
  return Napi::Number::New(env, best);
}

}  // namespace

void register_membench(Napi::Env env, Napi::Object exports) {
  exports.Set("readBandwidth", Napi::Function::New(env, ReadBandwidth, "readBandwidth"));
}

}  // namespace gptcuda
