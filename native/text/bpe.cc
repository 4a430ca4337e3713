#include "bpe.h"

#include <atomic>
#include <cstring>
#include <exception>
#include <queue>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "pretokenize.h"

namespace gptcuda::text {
namespace {

constexpr uint32_t kNoRank = UINT32_MAX;
// Pieces up to this many bytes merge with the quadratic scan (fastest for the
// few bytes of a typical word); longer ones, such as a 100k-character run,
// with a heap, which is O(n log n).
constexpr size_t kShortPiece = 128;
// Pieces repeat with a Zipf distribution, so most are cache hits; bounded so
// that a huge corpus cannot grow the cache without limit.
constexpr size_t kCachedPieceBytes = 64;
constexpr size_t kCacheEntries = 500000;

uint64_t hash_bytes(const uint8_t* p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  uint64_t w = 0;
  std::memcpy(&w, p + i, n - i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 29;
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 32);
}

}  // namespace

const uint32_t* BytesMap::find(const uint8_t* key, size_t len) const {
  if (slots_.empty()) return nullptr;
  uint64_t h = hash_bytes(key, len);
  size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.len_plus_one == 0) return nullptr;
    if (s.hash == h && s.len_plus_one == len + 1 && std::memcmp(keys_.data() + s.offset, key, len) == 0)
      return &s.value;
  }
}

void BytesMap::insert(const uint8_t* key, size_t len, uint32_t value) {
  if ((size_ + 1) * 2 > slots_.size()) grow();
  if (keys_.size() + len > UINT32_MAX) throw std::length_error("BytesMap: more than 4 GiB of keys");
  Slot s;
  s.hash = hash_bytes(key, len);
  s.offset = static_cast<uint32_t>(keys_.size());
  s.len_plus_one = static_cast<uint32_t>(len + 1);
  s.value = value;
  keys_.insert(keys_.end(), key, key + len);
  size_t mask = slots_.size() - 1;
  size_t i = s.hash & mask;
  while (slots_[i].len_plus_one != 0) i = (i + 1) & mask;
  slots_[i] = s;
  ++size_;
}

void BytesMap::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
  size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.len_plus_one == 0) continue;
    size_t i = s.hash & mask;
    while (slots_[i].len_plus_one != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void BytesMap::clear() {
  slots_.clear();
  keys_.clear();
  size_ = 0;
}

// What one thread needs while encoding: its piece cache (ids stored as
// [count, id...] runs in `ids`, the map holding the run's offset) and scratch
// space for merging.
struct Bpe::Worker {
  BytesMap cache;
  std::vector<uint32_t> ids;
  std::vector<uint32_t> starts;
  std::vector<uint32_t> pair_ranks;
};

Bpe::Bpe(const uint8_t* bytes, const uint32_t* lengths, const uint32_t* ranks, size_t count, std::string special,
         uint32_t special_id)
    : special_(std::move(special)), special_id_(special_id) {
  size_t off = 0;
  for (size_t t = 0; t < count; ++t) {
    if (lengths[t] == 0) throw std::invalid_argument("Bpe: token " + std::to_string(t) + " has no bytes");
    if (ranks_.find(bytes + off, lengths[t]))
      throw std::invalid_argument("Bpe: token " + std::to_string(t) + " repeats the bytes of an earlier token");
    ranks_.insert(bytes + off, lengths[t], ranks[t]);
    max_token_bytes_ = std::max<size_t>(max_token_bytes_, lengths[t]);
    off += lengths[t];
  }
  for (int b = 0; b < 256; ++b) {
    uint8_t byte = static_cast<uint8_t>(b);
    if (!ranks_.find(&byte, 1))
      throw std::invalid_argument("Bpe: byte " + std::to_string(b) + " has no token; every byte needs one");
  }
  if (special_.empty()) throw std::invalid_argument("Bpe: the special token's text is empty");
}

Bpe::~Bpe() = default;

uint32_t Bpe::rank(const uint8_t* p, size_t n) const {
  if (n > max_token_bytes_) return kNoRank;
  const uint32_t* r = ranks_.find(p, n);
  return r ? *r : kNoRank;
}

void Bpe::merge_short(const uint8_t* p, size_t n, Worker& w, std::vector<uint32_t>& out) const {
  // Part k is p[starts[k], starts[k + 1]); pair_ranks[k] ranks parts k and k + 1 merged.
  std::vector<uint32_t>& st = w.starts;
  std::vector<uint32_t>& pr = w.pair_ranks;
  st.resize(n + 1);
  for (size_t k = 0; k <= n; ++k) st[k] = static_cast<uint32_t>(k);
  pr.resize(n);
  for (size_t k = 0; k + 1 < n; ++k) pr[k] = rank(p + k, 2);
  pr[n - 1] = kNoRank;
  size_t parts = n;
  while (parts > 1) {
    uint32_t best = kNoRank;
    size_t at = 0;
    for (size_t k = 0; k + 1 < parts; ++k)
      if (pr[k] < best) best = pr[k], at = k;
    if (best == kNoRank) break;
    st.erase(st.begin() + at + 1);
    pr.erase(pr.begin() + at + 1);
    --parts;
    pr[at] = at + 1 < parts ? rank(p + st[at], st[at + 2] - st[at]) : kNoRank;
    if (at > 0) pr[at - 1] = rank(p + st[at - 1], st[at + 1] - st[at - 1]);
  }
  for (size_t k = 0; k < parts; ++k) out.push_back(rank(p + st[k], st[k + 1] - st[k]));
}

void Bpe::merge_long(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const {
  // Parts as a linked list named by their first byte; the heap holds
  // candidate merges ordered by (rank, position), so the top valid one is the
  // quadratic scan's choice. A part's version changes whenever the pair it
  // starts changes, which retires its older heap entries.
  struct Part {
    uint32_t end;
    int64_t prev, next;
    uint32_t version;
  };
  struct Candidate {
    uint32_t rank, start, version;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : start > o.start; }
  };
  std::vector<Part> parts(n);
  for (size_t k = 0; k < n; ++k)
    parts[k] = {static_cast<uint32_t>(k + 1), int64_t(k) - 1, k + 1 < n ? int64_t(k + 1) : -1, 0};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto offer = [&](size_t k) {
    Part& part = parts[k];
    if (part.next < 0) return;
    uint32_t r = rank(p + k, parts[part.next].end - k);
    if (r != kNoRank) heap.push({r, static_cast<uint32_t>(k), part.version});
  };
  for (size_t k = 0; k + 1 < n; ++k) offer(k);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    Part& part = parts[c.start];
    if (part.version != c.version) continue;
    Part& gone = parts[part.next];
    part.end = gone.end;
    part.next = gone.next;
    if (gone.next >= 0) parts[gone.next].prev = c.start;
    gone.version = UINT32_MAX;  // no heap entry of a merged-away part is valid again
    ++part.version;
    offer(c.start);
    if (part.prev >= 0) {
      ++parts[part.prev].version;
      offer(part.prev);
    }
  }
  for (int64_t k = 0; k >= 0; k = parts[k].next) out.push_back(rank(p + k, parts[k].end - k));
}

