// GFLOP/s of gptcuda::sgemm_blocked vs OpenBLAS cblas_sgemm (default threads)
// at GPT-2 small training shapes, B*T = 512 rows:
//   fwd   out[512,N]  = inp[512,K] . W[N,K]^T     (transB)
//   dinp  dinp[512,K] += dout[512,N] . W[N,K]      (no transpose)
//   dW    dW[N,K]     += dout[512,N]^T . inp[512,K] (transA)
// for (K,N) = (768,2304) qkv, (768,768) attn proj, (768,3072) fc,
// (3072,768) fc proj, (768,50257) lm head.
//
// Each side runs for about --seconds (default 1) per shape, split over --rounds
// (default 4) alternating rounds; the best and median times are reported.
// OpenBLAS's worker threads busy-wait for a while after a call, which would
// steal the cores from ours, so the process sleeps after each OpenBLAS round.
//
// Note: Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise recent Xeons
// (e.g. family 6 model 207) and falls back to its "Prescott" SSE3 kernels;
// run with OPENBLAS_CORETYPE=SkylakeX to compare against its AVX-512 kernels.
// The header line prints the kernel set OpenBLAS picked.
//
// Usage: bench_gemm [--seconds S] [--rounds R] [--filter NAME] [--cputime]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gemm_blocked.h"
#include "parallel.h"

namespace {

struct Case {
  std::string name;
  bool ta, tb;
  int m, n, k;
  float beta;
};

struct Timing {
  double best_s, median_s;
};

// --cputime: time by the calling thread's CPU time instead of wall time. Only
// meaningful single-threaded (GPTCUDA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1),
// where it is immune to other processes taking the core: for tuning on a
// shared machine.
bool use_cputime = false;

double now_s() {
  if (use_cputime) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
  }
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Appends the times of calls to fn over at least min_seconds (and 2 calls),
// after one untimed warm-up call (page faults, thread start, pack buffers).
void time_it(const std::function<void()>& fn, double min_seconds, std::vector<double>& times) {
  fn();
  const double start = now_s();
  for (int calls = 0; calls < 2 || now_s() - start < min_seconds; ++calls) {
    const double t0 = now_s();
    fn();
    times.push_back(now_s() - t0);
  }
}

Timing summarize(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return {times.front(), times[times.size() / 2]};
}

std::vector<float> random_vector(size_t n) {
  static std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.0;
  int rounds = 4;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--cputime")) use_cputime = true;
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
  }

  const int rows = 512;
  const std::pair<int, int> layers[] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768},
                                        {768, 50257}};
  std::vector<Case> cases;
  for (auto [k, n] : layers) {
    const std::string kn = std::to_string(k) + "x" + std::to_string(n);
    cases.push_back({"fwd  " + kn, false, true, rows, n, k, 0.0f});
    cases.push_back({"dinp " + kn, false, false, rows, k, n, 1.0f});
    cases.push_back({"dW   " + kn, true, false, n, k, rows, 1.0f});
  }

  std::printf("threads: ours %d, OpenBLAS %d (%s)\n", gptcuda::cpu_num_threads(),
              openblas_get_num_threads(), openblas_get_config());
  std::printf("%-16s %-7s %5s %6s %5s | %9s %9s | %9s %9s | %6s\n", "case (K x N)", "op", "M",
              "N", "K", "ours", "(median)", "OpenBLAS", "(median)", "ratio");
  double sum_ratio = 0;
  int count = 0;
  for (const Case& c : cases) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    const int lda = c.ta ? c.m : c.k, ldb = c.tb ? c.k : c.n, ldc = c.n;
    const std::vector<float> a = random_vector(size_t(c.m) * c.k);
    const std::vector<float> b = random_vector(size_t(c.k) * c.n);
    std::vector<float> out = random_vector(size_t(c.m) * c.n);
    const double gflop = 2.0 * c.m * c.n * c.k * 1e-9;

    // Alternate the two libraries over several rounds and keep each one's best:
    // on a shared machine, a burst of outside load then hits both alike.
    auto ours_fn = [&] {
      gptcuda::sgemm_blocked(c.ta, c.tb, c.m, c.n, c.k, 1.0f, a.data(), lda, b.data(), ldb,
                             c.beta, out.data(), ldc);
    };
    auto blas_fn = [&] {
      cblas_sgemm(CblasRowMajor, c.ta ? CblasTrans : CblasNoTrans,
                  c.tb ? CblasTrans : CblasNoTrans, c.m, c.n, c.k, 1.0f, a.data(), lda, b.data(),
                  ldb, c.beta, out.data(), ldc);
    };
    std::vector<double> ours_times, blas_times;
    for (int round = 0; round < rounds; ++round) {
      time_it(ours_fn, seconds / rounds, ours_times);
      time_it(blas_fn, seconds / rounds, blas_times);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let OpenBLAS threads park
    }
    const Timing ours = summarize(ours_times), blas = summarize(blas_times);

    const double ratio = blas.best_s / ours.best_s;
    sum_ratio += ratio;
    ++count;
    const char* op = c.ta ? "A^T.B" : c.tb ? "A.B^T" : "A.B";
    std::printf("%-16s %-7s %5d %6d %5d | %9.1f %9.1f | %9.1f %9.1f | %5.0f%%\n", c.name.c_str(),
                op, c.m, c.n, c.k, gflop / ours.best_s, gflop / ours.median_s, gflop / blas.best_s,
                gflop / blas.median_s, 100 * ratio);
    std::fflush(stdout);
  }
  if (count) std::printf("mean ratio (best times): %.0f%%\n", 100 * sum_ratio / count);
  return 0;
}
