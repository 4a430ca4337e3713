// The native ops not yet in the op table (helpers/op-cases.ts, run by
// op-table.test.ts; GELU and dropout live there) on the CPU backend against the float64 references in
// helpers/reference.ts: forwards by relative error at float32 tolerances,
// backwards (gradients of L = sum(dout * f(x)) with random dout) against
// central finite differences of the float64 reference, and the accumulate (+=)
// contract of every backward. Expected values never come from the code under test.
import { afterEach, describe, expect, it } from 'vitest';

import * as ops from '../ts/tensor/ops.js';
import { Tensor } from '../ts/tensor/tensor.js';
import * as R from './helpers/reference.js';

// ---- tensor bookkeeping ------------------------------------------------------------------
const live: Tensor[] = [];
afterEach(() => {
  for (const t of live.splice(0)) if (!t.disposed) t.dispose();
});
function T(data: Float32Array | Int32Array, shape: number[]): Tensor {
  const t = Tensor.from(data, shape);
  live.push(t);
  return t;
}
function Z(shape: number[], dtype: 'float32' | 'int32' = 'float32'): Tensor {
  const t = Tensor.zeros(shape, { dtype });
  live.push(t);
  return t;
}
const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

function sumArrays(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

/** expect-style wrapper around R.assertClose so vitest reports the message. */
function expectClose(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, floorFrac = 0.1) {
  const r = R.closeness(actual, expected, rtol, floorFrac);
  expect(r.ok, `${what}: ${r.message}`).toBe(true);
}

/**
 * The native gradient `g` of L(x) = f(x) against central differences of the
 * float64 reference f. Small inputs: every coordinate. Large ones: `maxCoords`
 * random coordinates plus a directional derivative along a random direction
 * (which involves every coordinate at once).
 */
function expectGradient(
  what: string,
  g: Float32Array,
  f: (x: R.F64) => number,
  x0: ArrayLike<number>,
  rtol = 1e-4,
  maxCoords = 1000,
  seed = 99,
) {
  const x = R.f64(x0);
  expect(g.length).toBe(x.length);
  if (x.length <= maxCoords) {
    expectClose(`${what} (all ${x.length} coordinates vs finite differences)`, g, R.finiteDifference(f, x), rtol);
    return;
  }
  const rng = new R.SeededRandom(seed);
  const idx = new Set<number>();
  while (idx.size < maxCoords) idx.add(rng.int(0, x.length));
  const indices = [...idx];
  const fd = R.finiteDifference(f, x, 1e-6, indices);
  // Compare on the subset, with the floor taken from the whole native gradient's scale.
  let scale = 0;
  for (const v of g) scale = Math.max(scale, Math.abs(v));
  for (const i of indices) {
    const err = Math.abs(g[i]! - fd[i]!) / (Math.abs(fd[i]!) + 0.1 * scale);
    expect(err, `${what}: coordinate ${i}: native ${g[i]}, finite difference ${fd[i]}`).toBeLessThanOrEqual(rtol);
  }
  const d = new Float64Array(x.length);
  for (let i = 0; i < d.length; i++) d[i] = rng.normal();
  const dd = R.directionalDerivative(f, x, d);
  const gd = R.dot(g, d);
  let mag = 0;
  for (let i = 0; i < d.length; i++) mag += Math.abs(g[i]! * d[i]!);
  expect(Math.abs(gd - dd), `${what}: directional derivative native ${gd} vs finite difference ${dd}`).toBeLessThanOrEqual(
    rtol * mag,
  );
}

/** Runs `backward(grad)` on a grad pre-filled with random values and checks grad = prefill + g0. */
function expectAccumulates(what: string, shape: number[], g0: ArrayLike<number>, backward: (grad: Tensor) => void, seed = 5) {
  const prefill = new R.SeededRandom(seed).floats(numel(shape));
  const grad = T(prefill, shape);
  backward(grad);
  // 1e-5: the pre-filled value changes the rounding of the partial sums
  expectClose(`${what} accumulates into a pre-filled gradient`, grad.toFloat32Array(), sumArrays(prefill, g0), 1e-5);
}

// =============================================================================================
describe('reference self-checks', () => {
  it('Philox4x32-10 matches the Random123 known-answer vectors', () => {
    const hex = (w: number[]) => w.map((x) => (x >>> 0).toString(16).padStart(8, '0')).join(' ');
    const kat: [number[], number[], string][] = [
      [[0, 0, 0, 0], [0, 0], '6627e8d5 e169c58d bc57ac4c 9b00dbd8'],
      [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], '408f276d 41c83b0e a20bc7c6 6d5451fd'],
      [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], 'd16cfe09 94fdcceb 5001e420 24126ea1'],
    ];
    for (const [c, k, want] of kat) {
      expect(hex(R.philox4x32_10(c, k))).toBe(want);
      expect(hex(R.philox4x32_10BigInt(c, k))).toBe(want);
    }
  });

  it('the 32-bit Philox agrees with the BigInt one on random counters and keys', () => {
    const rng = new R.SeededRandom(3);
    const w = () => rng.int(0, 2 ** 32);
    for (let i = 0; i < 300; i++) {
      const c = [w(), w(), w(), w()], k = [w(), w()];
      expect(R.philox4x32_10(c, k)).toEqual(R.philox4x32_10BigInt(c, k));
    }
  });

  it('finiteDifference recovers known derivatives', () => {
    const x = R.f64([0.3, -1.2, 2]);
    const g = R.finiteDifference((v) => Math.sin(v[0]!) * v[1]! + v[2]! ** 3, x);
    expectClose('fd', g, [Math.cos(0.3) * -1.2, Math.sin(0.3), 12], 1e-8);
    expect([...x]).toEqual([0.3, -1.2, 2]); // restored
  });

  it('the comparison helper rejects a gradient with one element perturbed by 0.1% of its scale', () => {
    const rng = new R.SeededRandom(17);
    const exact = Float64Array.from(rng.floats(500));
    const scale = exact.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    expect(R.closeness(exact, exact, 1e-4).ok).toBe(true);
    const bad = Float64Array.from(exact);
    bad[123]! += 1e-3 * scale;
    expect(R.closeness(bad, exact, 1e-4).ok).toBe(false);
    const nan = Float64Array.from(exact);
    nan[7] = NaN;
    expect(R.closeness(nan, exact, 1e-4).ok).toBe(false);
    expect(() => R.assertClose('bad', bad, exact, 1e-4)).toThrow(/bad: worst relative error/);
  });
});