void Bpe::encode_piece(const uint8_t* p, size_t n, Worker& w, std::vector<uint32_t>& out) const {
  uint32_t whole = rank(p, n);
  if (whole != kNoRank) {
    out.push_back(whole);
    return;
  }
  bool cacheable = n <= kCachedPieceBytes;
  if (cacheable) {
    if (const uint32_t* at = w.cache.find(p, n)) {
      const uint32_t* run = w.ids.data() + *at;
      out.insert(out.end(), run + 1, run + 1 + run[0]);
      return;
    }
  }
  size_t first = out.size();
  if (n <= kShortPiece) merge_short(p, n, w, out);
  else merge_long(p, n, out);
  if (!cacheable) return;
  if (w.cache.size() >= kCacheEntries) {
    w.cache.clear();
    w.ids.clear();
  }
  w.cache.insert(p, n, static_cast<uint32_t>(w.ids.size()));
  w.ids.push_back(static_cast<uint32_t>(out.size() - first));
  w.ids.insert(w.ids.end(), out.begin() + first, out.end());
}

void Bpe::encode_range(const uint8_t* s, size_t begin, size_t end, Worker& w, std::vector<uint32_t>& out) const {
  std::string_view text(reinterpret_cast<const char*>(s), end);
  for (size_t pos = begin;;) {
    size_t special = text.find(special_, pos);
    size_t segment_end = special == std::string_view::npos ? end : special;
    for (size_t i = pos; i < segment_end;) {
      size_t j = piece_end(s, i, segment_end);
      encode_piece(s + i, j - i, w, out);
      i = j;
    }
    if (special == std::string_view::npos) return;
    out.push_back(special_id_);
    pos = special + special_.size();
  }
}

// A cut inside a special token moves to its end, which is a segment boundary.
size_t Bpe::cut_outside_special(const uint8_t* s, size_t cut, size_t n) const {
  std::string_view text(reinterpret_cast<const char*>(s), n);
  size_t from = cut >= special_.size() ? cut - special_.size() + 1 : 0;
  size_t at = text.find(special_, from);
  return at != std::string_view::npos && at < cut ? at + special_.size() : cut;
}

std::unique_ptr<Bpe::Worker> Bpe::take_worker() const {
  std::lock_guard<std::mutex> lock(workers_mutex_);
  if (idle_workers_.empty()) return std::make_unique<Worker>();
  std::unique_ptr<Worker> w = std::move(idle_workers_.back());
  idle_workers_.pop_back();
  return w;
}

void Bpe::give_back(std::unique_ptr<Worker> w) const {
  std::lock_guard<std::mutex> lock(workers_mutex_);
  idle_workers_.push_back(std::move(w));
}

std::vector<uint32_t> Bpe::encode(const uint8_t* s, size_t n, size_t chunks, size_t threads) const {
  std::vector<size_t> cuts{0};
  for (size_t k = 1; k < chunks; ++k) {
    size_t target = n / chunks * k + n % chunks * k / chunks;
    if (target <= cuts.back()) continue;
    size_t cut = cut_outside_special(s, find_safe_cut(s, target, n), n);
    if (cut > cuts.back() && cut < n) cuts.push_back(cut);
  }
  cuts.push_back(n);
  size_t count = cuts.size() - 1;
  std::vector<std::vector<uint32_t>> outs(count);
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    std::unique_ptr<Worker> w = take_worker();
    try {
      for (size_t k; (k = next.fetch_add(1)) < count;) {
        // Roughly one token per 3 bytes of text; a guess only saves regrowing.
        outs[k].reserve((cuts[k + 1] - cuts[k]) / 3 + 16);
        encode_range(s, cuts[k], cuts[k + 1], *w, outs[k]);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      failure = std::current_exception();
    }
    give_back(std::move(w));
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < std::min(threads, count); ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
  if (count == 1) return std::move(outs[0]);
  size_t total = 0;
  for (const auto& o : outs) total += o.size();
  std::vector<uint32_t> ids;
  ids.reserve(total);
  for (const auto& o : outs) ids.insert(ids.end(), o.begin(), o.end());
  return ids;
}

}  // namespace gptcuda::text
