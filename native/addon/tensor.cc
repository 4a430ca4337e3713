#include "tensor.h"

#include <sstream>

#include "backends.h"
#include "js_errors.h"

namespace gptcuda {

namespace {
Napi::FunctionReference* constructor = nullptr;
// Construction from JS is reserved to the addon's own factory functions.
bool constructing_from_native = false;
}  // namespace

const char* device_name(DeviceKind d) { return d == DeviceKind::CPU ? "cpu" : "cuda"; }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

bool checked_numel(const std::vector<int64_t>& shape, uint64_t* out) {
  uint64_t nonzero = 1;
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d == 0) {
      empty = true;
      continue;
    }
    if (__builtin_mul_overflow(nonzero, static_cast<uint64_t>(d), &nonzero) || nonzero > kMaxElements)
      return false;
  }
  *out = empty ? 0 : nonzero;
  return true;
}

void NativeTensor::require_live(Napi::Env env, const char* what) const {
  if (disposed())
    throw Napi::Error::New(env, std::string(what) + ": tensor " + dtype_name(dtype_) + shape_string(shape_) +
                                    " was disposed; it can no longer be used (create a new tensor, or "
                                    "dispose it only after its last use)");
}

Napi::Function NativeTensor::Init(Napi::Env env) {
  Napi::Function fn = DefineClass(
      env, "NativeTensor",
      {
          InstanceAccessor<&NativeTensor::GetShape>("shape"),
          InstanceAccessor<&NativeTensor::GetDType>("dtype"),
          InstanceAccessor<&NativeTensor::GetDevice>("device"),
          InstanceAccessor<&NativeTensor::GetDisposed>("disposed"),
          InstanceAccessor<&NativeTensor::GetOffset>("offset"),
          InstanceMethod<&NativeTensor::View>("view"),
          InstanceMethod<&NativeTensor::Dispose>("dispose"),
          InstanceMethod<&NativeTensor::Read>("read"),
          InstanceMethod<&NativeTensor::Write>("write"),
      });
  constructor = new Napi::FunctionReference(Napi::Persistent(fn));
  return fn;
}

bool NativeTensor::IsTensor(Napi::Env env, const Napi::Value& v) {
  return v.IsObject() && constructor && v.As<Napi::Object>().InstanceOf(constructor->Value());
}

NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
  if (!constructing_from_native) {
    throw Napi::TypeError::New(info.Env(),
                               "NativeTensor cannot be constructed directly; use Tensor.zeros/fromArray");
  }
}

Napi::Object NativeTensor::New(Napi::Env env, std::shared_ptr<Storage> storage, size_t offset,
                               std::vector<int64_t> shape, DType dtype, bool is_root) {
  constructing_from_native = true;
  Napi::Object obj;
  try {
    obj = constructor->New({});
  } catch (...) {
    constructing_from_native = false;
    throw;
  }
  constructing_from_native = false;
  NativeTensor* t = Unwrap(obj);
  t->storage_ = std::move(storage);
  t->offset_ = offset;
  t->shape_ = std::move(shape);
  t->dtype_ = dtype;
  t->is_root_ = is_root;
  return obj;
}

// Shapes are checked with checked_numel when a tensor or view is made, so
// this product cannot wrap.
size_t NativeTensor::numel() const {
  size_t n = 1;
  for (int64_t d : shape_) n *= static_cast<size_t>(d);
  return n;
}

void* NativeTensor::data() const {
  return static_cast<char*>(storage_->data) + offset_ * dtype_size(dtype_);
}

std::string NativeTensor::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype_) << shape_string(shape_);
  if (storage_ && storage_->backend) os << " on " << device_name(device());
  if (disposed()) os << " (disposed)";
  return os.str();
}

// The getters refuse a disposed tensor too: its storage may be gone, and a
// shape or device of freed memory invites using it.
Napi::Value NativeTensor::GetShape(const Napi::CallbackInfo& info) {
  require_live(info.Env(), "shape");
  Napi::Array arr = Napi::Array::New(info.Env(), shape_.size());
  for (size_t i = 0; i < shape_.size(); ++i) arr.Set(i, Napi::Number::New(info.Env(), double(shape_[i])));
  return arr;
}
Napi::Value NativeTensor::GetDType(const Napi::CallbackInfo& info) {
  require_live(info.Env(), "dtype");
  return Napi::String::New(info.Env(), dtype_name(dtype_));
}
Napi::Value NativeTensor::GetDevice(const Napi::CallbackInfo& info) {
  require_live(info.Env(), "device");
  return Napi::String::New(info.Env(), device_name(device()));
}
Napi::Value NativeTensor::GetDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed());
}
Napi::Value NativeTensor::GetOffset(const Napi::CallbackInfo& info) {
  require_live(info.Env(), "offset");
  return Napi::Number::New(info.Env(), double(offset_));
}