// =============================================================================================
describe('fill / scale / add / accumulate / copy', () => {
  it('fill writes only its view', () => {
    const base = Z([4, 5]);
    ops.fill(base, -2.5);
    ops.fill(base.view(6, [7]), 3.25);
    const got = base.toFloat32Array();
    for (let i = 0; i < 20; i++) expect(got[i]).toBe(i >= 6 && i < 13 ? 3.25 : -2.5);
  });

  it('add writes a + b (also in place), accumulate adds across equal element counts', () => {
    const rng = new R.SeededRandom(2);
    const a = rng.floats(77), b = rng.floats(77);
    const ta = T(a, [7, 11]), tb = T(b, [7, 11]), out = T(rng.floats(77), [7, 11]);
    ops.add(out, ta, tb);
    const got = out.toFloat32Array();
    for (let i = 0; i < 77; i++) expect(got[i]).toBe(Math.fround(a[i]! + b[i]!));
    ops.add(ta, ta, tb); // out aliases a
    expect([...ta.toFloat32Array()]).toEqual([...got]);
    const dst = T(a, [77]);
    ops.accumulate(dst, tb); // [77] += [7, 11]
    expect([...dst.toFloat32Array()]).toEqual([...got]);
  });

  it('copy copies float32 and int32, between views', () => {
    const rng = new R.SeededRandom(4);
    const a = rng.floats(30);
    const src = T(a, [30]), dst = Z([40]);
    ops.copy(dst.view(5, [3, 10]), src);
    const got = dst.toFloat32Array();
    for (let i = 0; i < 40; i++) expect(got[i]).toBe(i >= 5 && i < 35 ? a[i - 5] : 0);
    ops.copy(src.view(0, [10]), dst.view(20, [10]));
    expect([...src.toFloat32Array().subarray(0, 10)]).toEqual([...a.subarray(15, 25)]);
    const ids = T(Int32Array.from([1, -2, 3, 2147483647, -2147483648]), [5]);
    const ids2 = Z([5], 'int32');
    ops.copy(ids2, ids);
    expect([...ids2.toInt32Array()]).toEqual([1, -2, 3, 2147483647, -2147483648]);
  });
});

// =============================================================================================
describe('embedding', () => {
  const cases = [
    { B: 3, T: 7, C: 6, V: 37, pos0: 0, P: 7 },
    { B: 2, T: 1, C: 5, V: 11, pos0: 3, P: 8 },
    { B: 1, T: 5, C: 3, V: 4, pos0: 2, P: 7 }, // tiny vocab: many repeated ids
    { B: 2, T: 64, C: 48, V: 101, pos0: 5, P: 80 },
  ];
  for (const { B, T: Tn, C, V, pos0, P } of cases) {
    it(`forward and backward B=${B} T=${Tn} C=${C} V=${V} pos0=${pos0}`, () => {
      const rng = new R.SeededRandom(B * 1000 + Tn * 10 + C);
      const ids = rng.ints(B * Tn, 0, V);
      ids[0] = V - 1; // the last row is reachable
      if (B * Tn > 2) ids[B * Tn - 1] = ids[1]!; // repeated id
      const wte = rng.floats(V * C), wpe = rng.floats(P * C);
      const tIds = T(ids, [B, Tn]), tWte = T(wte, [V, C]), tWpe = T(wpe, [P, C]);
      const out = Z([B, Tn, C]);
      ops.embeddingForward(out, tIds, tWte, tWpe, pos0);
      expectClose('embedding out', out.toFloat32Array(), R.embeddingRef(ids, R.f64(wte), R.f64(wpe), B, Tn, C, pos0), 1e-6);

      const dout = rng.floats(B * Tn * C);
      const tDout = T(dout, [B, Tn, C]);
      const dwte = Z([V, C]), dwpe = Z([P, C]);
      ops.embeddingBackward(dwte, dwpe, tDout, tIds, pos0);
      const d64 = R.f64(dout);
      const gWte = dwte.toFloat32Array(), gWpe = dwpe.toFloat32Array();
      expectGradient('dwte', gWte, (x) => R.dot(d64, R.embeddingRef(ids, x, R.f64(wpe), B, Tn, C, pos0)), wte, 1e-5, 300);
      expectGradient('dwpe', gWpe, (x) => R.dot(d64, R.embeddingRef(ids, R.f64(wte), x, B, Tn, C, pos0)), wpe, 1e-5, 300);
      // rows not used stay exactly zero
      for (let p = 0; p < P; p++)
        if (p < pos0 || p >= pos0 + Tn) for (let c = 0; c < C; c++) expect(gWpe[p * C + c]).toBe(0);

      expectAccumulates('dwte', [V, C], gWte, (g) => ops.embeddingBackward(g, null, tDout, tIds, pos0));
      expectAccumulates('dwpe', [P, C], gWpe, (g) => ops.embeddingBackward(null, g, tDout, tIds, pos0));
    });
  }

  it('a token repeated at every position accumulates all of its gradients', () => {
    const B = 2, Tn = 5, C = 4, V = 3;
    const ids = new Int32Array(B * Tn).fill(2);
    const dout = new Float32Array(B * Tn * C).fill(0.5);
    const dwte = Z([V, C]);
    ops.embeddingBackward(dwte, null, T(dout, [B, Tn, C]), T(ids, [B, Tn]), 0);
    expect([...dwte.toFloat32Array()]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 5, 5, 5, 5]);
  });
});

