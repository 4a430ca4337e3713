// NativeTensor: the JS handle of a tensor. A tensor is a view (element offset
// + shape + dtype) into a Storage (one device allocation). Views share their
// storage; disposing the root tensor frees the memory at once and every view
// of it then reports "disposed" instead of touching freed memory.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "backend.h"

namespace gptcuda {

struct Storage {
  Backend* backend = nullptr;
  void* data = nullptr;
  size_t bytes = 0;
  bool freed = false;
  // Recordings queued or running on a worker thread that use this memory; a
  // dispose() meanwhile only marks it, and the last user frees it.
  int pins = 0;
  bool free_requested = false;

  ~Storage() { release_memory(); }
  void free_now() {
    freed = true;  // unusable from JS from now on
    if (pins > 0) free_requested = true;
    else release_memory();
  }
  void unpin() {
    if (--pins == 0 && free_requested) release_memory();
  }

 private:
  void release_memory() noexcept {
    // Runs from destructors (garbage collection): never throws. release() only
    // fails for a pointer the backend did not allocate, which cannot happen here.
    try {
      if (data) backend->release(data);
    } catch (...) {
    }
    data = nullptr;
  }
};

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object New(Napi::Env env, std::shared_ptr<Storage> storage,
                          size_t offset, std::vector<int64_t> shape, DType dtype,
                          bool is_root);
  static bool IsTensor(Napi::Env env, const Napi::Value& v);

  explicit NativeTensor(const Napi::CallbackInfo& info);

  // For ops: a live pointer to this view's first element.
  void* data() const;
  bool disposed() const { return disposed_ || !storage_ || storage_->freed; }
  DType dtype() const { return dtype_; }
  // Only for live tensors (a disposed view has dropped its storage): callers
  // check disposed() first, as Args does for every op argument.
  DeviceKind device() const { return storage_->backend->kind(); }
  Backend* backend() const { return storage_->backend; }
  const std::vector<int64_t>& shape() const { return shape_; }
  size_t numel() const;
  const Storage* storage() const { return storage_.get(); }
  std::shared_ptr<Storage> storage_ref() const { return storage_; }
  std::string describe() const;  // e.g. "float32[2, 3] on cpu"

 private:
  Napi::Value GetShape(const Napi::CallbackInfo& info);
  Napi::Value GetDType(const Napi::CallbackInfo& info);
  Napi::Value GetDevice(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value GetOffset(const Napi::CallbackInfo& info);
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  // Throws "<what>: tensor ... was disposed; ..." when this tensor is no longer usable.
  void require_live(Napi::Env env, const char* what) const;

  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // in elements of dtype_
  std::vector<int64_t> shape_;
  DType dtype_ = DType::F32;
  bool is_root_ = false;
  bool disposed_ = false;
};

std::string shape_string(const std::vector<int64_t>& shape);

// The largest element count a shape may have: a JS number holds it exactly,
// and any product of its entries (rows, bytes of an 8-byte type) stays far
// from 2^63, so size arithmetic elsewhere cannot wrap.
constexpr uint64_t kMaxElements = 9007199254740991ULL;  // 2^53 - 1

// The element count of shape, or false when the product of its non-zero entries
// exceeds kMaxElements (a wrapped product would let a view read or write
// outside its memory). Zero entries are skipped for the bound so an empty
// tensor of a huge shape is refused too rather than wrapping to a small size.
bool checked_numel(const std::vector<int64_t>& shape, uint64_t* out);
const char* device_name(DeviceKind d);

}  // namespace gptcuda
