#include "pretokenize.h"

#include <vector>

#include "unicode_classes.h"

namespace gptcuda::text {
namespace {

constexpr uint32_t kCodePoints = 0x110000;

// One byte per code point (1.1 MB), expanded once from the generated runs: a
// lookup per character is cheaper than a binary search over 1,600 runs.
const uint8_t* class_table() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(kCodePoints);
    for (int r = 0; r < kClassRuns; ++r) {
      uint32_t end = r + 1 < kClassRuns ? kClassRunStart[r + 1] : kCodePoints;
      for (uint32_t cp = kClassRunStart[r]; cp < end; ++cp) t[cp] = kClassRunClass[r];
    }
    return t;
  }();
  return table.data();
}

struct CodePoint {
  uint32_t cp;
  uint32_t len;
};

// The text comes from V8's UTF-8 conversion, so it is well formed; a stray
// byte (from a direct caller) is read as one "other" character, never past n.
inline CodePoint decode(const uint8_t* s, size_t i, size_t n) {
  uint8_t b = s[i];
  if (b < 0x80) return {b, 1};
  uint32_t len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
  if (len == 1 || i + len > n) return {0xfffd, 1};
  uint32_t cp = b & (0x7f >> len);
  for (uint32_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 0x3f);
  return {cp < kCodePoints ? cp : 0xfffd, len};
}

inline CharClass class_of(uint32_t cp) { return static_cast<CharClass>(class_table()[cp]); }

size_t run_end(const uint8_t* s, size_t j, size_t n, CharClass cls, const uint8_t* table) {
  while (j < n) {
    CodePoint c = decode(s, j, n);
    if (table[c.cp] != cls) break;
    j += c.len;
  }
  return j;
}

bool is_contraction_letter(uint8_t c) { return c == 's' || c == 't' || c == 'm' || c == 'd'; }

}  // namespace

size_t piece_end(const uint8_t* s, size_t i, size_t n) {
  const uint8_t* table = class_table();
  // 's 't 're 've 'm 'll 'd, lower case only: the pattern has no (?i).
  if (s[i] == '\'' && i + 1 < n) {
    uint8_t c1 = s[i + 1];
    if (is_contraction_letter(c1)) return i + 2;
    if (i + 2 < n) {
      uint8_t c2 = s[i + 2];
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i + 3;
    }
  }
  CodePoint c = decode(s, i, n);
  CharClass cls = static_cast<CharClass>(table[c.cp]);
  size_t j = i + c.len;
  // " ?X+": one ASCII space may lead a run of letters, numbers or others.
  if (c.cp == ' ' && j < n) {
    CodePoint next = decode(s, j, n);
    CharClass next_cls = static_cast<CharClass>(table[next.cp]);
    if (next_cls != kSpace) {
      cls = next_cls;
      j += next.len;
    }
  }
  if (cls != kSpace) return run_end(s, j, n, cls, table);
  // "\s+(?!\S)" backs off one character so that a space can lead the next
  // word; a single space character before a non-space falls to "\s+".
  size_t last = i;
  while (j < n) {
    CodePoint w = decode(s, j, n);
    if (table[w.cp] != kSpace) break;
    last = j;
    j += w.len;
  }
  if (j == n) return n;
  return last > i ? last : j;
}

// A cut at p is safe when the piece before p ends at p and cannot reach or
// look beyond it, and the piece at p starts fresh (matching at p never looks
// back). With a, b non-space characters, three shapes qualify:
//  (1) "a|b" with a and b of different classes, neither an apostrophe: runs
//      end at a class change, and only contractions join an apostrophe to
//      the letters after it;
//  (2) "a| b": the space can only lead the piece " b...", and a's piece ends
//      at the space either way;
//  (3) "a\n|b" with any single space character other than U+0020: it is its
//      own piece, both through "\s+" before b and through "\s+(?!\S)" at the
//      end of the text.
size_t find_safe_cut(const uint8_t* s, size_t from, size_t n) {
  size_t i = from;
  while (i < n && (s[i] & 0xc0) == 0x80) ++i;  // to a character boundary
  if (i >= n) return n;
  struct Char {
    size_t at;
    uint32_t cp;
    CharClass cls;
  };
  auto read = [&](size_t at) {
    CodePoint c = decode(s, at, n);
    return std::pair<Char, size_t>{{at, c.cp, class_of(c.cp)}, at + c.len};
  };
  auto [c0, j0] = read(i);
  if (j0 >= n) return n;
  auto [c1, j1] = read(j0);
  for (;;) {
    bool c0_word = c0.cls != kSpace, c1_word = c1.cls != kSpace;
    if (c0_word && c1_word && c0.cls != c1.cls && c0.cp != '\'' && c1.cp != '\'') return c1.at;
    if (j1 >= n) return n;
    auto [c2, j2] = read(j1);
    bool c2_word = c2.cls != kSpace;
    if (c0_word && c1.cp == ' ' && c2_word) return c1.at;
    if (c0_word && c1.cls == kSpace && c1.cp != ' ' && c2_word) return c2.at;
    c0 = c1;
    c1 = c2;
    j1 = j2;
  }
}

}  // namespace gptcuda::text