// =============================================================================================
describe('layernorm', () => {
  const cases = [
    { shape: [3, 7, 6], shift: 0, scale: 1, rtol: 1e-5 },
    { shape: [2, 1, 5], shift: 0, scale: 1, rtol: 1e-5 },
    // A large mean: a one-pass E[x^2] - E[x]^2 variance would lose ~3 digits of
    // rstd here. (out itself may lose ~|mean| * 2^-24 / std to the float32 mean.)
    { shape: [4, 3, 16], shift: 300, scale: 1, rtol: 1e-4 },
    { shape: [2, 64, 48], shift: 0, scale: 2, rtol: 1e-5 },
  ];
  for (const { shape, shift, scale, rtol } of cases) {
    it(`forward and backward ${JSON.stringify(shape)} shift=${shift}`, () => {
      const C = shape.at(-1)!, N = numel(shape) / C;
      const rng = new R.SeededRandom(N * 31 + C);
      const inp = rng.floats(N * C, scale, shift), w = rng.floats(C, 0.5, 1), b = rng.floats(C, 0.5);
      const tInp = T(inp, shape), tW = T(w, [C]), tB = T(b, [C]);
      const out = Z(shape), mean = Z(shape.slice(0, -1)), rstd = Z(shape.slice(0, -1));
      ops.layernormForward(out, mean, rstd, tInp, tW, tB);
      const ref = R.layernormRef(R.f64(inp), R.f64(w), R.f64(b), N, C);
      expectClose('layernorm out', out.toFloat32Array(), ref.out, rtol);
      // the mean's float32 error is relative to the inputs, not to the (possibly ~0) mean
      const inScale = Math.abs(shift) + scale;
      ref.mean.forEach((m, i) => expect(Math.abs(mean.toFloat32Array()[i]! - m), `mean[${i}]`).toBeLessThan(1e-6 * inScale));
      expectClose('layernorm rstd', rstd.toFloat32Array(), ref.rstd, 1e-5, 0);

      const dout = rng.floats(N * C);
      const tDout = T(dout, shape);
      const dinp = Z(shape), dw = Z([C]), db = Z([C]);
      ops.layernormBackward(dinp, dw, db, tDout, tInp, tW, mean, rstd);
      const d64 = R.f64(dout), x64 = R.f64(inp), w64 = R.f64(w), b64 = R.f64(b);
      const L = (i: R.F64, ww: R.F64, bb: R.F64) => R.dot(d64, R.layernormRef(i, ww, bb, N, C).out);
      const gInp = dinp.toFloat32Array(), gW = dw.toFloat32Array(), gB = db.toFloat32Array();
      const grtol = Math.max(1e-4, 3 * rtol);
      expectGradient('layernorm dinp', gInp, (x) => L(x, w64, b64), inp, grtol, 200);
      expectGradient('layernorm dweight', gW, (x) => L(x64, x, b64), w, grtol);
      expectGradient('layernorm dbias', gB, (x) => L(x64, w64, x), b, grtol);

      expectAccumulates('layernorm dinp', shape, gInp, (g) => ops.layernormBackward(g, null, null, tDout, tInp, tW, mean, rstd));
      expectAccumulates('layernorm dweight', [C], gW, (g) => ops.layernormBackward(null, g, null, tDout, tInp, tW, mean, rstd));
      expectAccumulates('layernorm dbias', [C], gB, (g) => ops.layernormBackward(null, null, g, tDout, tInp, tW, mean, rstd));
    });
  }

  it('works on views inside larger buffers without touching their neighbours', () => {
    const N = 5, C = 6;
    const rng = new R.SeededRandom(8);
    const big = T(rng.floats(N * C + 20), [N * C + 20]);
    const before = big.toFloat32Array();
    const inp = big.view(7, [N, C]);
    const outBuf = T(new Float32Array(N * C + 10).fill(42), [N * C + 10]);
    const out = outBuf.view(3, [N, C]);
    const stats = T(new Float32Array(2 * N + 4).fill(42), [2 * N + 4]);
    ops.layernormForward(out, stats.view(1, [N]), stats.view(N + 3, [N]), inp, T(new Float32Array(C).fill(1), [C]), Z([C]));
    const ref = R.layernormRef(R.f64(before.subarray(7, 7 + N * C)), R.f64(new Float32Array(C).fill(1)), new Float64Array(C), N, C);
    const o = outBuf.toFloat32Array();
    expectClose('view out', o.subarray(3, 3 + N * C), ref.out, 1e-5);
    for (let i = 0; i < o.length; i++) if (i < 3 || i >= 3 + N * C) expect(o[i]).toBe(42);
    const s = stats.toFloat32Array();
    expect([s[0], s[N + 1], s[N + 2], s[2 * N + 3]]).toEqual([42, 42, 42, 42]);
    expect([...big.toFloat32Array()]).toEqual([...before]);
  });
});

