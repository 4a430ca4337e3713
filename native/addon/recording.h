// Recordings: a sequence of already-validated op calls captured on the JS
// thread and replayed later on a worker thread (Napi::AsyncWorker), so long
// work such as a generation step runs off the event loop.
//   beginRecording(); ...ops...; const rec = endRecording(); await runRecording(rec);
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace gptcuda {

class Recording {
 public:
  void add(std::function<void()> step, const char* op) {
    steps_.push_back(std::move(step));
    ops_.push_back(op);
  }
  void keep_alive(std::shared_ptr<Storage> s) {
    if (s) storages_.push_back(std::move(s));
  }
  // Runs every step; on failure throws naming the op that failed.
  void run() const;
  void pin();
  void unpin();
  bool empty() const { return steps_.empty(); }

 private:
  std::vector<std::function<void()>> steps_;
  std::vector<const char*> ops_;
  std::vector<std::shared_ptr<Storage>> storages_;
};

// The recording op calls append to, or null when ops run immediately.
Recording* open_recording();

void register_recording(Napi::Env env, Napi::Object exports);

}  // namespace gptcuda
