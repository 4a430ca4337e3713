// Text processing that is not tensor math: the BPE tokenizer (native/text).
#pragma once
#include <napi.h>

namespace gptcuda {
// Adds `BpeTokenizer`: new BpeTokenizer(bytes, lengths, ranks, special, specialId),
// .encode(text, chunks, threads) -> Uint32Array and .encodeAsync(...) -> Promise.
void register_text(Napi::Env env, Napi::Object exports);
}  // namespace gptcuda
