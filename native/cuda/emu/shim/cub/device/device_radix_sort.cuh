// cub::DeviceRadixSort::SortPairs for the emulated backend: a stable sort by the
// key bits [begin_bit, end_bit), signed keys in signed order, as CUB does.
#pragma once
#include <algorithm>
#include <numeric>
#include <vector>

#include <cuda_runtime.h>

namespace cub {
struct DeviceRadixSort {
  template <class K, class V, class NumItems>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out,
                               const V* vals_in, V* vals_out, NumItems n, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t = nullptr) {
    const size_t need = 2 * static_cast<size_t>(n) * (sizeof(K) + sizeof(V)) + 256;
    if (temp == nullptr) {
      temp_bytes = need;
      return cudaSuccess;
    }
    if (temp_bytes < need || !emu::is_device_range(temp, temp_bytes)) return cudaErrorInvalidValue;
    if (n <= 0) return cudaSuccess;
    const size_t nb = static_cast<size_t>(n);
    if (!emu::is_device_range(keys_in, nb * sizeof(K)) || !emu::is_device_range(keys_out, nb * sizeof(K)) ||
        !emu::is_device_range(vals_in, nb * sizeof(V)) || !emu::is_device_range(vals_out, nb * sizeof(V)))
      return cudaErrorInvalidValue;
    emu::enqueue("cub::DeviceRadixSort::SortPairs", [=] {
      using U = std::make_unsigned_t<K>;
      auto bits = [&](K k) {
        U u = static_cast<U>(k);
        if constexpr (std::is_signed_v<K>) u ^= U(1) << (sizeof(K) * 8 - 1);
        const int width = end_bit - begin_bit;
        u >>= begin_bit;
        if (width < static_cast<int>(sizeof(K) * 8)) u &= (U(1) << width) - 1;
        return u;
      };
      std::vector<size_t> order(nb);
      std::iota(order.begin(), order.end(), size_t{0});
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return bits(keys_in[a]) < bits(keys_in[b]); });
      std::vector<K> k(nb);
      std::vector<V> v(nb);
      for (size_t i = 0; i < nb; ++i) {
        k[i] = keys_in[order[i]];
        v[i] = vals_in[order[i]];
      }
      std::copy(k.begin(), k.end(), keys_out);
      std::copy(v.begin(), v.end(), vals_out);
    });
    return cudaSuccess;
  }
};
}  // namespace cub
