#include "args.h"

#include <cmath>
#include <sstream>

#include "backends.h"
#include "recording.h"

namespace gptcuda {

void Args::fail(const std::string& message) {
  std::ostringstream os;
  os << op_ << ": " << message;
  if (!tensors_.empty()) {
    os << " (arguments:";
    for (size_t i = 0; i < tensors_.size(); ++i)
      os << (i ? ", " : " ") << tensors_[i].first << " " << tensors_[i].second->describe();
    os << ")";
  }
  throw Napi::Error::New(info_.Env(), os.str());
}

NativeTensor* Args::optional_tensor(size_t i, const char* name, DType dtype) {
  if (i >= info_.Length() || info_[i].IsNull() || info_[i].IsUndefined()) return nullptr;
  return tensor(i, name, dtype);
}

NativeTensor* Args::tensor(size_t i, const char* name, DType dtype) {
  NativeTensor* t = any_tensor(i, name);
  if (t->dtype() != dtype)
    fail(std::string(name) + " must be " + dtype_name(dtype) + " but is " + dtype_name(t->dtype()));
  return t;
}

NativeTensor* Args::storage_tensor(size_t i, const char* name) {
  NativeTensor* t = any_tensor(i, name);
  if (t->dtype() != DType::F32 && t->dtype() != DType::BF16)
    fail(std::string(name) + " must be float32 or bfloat16 but is " + dtype_name(t->dtype()));
  return t;
}

NativeTensor* Args::any_tensor(size_t i, const char* name) {
  if (i >= info_.Length() || !NativeTensor::IsTensor(info_.Env(), info_[i]))
    fail(std::string("argument ") + std::to_string(i) + " (" + name + ") must be a Tensor");
  NativeTensor* t = NativeTensor::Unwrap(info_[i].As<Napi::Object>());
  if (t->disposed()) fail(std::string(name) + " was disposed; it can no longer be used");
  tensors_.emplace_back(name, t);
  return t;
}

double Args::number(size_t i, const char* name) {
  if (i >= info_.Length() || !info_[i].IsNumber())
    fail(std::string("argument ") + std::to_string(i) + " (" + name + ") must be a number");
  double v = info_[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v)) fail(std::string(name) + " must be finite");
  return v;
}

double Args::number_in(size_t i, const char* name, double lo, double hi) {
  double v = number(i, name);
  if (v < lo || v > hi) {
    std::ostringstream os;
    os << name << " must be in [" << lo << ", " << hi << "] (got " << v << ")";
    fail(os.str());
  }
  return v;
}

int Args::integer(size_t i, const char* name, int64_t lo, int64_t hi) {
  double v = number(i, name);
  if (v != std::floor(v) || v < double(lo) || v > double(hi)) {
    std::ostringstream os;
    os << name << " must be an integer in [" << lo << ", " << hi << "] (got " << v << ")";
    fail(os.str());
  }
  return static_cast<int>(v);
}

uint64_t Args::uint53(size_t i, const char* name) {
  double v = number(i, name);
  if (v != std::floor(v) || v < 0 || v > 9007199254740991.0)
    fail(std::string(name) + " must be a non-negative safe integer");
  return static_cast<uint64_t>(v);
}

bool Args::boolean(size_t i, const char* name) {
  if (i >= info_.Length() || !info_[i].IsBoolean())
    fail(std::string("argument ") + std::to_string(i) + " (" + name + ") must be a boolean");
  return info_[i].As<Napi::Boolean>().Value();
}

void Args::expect_shape(NativeTensor* t, const char* name, const std::vector<int64_t>& dims) {
  if (!t) return;
  const auto& s = t->shape();
  bool ok = s.size() == dims.size();
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = dims[i] < 0 || dims[i] == s[i];
  if (!ok) {
    std::ostringstream os;
    os << name << " must have shape [";
    for (size_t i = 0; i < dims.size(); ++i) {
      os << (i ? ", " : "");
      if (dims[i] < 0) os << "*"; else os << dims[i];
    }
    os << "] but has " << shape_string(s);
    fail(os.str());
  }
}

void Args::expect_rank(NativeTensor* t, const char* name, size_t rank) {
  if (t->shape().size() != rank)
    fail(std::string(name) + " must have " + std::to_string(rank) + " dimensions but has shape " +
         shape_string(t->shape()));
}

void Args::expect_numel(NativeTensor* t, const char* name, size_t n) {
  if (t && t->numel() != n)
    fail(std::string(name) + " must have " + std::to_string(n) + " elements but has shape " +
         shape_string(t->shape()));
}

int64_t Args::last_dim(NativeTensor* t, const char* name) {
  if (t->shape().empty()) fail(std::string(name) + " must have at least one dimension");
  return t->shape().back();
}

int64_t Args::rows(NativeTensor* t, const char* name) {
  last_dim(t, name);  // checks there is one
  // Checked although every tensor's shape product is bounded (kMaxElements),
  // so a future way to make a shape cannot turn this into a wrapped row count.
  int64_t n = 1;
  for (size_t i = 0; i + 1 < t->shape().size(); ++i)
    if (__builtin_mul_overflow(n, t->shape()[i], &n)) fail(std::string(name) + "'s shape " + shape_string(t->shape()) + " is too large");
  return n;
}

Backend* Args::backend() {
  if (tensors_.empty()) fail("no tensor arguments");
  DeviceKind kind = tensors_[0].second->device();
  for (auto& [name, t] : tensors_) {
    if (t->device() != kind)
      fail(std::string("all tensors must be on the same device, but ") + name + " is on " +
           device_name(t->device()) + " and " + tensors_[0].first + " on " + device_name(kind));
  }
  return tensors_[0].second->backend();
}

}  // namespace gptcuda

namespace gptcuda {

void Args::launch_on(Backend* backend, std::function<void(Backend*)> fn) {
  if (Recording* rec = open_recording()) {
    for (auto& entry : tensors_) rec->keep_alive(entry.second->storage_ref());
    rec->add([backend, fn = std::move(fn)] { fn(backend); }, op_);
    return;
  }
  fn(backend);
}

}  // namespace gptcuda
