// The seeded Philox ops: fillNormal, fillUniform and dropout, draw for draw against a TypeScript Philox.
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpEntry } from './context.js';

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

export const fillNormal: OpEntry = {
  op: 'fillNormal',
  untyped: true,
  cases: RNG_CASES.map(([n, seed, stream]) => ({
    name: `n=${n} seed=${seed} stream=${stream}`,
    run(k) {
      const mean = 0.25, std = 2;
      const x = k.tensor(new Float32Array(n).fill(NaN), [n], 'float32');
      ops.fillNormal(x, mean, std, { seed, stream });
      const ref = Float64Array.from({ length: n }, (_, i) => mean + std * philoxNormalRef(seed, stream, i));
      k.close('fillNormal', x, ref, 'transcendental');
    },
  })),
};

export const fillUniform: OpEntry = {
  op: 'fillUniform',
  untyped: true,
  cases: RNG_CASES.map(([n, seed, stream]) => ({
    name: `n=${n} seed=${seed} stream=${stream}`,
    run(k) {
      const lo = -1.5, hi = 0.5;
      const x = k.tensor(new Float32Array(n).fill(NaN), [n], 'float32');
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

export const dropoutForward: OpEntry = {
  op: 'dropoutForward',
  cases: DROPOUT_CASES.map(([n, p, seed, stream]) => ({
    name: `n=${n} p=${p} seed=${seed} stream=${stream}`,
    run(k) {
      const x = k.round(new R.SeededRandom(n + 11).floats(n, 1, 3)); // no zeros: a zero output is a dropped element
      const out = k.zeros([n]);
      ops.dropoutForward(out, k.tensor(x, [n]), p, { seed, stream });
      const got = k.read(out);
      const mask = keepMask(n, p, seed, stream);
      k.exact('dropout mask (the Philox draws)', Array.from(got, (v) => (v !== 0 ? 1 : 0)), mask);
      k.close('dropout out', got, R.dropoutRef(R.f64(x), p, (i) => mask[i] === 1), 'elementwise', 0);
    },
  })),
};

// Views at an element offset (not 16-byte aligned: CUDA's element-by-element path) draw the same masks.
export const dropoutUnaligned: OpEntry = {
  op: 'dropoutForward',
  cases: [{
    name: 'n=1029 p=0.3 at offset 1 (forward, and the backward accumulating)',
    run(k) {
      const n = 1029, p = 0.3, seed = 9, stream = 4;
      const mask = keepMask(n, p, seed, stream);
      const x = k.round(new R.SeededRandom(n + 13).floats(n, 1, 3));
      const out = k.placed(new Float32Array(n), 1);
      ops.dropoutForward(out.view, k.placed(x, 1).view, p, { seed, stream });
      const got = out.read('dropout out');
      k.exact('dropout mask (the Philox draws)', Array.from(got, (v) => (v !== 0 ? 1 : 0)), mask);
      k.close('dropout out', got, R.dropoutRef(R.f64(x), p, (i) => mask[i] === 1), 'elementwise', 0);
      const prefill = k.round(new R.SeededRandom(n + 14).floats(n));
      const dinp = k.placed(prefill, 1);
      ops.dropoutBackward(dinp.view, k.placed(x, 1).view, p, { seed, stream });
      const g = R.dropoutRef(R.f64(x), p, (i) => mask[i] === 1).map((v, i) => v + prefill[i]!);
      k.close('dropout dinp (prefill + mask * dout / (1-p))', dinp.read('dropout dinp'), g, 'elementwise');
    },
  }],
};

export const dropoutBackward: OpEntry = {
  op: 'dropoutBackward',
  cases: DROPOUT_CASES.map(([n, p, seed, stream]) => ({
    name: `n=${n} p=${p} accumulates`,
    run(k) {
      const rng = new R.SeededRandom(n + 12);
      const dout = k.round(rng.floats(n)), prefill = k.round(rng.floats(n));
      const dinp = k.tensor(prefill, [n]);
      ops.dropoutBackward(dinp, k.tensor(dout, [n]), p, { seed, stream });
      const mask = keepMask(n, p, seed, stream);
      const g = R.dropoutRef(R.f64(dout), p, (i) => mask[i] === 1).map((v, i) => v + prefill[i]!);
      k.close('dropout dinp (prefill + mask * dout / (1-p))', dinp, g, 'elementwise');
    },
  })),
};
