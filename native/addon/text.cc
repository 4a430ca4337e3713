#include "text.h"

#include <cstring>
#include <memory>
#include <string>

#include "../text/bpe.h"
#include "js_errors.h"

namespace gptcuda {
namespace {

Napi::TypedArrayOf<uint32_t> to_uint32_array(Napi::Env env, const std::vector<uint32_t>& ids) {
  auto arr = Napi::TypedArrayOf<uint32_t>::New(env, ids.size());
  if (!ids.empty()) std::memcpy(arr.Data(), ids.data(), ids.size() * sizeof(uint32_t));
  return arr;
}

// The text, cut count and thread count of an encode call. The text is copied
// as UTF-8 on the JS thread; V8 writes lone surrogates as U+FFFD there, which
// is what TextEncoder (and so js-tiktoken) does.
struct EncodeArgs {
  std::string text;
  size_t chunks;
  size_t threads;
};

EncodeArgs parse_encode_args(const Napi::CallbackInfo& info, const char* method) {
  Napi::Env env = info.Env();
  auto count = [&](size_t i, const char* what) -> size_t {
    double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : 0;
    if (!(d >= 1 && d <= 4096) || d != static_cast<double>(static_cast<size_t>(d)))
      throw Napi::RangeError::New(env, std::string("BpeTokenizer.") + method + ": " + what +
                                           " must be an integer in [1, 4096]");
    return static_cast<size_t>(d);
  };
  if (info.Length() != 3 || !info[0].IsString())
    throw Napi::TypeError::New(env, std::string("BpeTokenizer.") + method + "(text: string, chunks, threads)");
  return {info[0].As<Napi::String>().Utf8Value(), count(1, "chunks"), count(2, "threads")};
}

class EncodeWorker : public Napi::AsyncWorker {
 public:
  EncodeWorker(Napi::Env env, std::shared_ptr<const text::Bpe> bpe, EncodeArgs args)
      : Napi::AsyncWorker(env), bpe_(std::move(bpe)), args_(std::move(args)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      ids_ = bpe_->encode(reinterpret_cast<const uint8_t*>(args_.text.data()), args_.text.size(), args_.chunks,
                          args_.threads);
    } catch (const std::exception& e) {
      SetError(std::string("BpeTokenizer.encodeAsync: ") + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(to_uint32_array(Env(), ids_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  // Shared: the JS object may be collected while the worker runs.
  std::shared_ptr<const text::Bpe> bpe_;
  EncodeArgs args_;
  std::vector<uint32_t> ids_;
  Napi::Promise::Deferred deferred_;
};

class BpeTokenizer : public Napi::ObjectWrap<BpeTokenizer> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BpeTokenizer",
                       {InstanceMethod("encode", &BpeTokenizer::Encode),
                        InstanceMethod("encodeAsync", &BpeTokenizer::EncodeAsync)});
  }

  explicit BpeTokenizer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpeTokenizer>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 5 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
        !info[3].IsString() || !info[4].IsNumber())
      throw Napi::TypeError::New(env,
                                 "new BpeTokenizer(bytes: Uint8Array, lengths: Uint32Array, ranks: Uint32Array, "
                                 "special: string, specialId: number)");
    auto bytes = info[0].As<Napi::TypedArray>();
    auto lengths = info[1].As<Napi::TypedArray>();
    auto ranks = info[2].As<Napi::TypedArray>();
    if (bytes.TypedArrayType() != napi_uint8_array || lengths.TypedArrayType() != napi_uint32_array ||
        ranks.TypedArrayType() != napi_uint32_array || lengths.ElementLength() != ranks.ElementLength())
      throw Napi::TypeError::New(env, "new BpeTokenizer: bytes must be a Uint8Array, lengths and ranks Uint32Arrays of one length");
    auto lens = lengths.As<Napi::Uint32Array>();
    size_t total = 0;
    for (size_t t = 0; t < lens.ElementLength(); ++t) total += lens[t];
    if (total != bytes.ElementLength())
      throw Napi::RangeError::New(env, "new BpeTokenizer: the lengths add up to " + std::to_string(total) +
                                           " bytes but bytes holds " + std::to_string(bytes.ElementLength()));
    js_errors(env, "new BpeTokenizer: ", [&] {
      bpe_ = std::make_shared<const text::Bpe>(bytes.As<Napi::Uint8Array>().Data(), lens.Data(),
                                               ranks.As<Napi::Uint32Array>().Data(), lens.ElementLength(),
                                               info[3].As<Napi::String>().Utf8Value(),
                                               info[4].As<Napi::Number>().Uint32Value());
    });
  }

 private:
  Napi::Value Encode(const Napi::CallbackInfo& info) {
    EncodeArgs a = parse_encode_args(info, "encode");
    return js_errors(info.Env(), "BpeTokenizer.encode: ", [&] {
      return to_uint32_array(info.Env(), bpe_->encode(reinterpret_cast<const uint8_t*>(a.text.data()),
                                                      a.text.size(), a.chunks, a.threads));
    });
  }
  Napi::Value EncodeAsync(const Napi::CallbackInfo& info) {
    auto* w = new EncodeWorker(info.Env(), bpe_, parse_encode_args(info, "encodeAsync"));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  std::shared_ptr<const text::Bpe> bpe_;
};

}  // namespace

void register_text(Napi::Env env, Napi::Object exports) { exports.Set("BpeTokenizer", BpeTokenizer::Init(env)); }

}  // namespace gptcuda