// =============================================================================================
describe('gemm', () => {
  const shapes = [
    [5, 7, 3],
    [1, 9, 13],
    [33, 17, 65],
    [128, 144, 48],
    [67, 785, 401], // past the internal GEMM's K and N cache blocks (384, 768), several threads
  ] as const;
  for (const [M, N, K] of shapes)
    for (const transA of [false, true])
      for (const transB of [false, true])
        it(`M=${M} N=${N} K=${K} transA=${transA} transB=${transB}`, () => {
          const rng = new R.SeededRandom(M * 7 + N * 13 + K + (transA ? 1 : 0) + (transB ? 2 : 0));
          const A = rng.floats(M * K), Bm = rng.floats(K * N), C0 = rng.floats(M * N);
          const tA = T(A, transA ? [K, M] : [M, K]), tB = T(Bm, transB ? [N, K] : [K, N]);
          const combos = M * N * K > 1e7 ? ([[0.75, 0.5]] as const) : ([[1, 0], [0.75, 0.5], [-2, 1]] as const);
          for (const [alpha, beta] of combos) {
            const tC = T(C0, [M, N]);
            ops.gemm(tC, tA, tB, transA, transB, alpha, beta);
            const ref = R.gemmRef(transA, transB, M, N, K, alpha, R.f64(A), R.f64(Bm), beta, R.f64(C0));
            expectClose(`gemm alpha=${alpha} beta=${beta}`, tC.toFloat32Array(), ref, K > 32 ? (K > 256 ? 5e-5 : 2e-5) : 1e-5);
          }
        });
});

// =============================================================================================
describe('matmul (Linear: y = x W^T + b)', () => {
  const cases = [
    { inShape: [3, 7, 6], N: 18 },
    { inShape: [2, 1, 5], N: 37 },
    { inShape: [4, 9], N: 1 },
    { inShape: [2, 64, 48], N: 144 },
  ];
  for (const { inShape, N } of cases)
    for (const withBias of [true, false])
      it(`${JSON.stringify(inShape)} -> ${N}, ${withBias ? 'with' : 'without'} bias`, () => {
        const K = inShape.at(-1)!, M = numel(inShape) / K;
        const outShape = [...inShape.slice(0, -1), N];
        const rng = new R.SeededRandom(M + 3 * K + 5 * N + (withBias ? 1 : 0));
        const x = rng.floats(M * K), W = rng.floats(N * K, 0.3), b = rng.floats(N);
        const tX = T(x, inShape), tW = T(W, [N, K]), tB = withBias ? T(b, [N]) : null;
        const out = T(rng.floats(M * N), outShape); // garbage: forward must overwrite
        ops.matmulForward(out, tX, tW, tB);
        const ref = R.linearRef(R.f64(x), R.f64(W), withBias ? R.f64(b) : null, M, K, N);
        expectClose('matmul out', out.toFloat32Array(), ref, 2e-5);

        const dout = rng.floats(M * N);
        const tD = T(dout, outShape);
        const dx = Z(inShape), dW = Z([N, K]), db = withBias ? Z([N]) : null;
        ops.matmulBackward(dx, dW, db, tD, tX, tW);
        const d64 = R.f64(dout), x64 = R.f64(x), W64 = R.f64(W), b64 = withBias ? R.f64(b) : null;
        const gx = dx.toFloat32Array(), gW = dW.toFloat32Array();
        // (the big case checks 20 random coordinates plus a random direction: each evaluation is ~1M flops)
        expectGradient('matmul dinp', gx, (v) => R.dot(d64, R.linearRef(v, W64, b64, M, K, N)), x, 2e-5, M * K > 1000 ? 20 : 1000);
        expectGradient('matmul dweight', gW, (v) => R.dot(d64, R.linearRef(x64, v, b64, M, K, N)), W, 2e-5, N * K > 1000 ? 20 : 1000);
        if (db) expectGradient('matmul dbias', db.toFloat32Array(), (v) => R.dot(d64, R.linearRef(x64, W64, v, M, K, N)), b, 2e-5, M * N > 1000 ? 20 : 1000);

        // each gradient alone (the others null and skipped), accumulating onto a pre-filled buffer
        expectAccumulates('matmul dinp', inShape, gx, (g) => ops.matmulBackward(g, null, null, tD, tX, tW));
        expectAccumulates('matmul dweight', [N, K], gW, (g) => ops.matmulBackward(null, g, null, tD, tX, tW));
        if (db) expectAccumulates('matmul dbias', [N], db.toFloat32Array(), (g) => ops.matmulBackward(null, null, g, tD, tX, tW));
        ops.matmulBackward(null, null, null, tD, tX, tW); // nothing wanted: a no-op
      });
});

describe('empty reductions', () => {
  it('gemm with K = 0 gives C = beta C', () => {
    for (const [ta, tb] of [[false, false], [true, true]] as const) {
      const c = T(Float32Array.of(1, 2, 3, 4), [2, 2]);
      ops.gemm(c, Z(ta ? [0, 2] : [2, 0]), Z(tb ? [2, 0] : [0, 2]), ta, tb, 1, 0.5);
      expect([...c.toFloat32Array()]).toEqual([0.5, 1, 1.5, 2]);
    }
  });

  // KNOWN BUG (reported to the lead): Args::rows (native/addon/args.cc) returns 0
  // rows when the last dimension is 0, so a Linear with in_features = 0 runs
  // with M = 0 and leaves `out` (and dbias) untouched instead of out = bias.
  it('matmul with in_features = 0: out = bias (an empty sum is 0), dbias still accumulates', () => {
    const out = T(Float32Array.of(1, 2, 3, 4), [2, 2]);
    ops.matmulForward(out, Z([2, 0]), Z([2, 0]), T(Float32Array.of(5, 6), [2]));
    expect([...out.toFloat32Array()]).toEqual([5, 6, 5, 6]);
    const out2 = T(Float32Array.of(1, 2, 3, 4), [2, 2]);
    ops.matmulForward(out2, Z([2, 0]), Z([2, 0]));
    expect([...out2.toFloat32Array()]).toEqual([0, 0, 0, 0]);
    const db = Z([2]);
    ops.matmulBackward(Z([2, 0]), Z([2, 0]), db, T(Float32Array.of(1, 2, 3, 4), [2, 2]), Z([2, 0]), Z([2, 0]));
    expect([...db.toFloat32Array()]).toEqual([4, 6]);
  });
});

