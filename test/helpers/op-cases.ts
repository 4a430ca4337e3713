// The op table: one list of cases per native op (the names of native().ops),
// each with seeded inputs and an independent float64 reference, checked on
// whatever device the driver (test/op-table.test.ts) hands it. Tolerances are
// looked up per (tolerance class, device, precision) so that a dtype axis
// (bf16) adds a column here, not new cases.
//
// Migration in progress: ops listed in PENDING are still covered by the older
// harnesses (test/ops.test.ts, test/cuda-parity.test.ts); moving one here means
// adding its cases and deleting it from PENDING.
import { expect } from 'vitest';

import * as ops from '../../ts/tensor/ops.js';
import { Tensor, type Device } from '../../ts/tensor/tensor.js';
import * as R from './reference.js';

export type Precision = 'fp32' | 'tf32';
/** What sets the error budget of a result: see TOLERANCE. */
export type TolClass = 'elementwise' | 'transcendental' | 'gradient';

/** rtol for R.closeness, per (class, device/precision). */
const TOLERANCE: Record<TolClass, Record<`${Device}/${Precision}`, number>> = {
  // one float32 rounding of a product or quotient
  elementwise: { 'cpu/fp32': 1e-6, 'cuda/fp32': 1e-6, 'cuda/tf32': 1e-6, 'cpu/tf32': 1e-6 },
  // float32 log/sin/cos/tanh of different libms (CPU libm, CUDA's)
  transcendental: { 'cpu/fp32': 1e-5, 'cuda/fp32': 1e-5, 'cuda/tf32': 1e-5, 'cpu/tf32': 1e-5 },
  // a float32 gradient against float64 central differences
  gradient: { 'cpu/fp32': 1e-4, 'cuda/fp32': 1e-4, 'cuda/tf32': 1e-4, 'cpu/tf32': 1e-4 },
};

/** The device under test, as the driver sets it up; cases only talk to this. */
export class OpContext {
  private readonly live: Tensor[] = [];
  constructor(readonly device: Device, readonly precision: Precision) {}

  tensor(data: Float32Array | Int32Array, shape: number[]): Tensor {
    const t = Tensor.from(data, shape, { device: this.device });
    this.live.push(t);
    return t;
  }
  zeros(shape: number[]): Tensor {
    const t = Tensor.zeros(shape, { device: this.device });
    this.live.push(t);
    return t;
  }
  dispose() {
    for (const t of this.live.splice(0)) if (!t.disposed) t.dispose();
  }
  rtol(cls: TolClass): number {
    return TOLERANCE[cls][`${this.device}/${this.precision}`];
  }
  close(what: string, actual: Tensor | ArrayLike<number>, expected: ArrayLike<number>, cls: TolClass, floorFrac = 0.1) {
    const a = actual instanceof Tensor ? actual.toFloat32Array() : actual;
    const r = R.closeness(a, expected, this.rtol(cls), floorFrac);
    expect(r.ok, `${what} on ${this.device}/${this.precision}: ${r.message}`).toBe(true);
  }
  /** Element-by-element equality (RNG draws, copies): the same on every backend. */
  exact(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>) {
    expect(actual.length, `${what}: length`).toBe(expected.length);
    for (let i = 0; i < actual.length; i++)
      if (actual[i] !== expected[i]) expect.fail(`${what} on ${this.device}: element ${i}: ${actual[i]}, expected ${expected[i]}`);
  }
}

export interface OpCase {
  name: string;
  run(k: OpContext): void;
}
export interface OpEntry {
  /** The native op name (a key of native().ops). */
  op: string;
  cases: OpCase[];
}

/** Ops whose cases still live in test/ops.test.ts and test/cuda-parity.test.ts. */
export const PENDING = [
  'copy', 'embeddingForward', 'embeddingBackward', 'layernormForward',
  'layernormBackward', 'gemm', 'matmulForward', 'matmulBackward', 'attentionForward', 'attentionBackward',
  'attentionDecode', 'crossentropyForward', 'crossentropyForwardBackward', 'adamw', 'sumSquares', 'clipByNorm',
];

// ---- elementwise -------------------------------------------------------------------------------
/** Sizes, and offsets into a larger buffer: offset 1 is not 16-byte aligned (the CUDA scalar path). */
const ELEMENTWISE_CASES: [n: number, offset: number][] = [[1, 0], [7, 0], [1031, 0], [1031, 1], [4099, 3]];

