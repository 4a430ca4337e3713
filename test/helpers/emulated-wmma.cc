// The emulator's bf16 WMMA (native/cuda/emu/shim/mma.h on simt.h) on one warp,
// for test/cuda-emulator-wmma.test.ts. Reads from stdin, as integers: A, a
// [16][24] bf16 tile (bits), B likewise, C, a [16][16] float tile (bits).
// Computes D1 = A B + C (B row-major, ldm 24) and D2 = A B^T + D1 (the same
// memory read column-major), and prints {"d1": [...], "d2": [...]} as float
// bits, D1 stored row-major (ldm 16) and D2 column-major (ldm 24).
// With an argument, makes the mistake it names, which the emulator must
// report: "misaligned" (a pointer 2 bytes past a 256-bit boundary), "ldm" (a
// bf16 ldm of 12, not a multiple of 8).
#include <mma.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace wmma = nvcuda::wmma;

int main(int argc, char** argv) {
  const std::string mistake = argc > 1 ? argv[1] : "";
  alignas(32) static __nv_bfloat16 a[16 * 24 + 16], b[16 * 24 + 16];
  alignas(32) static float c[256], d1[256], d2[16 * 24];
  for (int i = 0; i < 16 * 24; ++i) {
    unsigned v;
    if (std::scanf("%u", &v) != 1) return 2;
    a[i].__x = static_cast<unsigned short>(v);
  }
  for (int i = 0; i < 16 * 24; ++i) {
    unsigned v;
    if (std::scanf("%u", &v) != 1) return 2;
    b[i].__x = static_cast<unsigned short>(v);
  }
  for (int i = 0; i < 256; ++i) {
    uint32_t v;
    if (std::scanf("%u", &v) != 1) return 2;
    std::memcpy(&c[i], &v, 4);
  }
  const __nv_bfloat16* pa = mistake == "misaligned" ? a + 1 : a;
  const unsigned lda = mistake == "ldm" ? 12 : 24;
  emu::run_grid("wmma_bf16_test", dim3(1), dim3(32), 0, [&] {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fbt;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(fa, pa, lda);
    wmma::load_matrix_sync(fb, b, 24);
    wmma::load_matrix_sync(fbt, b, 24);
    wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(d1, acc, 16, wmma::mem_row_major);
    wmma::mma_sync(acc, fa, fbt, acc);
    wmma::store_matrix_sync(d2, acc, 24, wmma::mem_col_major);
  });
  auto print = [](const char* name, const float* d, int ld, bool col) {
    std::printf("\"%s\": [", name);
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) {
        uint32_t v;
        std::memcpy(&v, col ? &d[j * ld + i] : &d[i * ld + j], 4);
        std::printf("%s%u", i + j ? ", " : "", v);
      }
    std::printf("]");
  };
  std::printf("{");
  print("d1", d1, 16, false);
  std::printf(", ");
  print("d2", d2, 24, true);
  std::printf("}\n");
  return 0;
}