// =============================================================================================
describe('dropout (Philox masks)', () => {
  // the masks against the TypeScript Philox and the backward are op cases (helpers/op-cases.ts)
  const runForward = (x: Float32Array, p: number, seed: number, stream: number) => {
    const out = Z([x.length]);
    ops.dropoutForward(out, T(x, [x.length]), p, { seed, stream });
    return out.toFloat32Array();
  };

  it('same seed and stream give the same mask; another stream or seed another mask', () => {
    const x = new Float32Array(5000).fill(1);
    const a = runForward(x, 0.5, 42, 1), b = runForward(x, 0.5, 42, 1);
    const c = runForward(x, 0.5, 42, 2), d = runForward(x, 0.5, 43, 1);
    expect([...a]).toEqual([...b]);
    const diff = (u: Float32Array, v: Float32Array) => u.reduce((s, _, i) => s + (u[i] !== v[i] ? 1 : 0), 0);
    expect(diff(a, c)).toBeGreaterThan(2000); // independent masks differ in ~half the places
    expect(diff(a, d)).toBeGreaterThan(2000);
  });

  it('empirical keep rate is 1 - p', () => {
    const n = 200_000;
    const x = new Float32Array(n).fill(1);
    for (const p of [0.1, 0.5, 0.8]) {
      const got = runForward(x, p, 9, 3);
      let kept = 0;
      for (const v of got) if (v !== 0) kept++;
      const sigma = Math.sqrt((p * (1 - p)) / n);
      expect(Math.abs(kept / n - (1 - p))).toBeLessThan(5 * sigma);
      // kept values are exactly scaled
      const kv = got.find((v) => v !== 0)!;
      expect(kv).toBeCloseTo(1 / (1 - p), 5);
    }
  });
});

// =============================================================================================
describe('attention', () => {
  const cases = [
    { B: 3, T: 7, C: 6, NH: 2 }, // head size 3
    { B: 2, T: 1, C: 8, NH: 2 }, // a single position
    { B: 1, T: 5, C: 4, NH: 4 }, // head size 1
    { B: 1, T: 9, C: 8, NH: 1, scale: 4 }, // large scores: the softmax must subtract its max
    { B: 2, T: 64, C: 48, NH: 4 }, // GPT-ish
  ];
  /** The keep predicate as a lookup table (Philox per call would dominate the finite differences). */
  const tabulate = (keep: (b: number, h: number, t: number, s: number) => boolean, B: number, NH: number, Tn: number) => {
    const m = new Uint8Array(B * NH * Tn * Tn);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < NH; h++)
        for (let t = 0; t < Tn; t++) for (let s = 0; s < Tn; s++) m[((b * NH + h) * Tn + t) * Tn + s] = keep(b, h, t, s) ? 1 : 0;
    return (b: number, h: number, t: number, s: number) => m[((b * NH + h) * Tn + t) * Tn + s] === 1;
  };
  const fwd = (qkv: Float32Array, B: number, Tn: number, C: number, NH: number, p = 0, rng = { seed: 0, stream: 0 }) => {
    const tq = T(qkv, [B, Tn, 3 * C]);
    const out = Z([B, Tn, C]), lse = Z([B, NH, Tn]);
    ops.attentionForward(out, lse, tq, NH, p, rng);
    return { tq, out, lse };
  };

  for (const { B, T: Tn, C, NH, scale = 0.8 } of cases) {
    for (const p of [0, 0.25]) {
      it(`forward and backward B=${B} T=${Tn} C=${C} NH=${NH} dropout=${p}`, () => {
        const drng = { seed: 1000 + Tn, stream: 77 };
        const rng = new R.SeededRandom(B * 100 + Tn * 10 + NH + p * 1000);
        const qkv = rng.floats(B * Tn * 3 * C, scale);
        const { tq, out, lse } = fwd(qkv, B, Tn, C, NH, p, drng);
        const drop = p > 0 ? { p, keep: tabulate(R.attentionKeep(drng.seed, drng.stream, p, NH, Tn), B, NH, Tn) } : undefined;
        const ref = R.attentionRef(R.f64(qkv), B, Tn, C, NH, drop);
        expectClose('attention out', out.toFloat32Array(), ref.out, 2e-5);
        expectClose('attention lse', lse.toFloat32Array(), ref.lse, 1e-5, 0.01);

        const dout = rng.floats(B * Tn * C);
        const tD = T(dout, [B, Tn, C]);
        const dqkv = Z([B, Tn, 3 * C]);
        ops.attentionBackward(dqkv, tD, tq, out, lse, NH, p, drng);
        const g = dqkv.toFloat32Array();
        const d64 = R.f64(dout);
        const f = (x: R.F64) => R.dot(d64, R.attentionRef(x, B, Tn, C, NH, drop).out);
        expectGradient('attention dqkv', g, f, qkv, 1e-4, Tn > 32 ? 60 : 400);
        expectAccumulates('attention dqkv', [B, Tn, 3 * C], g, (gr) => ops.attentionBackward(gr, tD, tq, out, lse, NH, p, drng));

        if (p > 0 && Tn > 1) {
          // the tolerance can tell: the gradient of the same function without dropout is rejected
          const nc = Math.min(qkv.length, 40);
          const noDrop = R.finiteDifference((x) => R.dot(d64, R.attentionRef(x, B, Tn, C, NH).out), R.f64(qkv), 1e-6,
            Array.from({ length: nc }, (_, i) => i));
          const sub = (a: ArrayLike<number>) => Array.from({ length: nc }, (_, i) => a[i]!);
          expect(R.closeness(sub(g), sub(noDrop), 1e-4).ok).toBe(false);
        }
      });
    }
  }

  it('a deliberately perturbed attention gradient fails the finite-difference comparison', () => {
    const B = 3, Tn = 7, C = 6, NH = 2;
    const qkv = new R.SeededRandom(21).floats(B * Tn * 3 * C);
    const { tq, out, lse } = fwd(qkv, B, Tn, C, NH);
    const dout = new R.SeededRandom(22).floats(B * Tn * C);
    const dqkv = Z([B, Tn, 3 * C]);
    ops.attentionBackward(dqkv, T(dout, [B, Tn, C]), tq, out, lse, NH);
    const g = dqkv.toFloat32Array();
    const d64 = R.f64(dout);
    const fd = R.finiteDifference((x) => R.dot(d64, R.attentionRef(x, B, Tn, C, NH).out), R.f64(qkv));
    expect(R.closeness(g, fd, 1e-4).ok).toBe(true);
    const scale = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    for (const i of [0, 100, g.length - 1]) {
      const bad = Float32Array.from(g);
      bad[i]! += 2e-3 * scale;
      expect(R.closeness(bad, fd, 1e-4).ok, `perturbation at ${i}`).toBe(false);
    }
    // a 1/sqrt(hs) scale error would be visible
    const scaled = g.map((v) => v * 1.001);
    expect(R.closeness(scaled, fd, 1e-4).ok).toBe(false);
  });

  it('dropout masks in attention use index ((b*NH+h)*T+t)*T+s of the Philox stream', () => {
    // With V = identity-like one-hot rows and Q = K = 0, the probabilities are
    // uniform 1/(t+1); out[b,t,h*hs + s'] reveals exactly which s were kept.
    const B = 2, Tn = 6, NH = 2, hs = Tn, C = NH * hs, p = 0.5, seed = 31, stream = 9;
    const qkv = new Float32Array(B * Tn * 3 * C);
    for (let b = 0; b < B; b++)
      for (let s = 0; s < Tn; s++)
        for (let h = 0; h < NH; h++) qkv[(b * Tn + s) * 3 * C + 2 * C + h * hs + s] = 1;
    const { out } = fwd(qkv, B, Tn, C, NH, p, { seed, stream });
    const o = out.toFloat32Array();
    for (let b = 0; b < B; b++)
      for (let h = 0; h < NH; h++)
        for (let t = 0; t < Tn; t++)
          for (let s = 0; s < Tn; s++) {
            const want = s <= t && R.dropoutKeep(seed, stream, ((b * NH + h) * Tn + t) * Tn + s, p) ? 1 / (t + 1) / (1 - p) : 0;
            expect(o[(b * Tn + t) * C + h * hs + s]).toBeCloseTo(want, 6);
          }
  });
});

