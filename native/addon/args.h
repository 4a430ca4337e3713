// Argument checking for op bindings: every tensor is live, of the right dtype,
// on the same device, of the right shape; every scalar in range. A failed
// check throws a JS Error that names the op and lists every tensor argument.
#pragma once
#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "tensor.h"

namespace gptcuda {

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op) : info_(info), op_(op) {}

  NativeTensor* tensor(size_t i, const char* name, DType dtype = DType::F32);
  NativeTensor* any_tensor(size_t i, const char* name);  // any dtype
  // A tensor in a storage dtype of the typed ops: float32 or bfloat16.
  NativeTensor* storage_tensor(size_t i, const char* name);
  NativeTensor* optional_tensor(size_t i, const char* name, DType dtype = DType::F32);
  double number(size_t i, const char* name);
  double number_in(size_t i, const char* name, double lo, double hi);
  int integer(size_t i, const char* name, int64_t lo, int64_t hi);
  uint64_t uint53(size_t i, const char* name);
  bool boolean(size_t i, const char* name);
  // Whether optional argument i was passed (not missing or undefined).
  bool present(size_t i) const { return i < info_.Length() && !info_[i].IsUndefined(); }

  // Shape checks. dims are the expected shape; -1 matches anything.
  void expect_shape(NativeTensor* t, const char* name, const std::vector<int64_t>& dims);
  void expect_rank(NativeTensor* t, const char* name, size_t rank);
  void expect_numel(NativeTensor* t, const char* name, size_t n);
  int64_t last_dim(NativeTensor* t, const char* name);
  int64_t rows(NativeTensor* t, const char* name);  // numel / last dim

  // The one backend all tensor arguments live on (checked to agree).
  Backend* backend();

  // Runs fn on the tensors' backend now, or appends it to the open recording
  // (keeping every tensor argument's memory alive until the recording ran).
  void launch(std::function<void(Backend*)> fn) { launch_on(backend(), std::move(fn)); }
  void launch_on(Backend* backend, std::function<void(Backend*)> fn);

  [[noreturn]] void fail(const std::string& message);
  const char* op() const { return op_; }

 private:
  const Napi::CallbackInfo& info_;
  const char* op_;
  std::vector<std::pair<std::string, NativeTensor*>> tensors_;
};

}  // namespace gptcuda