/** A tensor of `data` at element `offset` of a buffer padded with a sentinel on both sides. */
function placed(k: OpContext, data: Float32Array, offset: number) {
  const buf = new Float32Array(data.length + offset + 5).fill(-777);
  buf.set(data, offset);
  const base = k.tensor(buf, [buf.length]);
  const view = base.view(offset, [data.length]);
  /** The view's values; fails if anything outside the view changed. */
  const read = (what: string) => {
    const all = base.toFloat32Array();
    k.exact(`${what}: the buffer outside the view`, [...all.subarray(0, offset), ...all.subarray(offset + data.length)],
      new Array(offset + 5).fill(-777));
    return all.subarray(offset, offset + data.length);
  };
  return { view, read };
}

function elementwise(op: string, apply: (k: OpContext, x: Tensor, a: Tensor, b: Tensor) => void, ref: (x: number, a: number, b: number) => number): OpEntry {
  return {
    op,
    cases: ELEMENTWISE_CASES.map(([n, offset]) => ({
      name: `n=${n} offset=${offset}`,
      run(k) {
        const rng = new R.SeededRandom(n + offset);
        const x0 = rng.floats(n), a = rng.floats(n), b = rng.floats(n);
        const x = placed(k, x0, offset);
        apply(k, x.view, k.tensor(a, [n]), k.tensor(b, [n]));
        const expected = Float64Array.from({ length: n }, (_, i) => ref(x0[i]!, a[i]!, b[i]!));
        k.close(op, x.read(op), expected, 'elementwise', 0);
      },
    })),
  };
}

const ELEMENTWISE: OpEntry[] = [
  elementwise('fill', (_, x) => ops.fill(x, -2.5), () => -2.5),
  elementwise('scale', (_, x) => ops.scale(x, 0.3), (x) => x * 0.3),
  elementwise('add', (_, x, a, b) => ops.add(x, a, b), (_, a, b) => a + b),
  elementwise('accumulate', (_, x, a) => ops.accumulate(x, a), (x, a) => x + a),
];

// ---- seeded random fills --------------------------------------------------------------------
const RNG_CASES: [n: number, seed: number, stream: number][] = [
  [1, 0, 0],
  [7, 5, 3], // an odd count: the last Box-Muller pair is half used
  [4099, 2 ** 40 + 77, 2 ** 35 + 3], // seed and stream beyond 32 bits use the high key/counter words
];

/** Standard normal number `index`: Box-Muller on words 0 and 1 of Philox block index/2 (float64 of the same bits). */
function philoxNormalRef(seed: number, stream: number, index: number): number {
  const [b0, b1] = R.split64(Math.floor(index / 2)), [s0, s1] = R.split64(stream), [k0, k1] = R.split64(seed);
  const w = R.philox4x32_10([b0, b1, s0, s1], [k0, k1]);
  const u1 = ((w[0] >>> 8) + 0.5) / 16777216, u2 = (w[1] >>> 8) / 16777216;
  const r = Math.sqrt(-2 * Math.log(u1)), a = 2 * Math.PI * u2;
  return r * (index % 2 ? Math.sin(a) : Math.cos(a));
}

const fillNormal: OpEntry = {
  op: 'fillNormal',
  cases: RNG_CASES.map(([n, seed, stream]) => ({
    name: `n=${n} seed=${seed} stream=${stream}`,
    run(k) {
      const mean = 0.25, std = 2;
      const x = k.tensor(new Float32Array(n).fill(NaN), [n]);
      ops.fillNormal(x, mean, std, { seed, stream });
      const ref = Float64Array.from({ length: n }, (_, i) => mean + std * philoxNormalRef(seed, stream, i));
      k.close('fillNormal', x, ref, 'transcendental');
    },
  })),
};

const fillUniform: OpEntry = {
  op: 'fillUniform',
  cases: RNG_CASES.map(([n, seed, stream]) => ({
    name: `n=${n} seed=${seed} stream=${stream}`,
    run(k) {
      const lo = -1.5, hi = 0.5;
      const x = k.tensor(new Float32Array(n).fill(NaN), [n]);
      ops.fillUniform(x, lo, hi, { seed, stream });
      const ref = Float64Array.from({ length: n }, (_, i) => lo + (hi - lo) * R.philoxUniform(seed, stream, i));
      k.close('fillUniform', x, ref, 'elementwise', 0);
    },
  })),
};