// =============================================================================================
describe('attention decode (KV cache)', () => {
  /** Runs prefill + decode chunks; returns the outputs of every position and the caches. */
  function decodeAll(qkv: Float32Array, B: number, Tn: number, C: number, NH: number, Tmax: number, chunks: number[]) {
    const hs = C / NH;
    const kc = Z([B, NH, Tmax, hs]), vc = Z([B, NH, Tmax, hs]);
    const outAll = new Float32Array(B * Tn * C);
    let pos = 0;
    for (const len of chunks) {
      const part = new Float32Array(B * len * 3 * C);
      for (let b = 0; b < B; b++)
        part.set(qkv.subarray((b * Tn + pos) * 3 * C, (b * Tn + pos + len) * 3 * C), b * len * 3 * C);
      const out = Z([B, len, C]);
      ops.attentionDecode(out, kc, vc, T(part, [B, len, 3 * C]), pos);
      const o = out.toFloat32Array();
      for (let b = 0; b < B; b++) outAll.set(o.subarray(b * len * C, (b + 1) * len * C), (b * Tn + pos) * C);
      pos += len;
    }
    expect(pos).toBe(Tn);
    return { outAll, kc: kc.toFloat32Array(), vc: vc.toFloat32Array() };
  }

  const cases = [
    { B: 2, T: 9, C: 12, NH: 3, Tmax: 11, chunks: [4, 1, 1, 1, 1, 1] },
    { B: 2, T: 9, C: 12, NH: 3, Tmax: 9, chunks: [1, 1, 1, 1, 1, 1, 1, 1, 1] },
    { B: 2, T: 9, C: 12, NH: 3, Tmax: 12, chunks: [9] },
    { B: 3, T: 7, C: 6, NH: 2, Tmax: 10, chunks: [2, 3, 1, 1] }, // head size 3, a multi-token chunk after a prefill
    { B: 1, T: 40, C: 48, NH: 4, Tmax: 64, chunks: [17, ...Array<number>(23).fill(1)] },
  ];
  for (const { B, T: Tn, C, NH, Tmax, chunks } of cases) {
    it(`B=${B} T=${Tn} C=${C} NH=${NH} Tmax=${Tmax} chunks=${chunks.length}`, () => {
      const qkv = new R.SeededRandom(Tn * 5 + chunks.length).floats(B * Tn * 3 * C);
      const { outAll, kc, vc } = decodeAll(qkv, B, Tn, C, NH, Tmax, chunks);
      expectClose('decode out vs full causal attention', outAll, R.attentionRef(R.f64(qkv), B, Tn, C, NH).out, 2e-5);
      const hs = C / NH;
      for (let b = 0; b < B; b++)
        for (let h = 0; h < NH; h++)
          for (let t = 0; t < Tmax; t++)
            for (let c = 0; c < hs; c++) {
              const at = ((b * NH + h) * Tmax + t) * hs + c;
              const k = t < Tn ? qkv[(b * Tn + t) * 3 * C + C + h * hs + c] : 0;
              const v = t < Tn ? qkv[(b * Tn + t) * 3 * C + 2 * C + h * hs + c] : 0;
              if (kc[at] !== k || vc[at] !== v) expect.fail(`cache[b=${b},h=${h},t=${t},c=${c}]: k ${kc[at]} vs ${k}, v ${vc[at]} vs ${v}`);
            }
    });
  }
});

