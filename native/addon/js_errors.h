// The one translation of native failures into JS exceptions at the binding
// boundary.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>

namespace gptcuda {

// Runs fn; a C++ exception becomes a JS Error (message prefixed), JS errors pass through.
template <class F>
auto js_errors(Napi::Env env, const std::string& prefix, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, prefix + e.what());
  }
}

}  // namespace gptcuda
