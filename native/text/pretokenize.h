// GPT-2's pre-tokenizer, the regular expression
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// written out as a scanner over UTF-8, with the Unicode classes Node's regex
// engine uses (unicode_classes.h), so the pieces equal the ones js-tiktoken
// and tiktoken cut.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gptcuda::text {

// End of the piece that starts at s[i] in the text s[0, n) (i < n). The text
// ends at n for the pattern's look-ahead too: callers pass the end of the
// segment between special tokens, as tiktoken matches each segment alone.
size_t piece_end(const uint8_t* s, size_t i, size_t n);

// The first index p >= from at which the text can be cut without changing its
// pieces: the pieces of s[0, p) followed by those of s[p, n) are the pieces of
// s[0, n). Returns n when there is none. Special tokens are the caller's
// business (a cut may fall inside one).
size_t find_safe_cut(const uint8_t* s, size_t from, size_t n);

}  // namespace gptcuda::text
