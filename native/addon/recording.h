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

// A recording pins the memory of every tensor it references while it is
// queued or running on a worker: dispose() of one of them meanwhile only marks
// it, and the worker's completion frees it. Outside a run a dispose frees at
// once (memory, GPU memory above all, should not wait for the recording to be
// garbage collected), and runRecording then refuses the recording, so a worker
// thread never touches freed memory.
class Recording {
 public:
  Recording() = default;
  Recording(const Recording&) = delete;
  Recording& operator=(const Recording&) = delete;

  void add(std::function<void()> step, const char* op) {
    steps_.push_back(std::move(step));
    ops_.push_back(op);
  }
  void keep_alive(std::shared_ptr<Storage> s) {
    if (s) storages_.push_back(std::move(s));
  }
  // Runs every step; on failure throws naming the op that failed.
  void run() const;
  // True when a tensor it uses was disposed: running it would compute on
  // memory the program gave up, so it is refused.
  bool uses_disposed() const;
  // Around a run, on the JS thread only (like dispose()); unpin performs the
  // frees deferred meanwhile.
  void pin();
  void unpin();
  bool empty() const { return steps_.empty(); }
  bool running = false;  // queued or running on a worker thread

 private:
  std::vector<std::function<void()>> steps_;
  std::vector<const char*> ops_;
  std::vector<std::shared_ptr<Storage>> storages_;
};

// The recording op calls append to, or null when ops run immediately.
Recording* open_recording();

void register_recording(Napi::Env env, Napi::Object exports);

}  // namespace gptcuda