// =============================================================================================
describe('cross-entropy', () => {
  const makeCase = (N: number, V: number, seed: number, ignoreRows: number[], hotRow = -1) => {
    const rng = new R.SeededRandom(seed);
    const logits = rng.floats(N * V, 2);
    if (hotRow >= 0) for (let v = 0; v < V; v++) logits[hotRow * V + v] = 90 + 20 * rng.normal(); // exp would overflow float32
    const targets = rng.ints(N, 0, V);
    targets[0] = V - 1;
    for (const r of ignoreRows) targets[r] = -100;
    return { logits, targets };
  };
  const cases = [
    { N: 21, V: 37, ignore: [2, 5, 20], hot: 3 },
    { N: 1, V: 37, ignore: [], hot: -1 },
    { N: 3, V: 2, ignore: [1], hot: 0 },
    { N: 128, V: 257, ignore: [0, 64, 127], hot: 10 },
    { N: 8, V: 5003, ignore: [7], hot: 2 },
  ];
  for (const { N, V, ignore, hot } of cases) {
    it(`N=${N} V=${V} with ${ignore.length} ignored rows`, () => {
      const { logits, targets } = makeCase(N, V, N * V, ignore, hot);
      const ref = R.crossEntropyRef(R.f64(logits), targets, N, V);
      const tL = T(logits, [N, V]), tT = T(targets, [N]);
      const losses = T(new Float32Array(N).fill(7), [N]);
      ops.crossentropyForward(losses, tL, tT);
      const got = losses.toFloat32Array();
      expectClose('losses', got, ref.losses, 2e-5, 0.01);
      for (const r of ignore) expect(got[r]).toBe(0);

      // fused: dlogits WRITTEN (a garbage-filled buffer is overwritten), dloss = 1/nValid
      const dloss = 1 / ref.nValid;
      const losses2 = Z([N]);
      const dlogits = T(new R.SeededRandom(3).floats(N * V, 100), [N, V]);
      ops.crossentropyForwardBackward(losses2, dlogits, tL, tT, dloss);
      expectClose('fused losses', losses2.toFloat32Array(), ref.losses, 2e-5, 0.01);
      const g = dlogits.toFloat32Array();
      for (const r of ignore) for (let v = 0; v < V; v++) if (g[r * V + v] !== 0) expect.fail(`ignored row ${r} has gradient ${g[r * V + v]}`);
      const meanLoss = (x: R.F64) => R.crossEntropyRef(x, targets, N, V).mean;
      expectGradient('dlogits', g, meanLoss, logits, 1e-4, 300);
      // analytic too: (softmax - onehot) / nValid
      const analytic = new Float64Array(N * V);
      for (let i = 0; i < N; i++) {
        if (targets[i] === -100) continue;
        const pr = R.softmaxRow(R.f64(logits), i, V);
        for (let v = 0; v < V; v++) analytic[i * V + v] = (pr[v]! - (v === targets[i] ? 1 : 0)) * dloss;
      }
      expectClose('dlogits (analytic)', g, analytic, 1e-5, 0.01);

      // in place: dlogits === logits
      const inPlace = T(logits, [N, V]);
      const losses3 = Z([N]);
      ops.crossentropyForwardBackward(losses3, inPlace, inPlace, tT, dloss);
      expect([...losses3.toFloat32Array()]).toEqual([...losses2.toFloat32Array()]);
      expectClose('in-place dlogits', inPlace.toFloat32Array(), g, 1e-6, 0.01);
    });
  }

  it('a custom ignore index', () => {
    const N = 6, V = 9;
    const { logits, targets } = makeCase(N, V, 4, []);
    targets[1] = -1;
    targets[4] = -1;
    const losses = Z([N]);
    ops.crossentropyForward(losses, T(logits, [N, V]), T(targets, [N]), -1);
    expectClose('losses', losses.toFloat32Array(), R.crossEntropyRef(R.f64(logits), targets, N, V, -1).losses, 2e-5, 0.01);
    const dl = Z([N, V]);
    ops.crossentropyForwardBackward(Z([N]), dl, T(logits, [N, V]), T(targets, [N]), 0.25, -1);
    const g = dl.toFloat32Array();
    for (let v = 0; v < V; v++) expect([g[V + v], g[4 * V + v]]).toEqual([0, 0]);
  });

  it('3-D logits [B, T, V] with targets [B, T]', () => {
    const B = 3, Tn = 7, V = 37;
    const { logits, targets } = makeCase(B * Tn, V, 5, [4]);
    const losses = Z([B, Tn]);
    ops.crossentropyForward(losses, T(logits, [B, Tn, V]), T(targets, [B, Tn]));
    expectClose('losses', losses.toFloat32Array(), R.crossEntropyRef(R.f64(logits), targets, B * Tn, V).losses, 2e-5, 0.01);
  });
});

