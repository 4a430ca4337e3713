// AdamW (PyTorch semantics, hyperparameters taken as float32), the squared
// gradient norm and clipping by it: odd sizes, unaligned views, zero and tiny
// gradients, late steps with existing moments. In bfloat16 AdamW takes bf16
// gradients and writes the model's bf16 copy of the float32 master by
// stochastic rounding, checked bit for bit against bf16.ts's rounding of the
// master with the TypeScript Philox's draws.
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { bf16Stochastic, bf16Value, roundingBits } from './bf16.js';
import { type OpContext, type OpEntry } from './context.js';

// ---- adamw -------------------------------------------------------------------------------------------
/** The op takes its hyperparameters as float32 (1 - 0.999f differs from 0.001 by 1.3e-5 relative). */
const f32Hyper = (h: R.AdamWHyper): R.AdamWHyper => ({
  lr: Math.fround(h.lr), beta1: Math.fround(h.beta1), beta2: Math.fround(h.beta2), eps: Math.fround(h.eps), weightDecay: Math.fround(h.weightDecay),
});
const HYPERS: R.AdamWHyper[] = [
  { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 },
  { lr: 3e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 },
  { lr: 1e-2, beta1: 0.5, beta2: 0.9, eps: 1e-3, weightDecay: 1.5 },
];
interface AdamCase {
  shape: number[];
  hyper: R.AdamWHyper;
  /** Steps run, from `first` on (moments start at 0 for first = 1, random otherwise). */
  first: number;
  steps: number;
  offset?: number;
  /** bf16: the first element's index in the rounding draws (a ZeRO-1 shard's start). */
  roundingOffset?: number;
}
const ADAM_CASES: AdamCase[] = [
  { shape: [1], hyper: HYPERS[0]!, first: 1, steps: 3 },
  { shape: [7], hyper: HYPERS[1]!, first: 1, steps: 3 },
  ...HYPERS.map((hyper) => ({ shape: [7, 11, 13], hyper, first: 1, steps: 5 })),
  { shape: [5003], hyper: HYPERS[1]!, first: 1, steps: 3, offset: 1 }, // unaligned: the scalar path
  { shape: [64], hyper: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }, first: 1000, steps: 1 }, // late bias correction
  { shape: [100_003], hyper: HYPERS[1]!, first: 1, steps: 3 },
  // draws numbered from a shard's start: a multiple of 4 (CUDA's vectorised path), and not one, past 2^32
  { shape: [1003], hyper: HYPERS[1]!, first: 1, steps: 2, roundingOffset: 1028 },
  { shape: [1003], hyper: HYPERS[1]!, first: 1, steps: 2, roundingOffset: 2 ** 33 + 7 },
];

const adamw: OpEntry = {
  op: 'adamw',
  cases: ADAM_CASES.map((c) => ({
    name: `${JSON.stringify(c.shape)} lr=${c.hyper.lr} wd=${c.hyper.weightDecay} steps ${c.first}..${c.first + c.steps - 1}${c.offset ? ` offset=${c.offset}` : ''}${c.roundingOffset ? ` rounding from element ${c.roundingOffset}` : ''}`,
    run(k: OpContext) {
      const n = c.shape.reduce((a, b) => a * b, 1), off = c.offset ?? 0, h32 = f32Hyper(c.hyper);
      const rng = new R.SeededRandom(n + c.first + Math.round(c.hyper.lr * 1e4 + c.hyper.weightDecay * 10));
      const p0 = rng.floats(n);
      const m0 = c.first > 1 ? rng.floats(n, 0.01) : new Float32Array(n), v0 = c.first > 1 ? rng.uniforms(n, 1e-4, 1e-2) : new Float32Array(n);
      // the master and moments are float32 whatever the storage type; grads (and the model's copy) are in it
      const p = k.placed(p0, off, c.shape, 'float32'), m = k.placed(m0, off, [n], 'float32'), v = k.placed(v0, off, [n], 'float32'), g = k.zeros([n]);
      const low = k.dtype === 'bfloat16' ? k.placed(new Float32Array(n), off, c.shape) : null;
      const f32 = (cls: Parameters<OpContext['rtol']>[0]) => k.rtolFloat32(cls);
      // from scratch in float64, and each step from the op's own state
      const P = R.f64(p0), M = R.f64(m0), Vr = R.f64(v0);
      for (let t = c.first; t < c.first + c.steps; t++) {
        const grad = rng.floats(n, t === c.first + 2 ? 10 : 0.1);
        grad[0] = 0; // the update is weight decay plus the momentum of earlier steps
        if (n > 1) grad[1] = 1e-7; // eps matters
        grad.set(k.round(grad));
        k.write(g, grad);
        const before = { p: R.f64(p.read('params')), m: R.f64(m.read('m')), v: R.f64(v.read('v')) };
        const rounding = { seed: 2 ** 33 + n, stream: t };
        ops.adamw(p.view, g, m.view, v.view, { ...c.hyper, step: t }, low ? { params: low.view, rounding, offset: c.roundingOffset } : undefined);
        R.adamwRef(P, R.f64(grad), M, Vr, h32, t);
        const exp = { p: Float64Array.from(before.p), m: Float64Array.from(before.m), v: Float64Array.from(before.v) };
        R.adamwRef(exp.p, R.f64(grad), exp.m, exp.v, h32, t);
        const got = p.read('params');
        k.close(`step ${t} update p_new - p_old`, got.map((x, i) => x - before.p[i]!), exp.p.map((x, i) => x - before.p[i]!), 'update', 0.1, f32('update'));
        k.close(`step ${t} m`, m.read('m'), exp.m, 'moments', 0.1, f32('moments'));
        k.close(`step ${t} v`, v.read('v'), exp.v, 'moments', 0.1, f32('moments'));
        // the bf16 copy: the op's new master (just checked) rounded with draws (seed, stream t, element roundingOffset + i)
        const from = c.roundingOffset ?? 0;
        if (low)
          k.exact(`step ${t} bfloat16 params (stochastic rounding of the master)`, low.read('bf16 params'),
            Float32Array.from(got, (x, i) => bf16Value(bf16Stochastic(x, roundingBits(rounding.seed, rounding.stream, from + i)))));
      }
      k.close(`params after ${c.steps} steps`, p.read('params'), P, 'moments', 0.1, f32('moments'));
      k.close(`m after ${c.steps} steps`, m.read('m'), M, 'reduction', 0.1, f32('reduction'));
      k.close(`v after ${c.steps} steps`, v.read('v'), Vr, 'reduction', 0.1, f32('reduction'));
    },
  })),
};

