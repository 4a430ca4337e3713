// The skinny matmul path (native/cpu/gemv.cc): matmulForward with M <= 8 rows
// streams the weight once instead of running a packing GEMM. Checked against a
// float64 reference over shapes that exercise every row count, K and N tails
// (K not a multiple of the 8-lane vector, N not a multiple of the column
// block), with and without bias, on views; against the GEMM path (M = 9 and
// ops.gemm) within float tolerance; and a row's result must not depend on how
// many other rows share the call (batched decoding equals solo decoding).
// The same for bfloat16 tensors, whose path reads the weight as bf16 and
// widens it in registers (its own lane order, so its own K tails).
import { describe, expect, it } from 'vitest';

import * as ops from '../ts/tensor/ops.js';
import { Tensor } from '../ts/tensor/tensor.js';
import { bf16Nearest, bf16Value } from './helpers/op-cases/bf16.js';
import { assertClose, f64, linearRef, SeededRandom } from './helpers/reference.js';

const rand = (r: SeededRandom, n: number) => r.uniforms(n, -1, 1);

function matmul(x: Float32Array, W: Float32Array, b: Float32Array | null, M: number, K: number, N: number): Float32Array {
  const tx = Tensor.from(x, [M, K]), tW = Tensor.from(W, [N, K]), tb = b ? Tensor.from(b, [N]) : null;
  const out = Tensor.zeros([M, N]);
  try {
    ops.matmulForward(out, tx, tW, tb);
    return out.toFloat32Array();
  } finally {
    for (const t of [tx, tW, tb, out]) t?.dispose();
  }
}

describe('matmulForward with few rows (GEMV path)', () => {
  // 3100: from 3 rows on, the inputs overflow L1 and the sum runs over K ranges (gemv.cc), with a tail
  const Ks = [1, 7, 8, 33, 768, 3100];
  const Ns = [1, 5, 9, 131];
  for (let M = 1; M <= 9; M++) {
    it(`M=${M}: matches a float64 reference for K in ${Ks}, N in ${Ns}, with and without bias`, () => {
      const r = new SeededRandom(100 + M);
      for (const K of Ks)
        for (const N of Ns)
          for (const withBias of [true, false]) {
            const x = rand(r, M * K), W = rand(r, N * K), b = withBias ? rand(r, N) : null;
            const got = matmul(x, W, b, M, K, N);
            assertClose(`M=${M} K=${K} N=${N} bias=${withBias}`, got, linearRef(f64(x), f64(W), b && f64(b), M, K, N), 1e-5);
          }
    });
  }

  it('each row is bit-identical whether it runs alone or with up to 7 others', () => {
    const r = new SeededRandom(7);
    // GPT-2's QKV width plus a column tail; and its MLP projection's K plus a tail, where
    // batches of 3 and more sum over K ranges while a row alone sums all of K at once
    for (const [K, N] of [[768, 2304 + 3], [3072 + 5, 768 + 3]] as const) {
      const x = rand(r, 8 * K), W = rand(r, N * K), b = rand(r, N);
      const solo = Array.from({ length: 8 }, (_, i) => matmul(x.subarray(i * K, (i + 1) * K), W, b, 1, K, N));
      for (let M = 2; M <= 8; M++) {
        const batched = matmul(x.subarray(0, M * K), W, b, M, K, N);
        for (let i = 0; i < M; i++) expect(batched.subarray(i * N, (i + 1) * N), `K=${K} M=${M} row ${i}`).toEqual(solo[i]);
      }
    }
  });

  it('agrees with the GEMM path (ops.gemm) within float tolerance on GPT-2 shapes', () => {
    const r = new SeededRandom(8);
    for (const [K, N] of [[768, 3072], [3072, 768]] as const) {
      for (const M of [1, 4, 8]) {
        const x = rand(r, M * K), W = rand(r, N * K);
        const tx = Tensor.from(x, [M, K]), tW = Tensor.from(W, [N, K]), out = Tensor.zeros([M, N]);
        try {
          ops.gemm(out, tx, tW, false, true);
          assertClose(`M=${M} K=${K} N=${N}`, matmul(x, W, null, M, K, N), out.toFloat32Array(), 1e-5);
        } finally {
          for (const t of [tx, tW, out]) t.dispose();
        }
      }
    }
  });

  it('reads and writes views at an offset (the LM head on one row of a batch)', () => {
    const r = new SeededRandom(9);
    const K = 33, N = 17, rows = 3;
    const x = rand(r, rows * K), W = rand(r, N * K);
    const tx = Tensor.from(x, [rows, K]), tW = Tensor.from(W, [N, K]), out = Tensor.from(new Float32Array(rows * N).fill(-7), [rows, N]);
    try {
      ops.matmulForward(out.view(N, [1, N]), tx.view(2 * K, [1, K]), tW, null);
      const got = out.toFloat32Array();
      assertClose('row 1 of out from row 2 of x', got.subarray(N, 2 * N), linearRef(f64(x.subarray(2 * K)), f64(W), null, 1, K, N), 1e-5);
      expect([...got.subarray(0, N), ...got.subarray(2 * N)].every((v) => v === -7), 'other rows untouched').toBe(true);
    } finally {
      for (const t of [tx, tW, out]) t.dispose();
    }
  });
});

