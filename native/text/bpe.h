// Byte-pair encoding with a rank table (tiktoken's algorithm: repeatedly merge
// the adjacent pair whose merged bytes have the lowest rank, the leftmost on a
// tie), over text cut into pieces by GPT-2's pre-tokenizer, with one special
// token (e.g. <|endoftext|>) recognised in the text.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace gptcuda::text {

// Byte strings to 32-bit values, open addressing; keys are copied into one
// arena, so a lookup needs no std::string.
class BytesMap {
 public:
  const uint32_t* find(const uint8_t* key, size_t len) const;
  // The key must not be present yet.
  void insert(const uint8_t* key, size_t len, uint32_t value);
  size_t size() const { return size_; }
  void clear();

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0;
    uint32_t len_plus_one = 0;  // 0: empty
    uint32_t value = 0;
  };
  void grow();
  std::vector<Slot> slots_;
  std::vector<uint8_t> keys_;
  size_t size_ = 0;
};

class Bpe {
 public:
  // Token t has the bytes bytes[off_t, off_t + lengths[t]) (offsets running
  // over lengths) and the rank ranks[t], which is also its id.
  Bpe(const uint8_t* bytes, const uint32_t* lengths, const uint32_t* ranks, size_t count, std::string special,
      uint32_t special_id);
  ~Bpe();

  // Token ids of the UTF-8 text s[0, n). The text is cut at up to `chunks`
  // places that cannot change the result and the chunks are encoded on up
  // to `threads` threads; the ids are the same for every chunks and threads.
  std::vector<uint32_t> encode(const uint8_t* s, size_t n, size_t chunks, size_t threads) const;

 private:
  struct Worker;
  void encode_range(const uint8_t* s, size_t begin, size_t end, Worker& w, std::vector<uint32_t>& out) const;
  void encode_piece(const uint8_t* p, size_t n, Worker& w, std::vector<uint32_t>& out) const;
  void merge_short(const uint8_t* p, size_t n, Worker& w, std::vector<uint32_t>& out) const;
  void merge_long(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const;
  uint32_t rank(const uint8_t* p, size_t n) const;
  size_t cut_outside_special(const uint8_t* s, size_t cut, size_t n) const;
  std::unique_ptr<Worker> take_worker() const;
  void give_back(std::unique_ptr<Worker> w) const;

  BytesMap ranks_;
  size_t max_token_bytes_ = 0;
  std::string special_;
  uint32_t special_id_;
  // Piece caches outlive a call, so repeated calls (a corpus read in chunks)
  // keep their hits; one per concurrent worker, never shared.
  mutable std::mutex workers_mutex_;
  mutable std::vector<std::unique_ptr<Worker>> idle_workers_;
};

}  // namespace gptcuda::text
