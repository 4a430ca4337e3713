#pragma once
#include <napi.h>

namespace gptcuda {
// Adds `ops`: one function per backend op, each validating its arguments.
void register_ops(Napi::Env env, Napi::Object exports);
}  // namespace gptcuda