describe('matmulForward with few rows on bfloat16 tensors (the bf16-weight GEMV)', () => {
  /** Values that bfloat16 holds exactly, so the float64 reference sees what the op reads. */
  const bf16Rand = (r: SeededRandom, n: number) => Float32Array.from(rand(r, n), (v) => bf16Value(bf16Nearest(v)));
  const toBits = (x: Float32Array) => Uint16Array.from(x, bf16Nearest);
  function matmulBf16(x: Float32Array, W: Float32Array, b: Float32Array | null, M: number, K: number, N: number): Float32Array {
    const tx = Tensor.from(toBits(x), [M, K]), tW = Tensor.from(toBits(W), [N, K]), tb = b ? Tensor.from(toBits(b), [N]) : null;
    const out = Tensor.zeros([M, N], { dtype: 'bfloat16' });
    try {
      ops.matmulForward(out, tx, tW, tb);
      return Float32Array.from(out.handle.read() as Uint16Array, bf16Value);
    } finally {
      for (const t of [tx, tW, tb, out]) t?.dispose();
    }
  }
  // K around the 32-element blocks: none, one short, exact, one over, GPT-2's
  const Ks = [1, 31, 32, 33, 100, 768, 3100];
  const Ns = [1, 9, 131];
  for (const M of [1, 2, 3, 8, 9]) {
    it(`M=${M}: within one bf16 rounding (2^-8) of a float64 reference for K in ${Ks}, N in ${Ns}`, () => {
      const r = new SeededRandom(200 + M);
      for (const K of Ks)
        for (const N of Ns)
          for (const withBias of [true, false]) {
            const x = bf16Rand(r, M * K), W = bf16Rand(r, N * K), b = withBias ? bf16Rand(r, N) : null;
            assertClose(`M=${M} K=${K} N=${N} bias=${withBias}`, matmulBf16(x, W, b, M, K, N), linearRef(f64(x), f64(W), b && f64(b), M, K, N),
              1.05 * 2 ** -8);
          }
    });
  }

  it('each row is bit-identical whether it runs alone or with up to 7 others', () => {
    const r = new SeededRandom(17);
    // K tails past the 32-element blocks and column tails; at K = 3077 batches of 3 and more sum over K ranges
    for (const [K, N] of [[768 + 5, 2304 + 3], [3072 + 5, 768 + 3]] as const) {
      const x = bf16Rand(r, 8 * K), W = bf16Rand(r, N * K), b = bf16Rand(r, N);
      const solo = Array.from({ length: 8 }, (_, i) => matmulBf16(x.subarray(i * K, (i + 1) * K), W, b, 1, K, N));
      for (let M = 2; M <= 8; M++) {
        const batched = matmulBf16(x.subarray(0, M * K), W, b, M, K, N);
        for (let i = 0; i < M; i++) expect(batched.subarray(i * N, (i + 1) * N), `K=${K} M=${M} row ${i}`).toEqual(solo[i]);
      }
    }
  });
});
