#include "parallel.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
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
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

namespace {

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
      pending_ = count - 1;
      ++generation_;
    }
    wake_.notify_all();
    task(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
  }

 private:
  void loop(int worker) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* task;
      int count;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        task = task_;
        count = count_;
      }
      int index = worker + 1;
      if (index < count) {
        (*task)(index);
        std::lock_guard<std::mutex> lock(mu_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_, run_mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* task_ = nullptr;
  int count_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
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
