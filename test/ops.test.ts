// CPU-only checks the op table (helpers/op-cases/, run by op-table.test.ts on
// every device) does not make: the references' own self-checks, the edge
// semantics of empty reductions, dropout's statistics and determinism, and
// that attention's gradient comparison can tell a perturbed or mis-scaled
// gradient and the Philox index of its dropout mask. Expected values never
// come from the code under test.
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

/** expect-style wrapper around R.assertClose so vitest reports the message. */
function expectClose(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, floorFrac = 0.1) {
  const r = R.closeness(actual, expected, rtol, floorFrac);
  expect(r.ok, `${what}: ${r.message}`).toBe(true);
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
  // the masks against the TypeScript Philox and the backward are op cases (helpers/op-cases/random.ts)
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
  const fwd = (qkv: Float32Array, B: number, Tn: number, C: number, NH: number, p = 0, rng = { seed: 0, stream: 0 }) => {
    const tq = T(qkv, [B, Tn, 3 * C]);
    const out = Z([B, Tn, C]), lse = Z([B, NH, Tn]);
    ops.attentionForward(out, lse, tq, NH, p, rng);
    return { tq, out, lse };
  };


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

