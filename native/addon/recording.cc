#include "recording.h"

#include <stdexcept>

namespace gptcuda {
namespace {

std::unique_ptr<Recording> g_open;

struct RecordingHandle {
  std::shared_ptr<Recording> rec;
};

class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<Recording> rec)
      : Napi::AsyncWorker(env), rec_(std::move(rec)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      rec_->run();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    finish();
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    finish();
    deferred_.Reject(e.Value());
  }

 private:
  void finish() {
    rec_->unpin();  // frees what was disposed during the run
    rec_->running = false;
  }
  // Shared, not the handle: JS may drop (and GC finalize) the handle while
  // the worker still runs.
  std::shared_ptr<Recording> rec_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value BeginRecording(const Napi::CallbackInfo& info) {
  if (g_open) throw Napi::Error::New(info.Env(), "beginRecording: a recording is already open");
  g_open = std::make_unique<Recording>();
  return info.Env().Undefined();
}

Napi::Value EndRecording(const Napi::CallbackInfo& info) {
  if (!g_open) throw Napi::Error::New(info.Env(), "endRecording: no recording is open");
  auto* handle = new RecordingHandle{std::shared_ptr<Recording>(g_open.release())};
  return Napi::External<RecordingHandle>::New(info.Env(), handle,
                                              [](Napi::Env, RecordingHandle* h) { delete h; });
}

Napi::Value RunRecording(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(env, "runRecording: expected a recording from endRecording()");
  auto* handle = info[0].As<Napi::External<RecordingHandle>>().Data();
  if (handle->rec->running) throw Napi::Error::New(env, "runRecording: this recording is already running");
  if (handle->rec->uses_disposed()) {
    throw Napi::Error::New(env,
                           "runRecording: a tensor this recording uses was disposed; record the ops again "
                           "with live tensors, or dispose them only after the recording has run");
  }
  handle->rec->running = true;
  handle->rec->pin();
  auto* worker = new RunWorker(env, handle->rec);
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace

Recording* open_recording() { return g_open.get(); }

void Recording::run() const {
  for (size_t i = 0; i < steps_.size(); ++i) {
    try {
      steps_[i]();
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(ops_[i]) + ": " + e.what());
    }
  }
}

// Pins change on the JS thread only (runRecording and the worker's
// completion), the thread that disposes tensors, so the counters need no locking.
bool Recording::uses_disposed() const {
  for (auto& s : storages_)
    if (s->freed) return true;
  return false;
}
void Recording::pin() {
  for (auto& s : storages_) s->pins++;
}
void Recording::unpin() {
  for (auto& s : storages_) s->unpin();
}

void register_recording(Napi::Env env, Napi::Object exports) {
  exports.Set("beginRecording", Napi::Function::New(env, BeginRecording, "beginRecording"));
  exports.Set("endRecording", Napi::Function::New(env, EndRecording, "endRecording"));
  exports.Set("runRecording", Napi::Function::New(env, RunRecording, "runRecording"));
}

}  // namespace gptcuda