// ---- sumSquares --------------------------------------------------------------------------------------
const SUM_CASES: [n: number, offset: number][] = [[1, 0], [7, 1], [1000, 0], [1000, 10], [5003, 1], [100_003, 0], [1_000_003, 3]];

const sumSquares: OpEntry = {
  op: 'sumSquares',
  cases: SUM_CASES.map(([n, offset]) => ({
    name: `n=${n} offset=${offset}, written (not accumulated) into a view`,
    run(k: OpContext) {
      const x = k.round(new R.SeededRandom(n + offset).floats(n, 1.5));
      const out = k.placed(Float32Array.of(123), 1, [1], 'float32');
      ops.sumSquares(out.view, k.placed(x, offset).view);
      // float32 whatever the storage type. bfloat16 squares are exact in float32 but have few significant
      // bits, and their float32 running sums then round the same way more often than float32 inputs' do (seen:
      // 2e-5 over 1e6 terms): the worst case of a sequential float32 sum of positive terms, n 2^-24 for the
      // up to 32768 terms of the CPU's chunks (shorter on CUDA)
      const rtol = k.dtype === 'bfloat16' ? Math.min(n, 32768) * 2 ** -24 : k.rtol(n <= 1000 ? 'elementwise' : 'reduction');
      k.close('sum of squares', out.read('sum of squares'), [R.dot(R.f64(x), R.f64(x))], 'reduction', 0, rtol);
    },
  })),
};

// ---- clipByNorm --------------------------------------------------------------------------------------
const clipByNorm: OpEntry = {
  op: 'clipByNorm',
  cases: [
    ...([[1, 0], [1000, 0], [1003, 1], [1_000_003, 0]] as const).map(([n, offset]) => ({
      name: `n=${n} offset=${offset}: max norms above, at, below the norm, 1 and 0`,
      run(k: OpContext) {
        const x = k.round(new R.SeededRandom(n + 1).floats(n));
        const normSq = Math.fround(R.dot(R.f64(x), R.f64(x))), norm = Math.sqrt(normSq);
        for (const maxNorm of [norm * 2, norm + 0.01, norm / 3, 1, 0]) {
          const t = k.placed(x, offset);
          ops.clipByNorm(t.view, k.tensor(Float32Array.of(normSq), [1], 'float32'), maxNorm);
          const factor = Math.min(1, maxNorm / (norm + 1e-6)), got = t.read(`clip to ${maxNorm}`);
          if (factor === 1) k.exact(`clip to ${maxNorm} (a no-op)`, got, x);
          else k.close(`clip to ${maxNorm}`, got, R.f64(x).map((v) => v * factor), 'elementwise');
        }
      },
    })),
    {
      name: 'the squared norm is read from its tensor, not recomputed from the data',
      run(k: OpContext) {
        const t = k.tensor(Float32Array.of(3, 4), [2]);
        ops.clipByNorm(t, k.tensor(Float32Array.of(100), [1], 'float32'), 5); // the norm of [3, 4] is 5; the tensor says 10
        k.close('clipped', t, [1.5 / (1 + 1e-7), 2 / (1 + 1e-7)], 'elementwise');
      },
    },
  ],
};

export const OPTIMIZER: OpEntry[] = [adamw, sumSquares, clipByNorm];
