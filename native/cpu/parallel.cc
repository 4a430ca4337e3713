#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#if defined(__linux__)
#include <sched.h>
#endif
#include <mutex>
#include <thread>
#include <vector>

namespace gptcuda {

int cpu_num_threads() {
  static const int n = [] {
    if (const char* env = std::getenv("GPTCUDA_NUM_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) return v;
    }
#if defined(__linux__)
    // The cores this process may run on (mpirun binds each rank to its own),
    // as OpenBLAS counts them: more threads than that would share cores.
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

namespace {

// Workers spin briefly for the next task before sleeping on the condition
// variable, and the caller spins briefly for the last chunk: decoding issues
// a hundred small parallel ops per token, and waking a sleeping thread costs
// more than most of them. The spin is short (kSpin), so an idle pool sleeps.
constexpr auto kSpin = std::chrono::microseconds(50);

// Polls `ready` for up to kSpin (the clock read every 64 polls: a pause costs
// from ten to over a hundred cycles depending on the CPU); true once it holds.
template <class Ready>
bool spin_until(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

class ThreadPool {
 public:
  explicit ThreadPool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { loop(i); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int workers() const { return static_cast<int>(threads_.size()); }

  // Runs task(i) for i in [0, count); the caller runs index 0.
  void run(int count, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> run_lock(run_mu_);  // one parallel op at a time
    {
      std::lock_guard<std::mutex> lock(mu_);
      task_ = &task;
      count_ = count;
      pending_.store(count - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    task(0);
    auto finished = [this] { return pending_.load(std::memory_order_acquire) == 0; };
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    if (!spin_until(finished)) {
      lock.lock();
      done_.wait(lock, finished);
    } else {
      lock.lock();
    }
    task_ = nullptr;
  }

 private:
  void loop(int worker) {
    uint64_t seen = 0;
    for (;;) {
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
      const std::function<void(int)>* task;
      int count;
      {
        // Under the lock the generation, task and count are one consistent snapshot (run() writes them under it).
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
        if (stop_) return;
        seen = generation_.load(std::memory_order_relaxed);
        task = task_;
        count = count_;
      }
      int index = worker + 1;
      if (index < count) {
        (*task)(index);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
          std::lock_guard<std::mutex> lock(mu_);  // the caller may be between its check and its wait
          done_.notify_one();
        }
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_, run_mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* task_ = nullptr;
  int count_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

ThreadPool& pool() {
  // Leaked on purpose: joining threads from a static destructor at process
  // exit can deadlock inside Node's shutdown.
  static ThreadPool* p = new ThreadPool(std::max(0, cpu_num_threads() - 1));
  return *p;
}

thread_local bool in_parallel_region = false;

}  // namespace

void parallel_for(size_t n, size_t min_chunk,
                  const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  size_t threads = static_cast<size_t>(cpu_num_threads());
  size_t max_chunks = std::max<size_t>(1, n / std::max<size_t>(1, min_chunk));
  size_t chunks = std::min(threads, max_chunks);
  if (chunks <= 1 || in_parallel_region) {
    fn(0, n);
    return;
  }
  size_t per = (n + chunks - 1) / chunks;
  pool().run(static_cast<int>(chunks), [&](int i) {
    size_t begin = static_cast<size_t>(i) * per;
    size_t end = std::min(n, begin + per);
    if (begin >= end) return;
    in_parallel_region = true;
    fn(begin, end);
    in_parallel_region = false;
  });
}

}  // namespace gptcuda