// view(offsetElements, shape): a contiguous window of this tensor's elements.
Napi::Value NativeTensor::View(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_live(env, "view");
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsArray())
    throw Napi::TypeError::New(env, "view(offset: number, shape: number[])");
  double off = info[0].As<Napi::Number>().DoubleValue();
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    // Range first: casting a double beyond int64 to an integer is undefined.
    if (!(d >= 0 && d <= double(kMaxElements)) || d != static_cast<double>(static_cast<int64_t>(d)))
      throw Napi::RangeError::New(env, "view: shape entries must be non-negative integers of at most 2^53 - 1");
    shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t n = 0;
  if (!checked_numel(shape, &n))
    throw Napi::RangeError::New(env, "view: shape " + shape_string(shape) +
                                         " has more than 2^53 - 1 elements; it cannot fit in " + describe());
  // The offset is checked in 64-bit integers: off + n must not wrap past the end.
  uint64_t end = 0;
  bool fits = off >= 0 && off <= double(kMaxElements) && off == static_cast<double>(static_cast<uint64_t>(off)) &&
              !__builtin_add_overflow(static_cast<uint64_t>(off), n, &end) && end <= numel();
  if (!fits) {
    std::ostringstream os;
    os << "view: offset " << off << " with shape " << shape_string(shape) << " does not fit in " << describe()
       << "; the offset must be an integer with offset + elements <= " << numel();
    throw Napi::RangeError::New(env, os.str());
  }
  return New(env, storage_, offset_ + static_cast<size_t>(off), std::move(shape), dtype_, false);
}

Napi::Value NativeTensor::Dispose(const Napi::CallbackInfo& info) {
  if (is_root_ && storage_) storage_->free_now();
  disposed_ = true;
  storage_.reset();
  return info.Env().Undefined();
}

// read(): copies the elements to a new Float32Array / Int32Array. On a GPU this
// is where queued work is waited for, so its asynchronous failures surface here.
Napi::Value NativeTensor::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_live(env, "read");
  size_t n = numel();
  return js_errors(env, "read: ", [&]() -> Napi::Value {
    if (dtype_ == DType::F32) {
      auto arr = Napi::Float32Array::New(env, n);
      if (n) backend()->download(arr.Data(), data(), n * 4);
      return arr;
    }
    if (dtype_ == DType::I32) {
      auto arr = Napi::Int32Array::New(env, n);
      if (n) backend()->download(arr.Data(), data(), n * 4);
      return arr;
    }
    auto arr = Napi::Uint16Array::New(env, n);
    if (n) backend()->download(arr.Data(), data(), n * 2);
    return arr;
  });
}

// write(typedArray): copies exactly numel elements of matching dtype in.
Napi::Value NativeTensor::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_live(env, "write");
  if (info.Length() != 1 || !info[0].IsTypedArray())
    throw Napi::TypeError::New(env, "write: expected a Float32Array or Int32Array");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  napi_typedarray_type want = dtype_ == DType::F32   ? napi_float32_array
                              : dtype_ == DType::I32 ? napi_int32_array
                                                     : napi_uint16_array;
  if (ta.TypedArrayType() != want)
    throw Napi::TypeError::New(env, std::string("write: tensor is ") + dtype_name(dtype_) +
                                        " but the array is of another type");
  if (ta.ElementLength() != numel())
    throw Napi::RangeError::New(env, "write: array has " + std::to_string(ta.ElementLength()) +
                                         " elements but tensor " + describe() + " has " +
                                         std::to_string(numel()));
  if (numel()) {
    const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    js_errors(env, "write: ", [&] { backend()->upload(data(), src, numel() * dtype_size(dtype_)); });
  }
  return env.Undefined();
}

}  // namespace gptcuda