// =============================================================================================
describe('adamw', () => {
  const f32Hyper = (h: R.AdamWHyper): R.AdamWHyper => ({
    lr: Math.fround(h.lr), beta1: Math.fround(h.beta1), beta2: Math.fround(h.beta2),
    eps: Math.fround(h.eps), weightDecay: Math.fround(h.weightDecay),
  });
  const hypers: R.AdamWHyper[] = [
    { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 },
    { lr: 3e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 },
    { lr: 1e-2, beta1: 0.5, beta2: 0.9, eps: 1e-3, weightDecay: 1.5 },
  ];
  for (const h of hypers) {
    it(`5 steps vs the PyTorch-semantics reference (lr=${h.lr}, wd=${h.weightDecay})`, () => {
      // the op takes its hyperparameters as float32 (1 - 0.999f differs from 0.001 by 1.3e-5 relative)
      const h32 = f32Hyper(h);
      const n = 1001;
      const rng = new R.SeededRandom(Math.round(h.lr * 1e4 + h.weightDecay * 10));
      const p0 = rng.floats(n);
      const tp = T(p0, [7, 11, 13]), tg = Z([n]), tm = Z([n]), tv = Z([n]);
      // reference run from scratch in float64, and per-step checks from the native state
      const P = R.f64(p0), Mr = new Float64Array(n), Vr = new Float64Array(n);
      for (let t = 1; t <= 5; t++) {
        const g = rng.floats(n, t === 3 ? 10 : 0.1);
        g[0] = 0; // zero gradient: the update is weight decay plus the momentum of earlier steps
        g[1] = 1e-7; // eps matters
        tg.write(g);
        const before = { p: R.f64(tp.toFloat32Array()), m: R.f64(tm.toFloat32Array()), v: R.f64(tv.toFloat32Array()) };
        ops.adamw(tp, tg, tm, tv, { ...h, step: t });
        R.adamwRef(P, R.f64(g), Mr, Vr, h32, t);
        // one step from the native state, in float64
        const exp = { p: Float64Array.from(before.p), m: Float64Array.from(before.m), v: Float64Array.from(before.v) };
        R.adamwRef(exp.p, R.f64(g), exp.m, exp.v, h32, t);
        const gotP = tp.toFloat32Array();
        const delta = gotP.map((v, i) => v - before.p[i]!), refDelta = exp.p.map((v, i) => v - before.p[i]!);
        expectClose(`step ${t} update p_new - p_old`, R.f64(delta), refDelta, 2e-3);
        expectClose(`step ${t} m`, tm.toFloat32Array(), exp.m, 1e-5);
        expectClose(`step ${t} v`, tv.toFloat32Array(), exp.v, 1e-5);
      }
      expectClose('params after 5 steps', tp.toFloat32Array(), P, 1e-5);
      expectClose('m after 5 steps', tm.toFloat32Array(), Mr, 1e-4);
      expectClose('v after 5 steps', tv.toFloat32Array(), Vr, 1e-4);
    });
  }

  it('bias correction at a late step (t = 1000) with existing moments', () => {
    const n = 64;
    const rng = new R.SeededRandom(77);
    const p = rng.floats(n), g = rng.floats(n), m = rng.floats(n, 0.01), v = rng.uniforms(n, 1e-4, 1e-2);
    const h = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
    const tp = T(p, [n]);
    ops.adamw(tp, T(g, [n]), T(m, [n]), T(v, [n]), { ...h, step: 1000 });
    const P = R.f64(p);
    R.adamwRef(P, R.f64(g), R.f64(m), R.f64(v), f32Hyper(h), 1000);
    const got = tp.toFloat32Array();
    expectClose('update', got.map((x, i) => x - p[i]!), P.map((x, i) => x - p[i]!), 2e-3);
  });
});

// =============================================================================================
describe('sumSquares and clipByNorm', () => {
  for (const n of [1, 7, 1000, 100_003]) {
    it(`sumSquares n=${n} (written, not accumulated)`, () => {
      const x = new R.SeededRandom(n).floats(n, 1.5);
      const out = T(Float32Array.of(123), [1]);
      ops.sumSquares(out, T(x, [n]));
      const ref = R.dot(R.f64(x), R.f64(x));
      expectClose('sum of squares', out.toFloat32Array(), [ref], n > 10_000 ? 1e-5 : 1e-6);
    });
  }

  it('sumSquares on a view sums only the view', () => {
    const x = new R.SeededRandom(3).floats(50);
    const out = Z([3]);
    ops.sumSquares(out.view(1, [1]), T(x, [50]).view(10, [20]));
    const ref = R.dot(R.f64(x.subarray(10, 30)), R.f64(x.subarray(10, 30)));
    const got = out.toFloat32Array();
    expect([got[0], got[2]]).toEqual([0, 0]);
    expectClose('view sum', [got[1]!], [ref], 1e-6);
  });

  it('clipByNorm scales by maxNorm / (norm + 1e-6) only when the norm is above maxNorm', () => {
    const n = 1000;
    const x = new R.SeededRandom(5).floats(n);
    const normSq = R.dot(R.f64(x), R.f64(x));
    const norm = Math.sqrt(Math.fround(normSq));
    for (const maxNorm of [norm * 2, norm + 0.01, norm / 3, 1, 0]) {
      const tx = T(x, [n]);
      const ns = Z([1]);
      ops.sumSquares(ns, tx);
      ops.clipByNorm(tx, ns, maxNorm);
      const factor = Math.min(1, maxNorm / (norm + 1e-6));
      const got = tx.toFloat32Array();
      if (factor === 1) expect([...got]).toEqual([...x]);
      else expectClose(`clip to ${maxNorm}`, got, R.f64(x).map((v) => v * factor), 1e-6);
    }
  });

  it('clipByNorm reads the squared norm from the tensor, not from the data', () => {
    const x = Float32Array.from([3, 4]);
    const tx = T(x, [2]);
    ops.clipByNorm(tx, T(Float32Array.of(100), [1]), 5); // pretend the norm is 10
    expectClose('clipped', tx.toFloat32Array(), [1.5, 2], 1e-6);
  });
});