// ---- dropout ----------------------------------------------------------------------------------
const DROPOUT_CASES: [n: number, p: number, seed: number, stream: number][] = [
  [1, 0.5, 1, 2],
  [7, 0.3, 1234, 5],
  [4099, 0.1, 0, 0],
  [4099, 0.9, 7, 2 ** 52],
  [1031, 0, 5, 6], // p = 0: the identity
];
const keepMask = (n: number, p: number, seed: number, stream: number) =>
  Array.from({ length: n }, (_, i) => (R.dropoutKeep(seed, stream, i, p) ? 1 : 0));

const dropoutForward: OpEntry = {
  op: 'dropoutForward',
  cases: DROPOUT_CASES.map(([n, p, seed, stream]) => ({
    name: `n=${n} p=${p} seed=${seed} stream=${stream}`,
    run(k) {
      const x = new R.SeededRandom(n + 11).floats(n, 1, 3); // no zeros: a zero output is a dropped element
      const out = k.zeros([n]);
      ops.dropoutForward(out, k.tensor(x, [n]), p, { seed, stream });
      const got = out.toFloat32Array();
      const mask = keepMask(n, p, seed, stream);
      k.exact('dropout mask (the Philox draws)', Array.from(got, (v) => (v !== 0 ? 1 : 0)), mask);
      k.close('dropout out', got, R.dropoutRef(R.f64(x), p, (i) => mask[i] === 1), 'elementwise', 0);
    },
  })),
};

const dropoutBackward: OpEntry = {
  op: 'dropoutBackward',
  cases: DROPOUT_CASES.map(([n, p, seed, stream]) => ({
    name: `n=${n} p=${p} accumulates`,
    run(k) {
      const rng = new R.SeededRandom(n + 12);
      const dout = rng.floats(n), prefill = rng.floats(n);
      const dinp = k.tensor(prefill, [n]);
      ops.dropoutBackward(dinp, k.tensor(dout, [n]), p, { seed, stream });
      const mask = keepMask(n, p, seed, stream);
      const g = R.dropoutRef(R.f64(dout), p, (i) => mask[i] === 1).map((v, i) => v + prefill[i]!);
      k.close('dropout dinp (prefill + mask * dout / (1-p))', dinp, g, 'elementwise');
    },
  })),
};

// ---- GELU ----------------------------------------------------------------------------------------
const GELU_SIZES = [1, 7, 257, 4099];
const EXTREMES = [-12, -5, -1e-3, 0, 1e-3, 5, 12];
const geluInput = (n: number) => {
  const x = new R.SeededRandom(n).floats(n, 2.5);
  x.set(EXTREMES.slice(0, n));
  return x;
};

const geluForward: OpEntry = {
  op: 'geluForward',
  cases: GELU_SIZES.map((n) => ({
    name: `n=${n}`,
    run(k) {
      const x = geluInput(n);
      const out = k.zeros([n]);
      ops.geluForward(out, k.tensor(x, [n]));
      k.close('gelu out', out, R.geluRef(R.f64(x)), 'transcendental', 0.01);
    },
  })),
};

const geluBackward: OpEntry = {
  op: 'geluBackward',
  cases: GELU_SIZES.map((n) => ({
    name: `n=${n} vs finite differences, accumulates`,
    run(k) {
      const x = geluInput(n);
      const rng = new R.SeededRandom(n + 1);
      const dout = rng.floats(n), prefill = rng.floats(n, 0.1);
      const dinp = k.tensor(prefill, [n]);
      ops.geluBackward(dinp, k.tensor(x, [n]), k.tensor(dout, [n]));
      // elementwise op: dL/dx_i = dout_i gelu'(x_i), a 1-D central difference of the reference per element
      const e = 1e-6;
      const fd = Float64Array.from({ length: n }, (_, i) => prefill[i]! + (dout[i]! * (R.geluScalar(x[i]! + e) - R.geluScalar(x[i]! - e))) / (2 * e));
      k.close('gelu dinp', dinp, fd, 'gradient', 0.01);
    },
  })),
};

export const OP_TABLE: OpEntry[] = [...ELEMENTWISE, fillNormal, fillUniform, dropoutForward, dropoutBackward, geluForward, geluBackward];

/** Native ops with neither a case nor a PENDING entry, and names that are not native ops. */
export function coverageGaps(nativeOps: string[], table: OpEntry[], pending: string[]) {
  const covered = new Set([...table.filter((e) => e.cases.length > 0).map((e) => e.op), ...pending]);
  const known = new Set(nativeOps);
  return {
    missing: nativeOps.filter((op) => !covered.has(op)),
    unknown: [...covered].filter((op) => !known.has(op)),
  };
}
