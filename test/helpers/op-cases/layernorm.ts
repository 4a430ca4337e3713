// LayerNorm over the last dimension (biased variance, eps 1e-5): forward with
// its saved statistics, backward (dinp, dweight, dbias, each optional).
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpContext, type OpEntry, type TolClass } from './context.js';

interface LayernormCase {
  shape: number[];
  /** Inputs shift + scale N(0, 1). */
  shift: number;
  scale: number;
  /** Element offset of every float tensor in its buffer (1: unaligned, the CUDA scalar path). */
  offset?: number;
}
const CASES: LayernormCase[] = [
  { shape: [3, 7, 6], shift: 0, scale: 1 },
  { shape: [2, 1, 5], shift: 0, scale: 1 },
  { shape: [4, 1], shift: 0.5, scale: 1 }, // C = 1: variance 0, out = bias
  // A large mean: a one-pass E[x^2] - E[x]^2 variance would lose ~3 digits of
  // rstd here. (out itself may lose ~|mean| * 2^-24 / std to the float32 mean.)
  { shape: [4, 3, 16], shift: 300, scale: 1 },
  { shape: [2, 64, 48], shift: 0, scale: 2 },
  { shape: [9, 64], shift: 0.5, scale: 2, offset: 1 }, // C % 4 == 0 but unaligned
  { shape: [300, 37], shift: 0.5, scale: 2 },
  { shape: [600, 130], shift: 0, scale: 1 }, // many rows: the column reductions of the backward run in chunks
  { shape: [5, 1023], shift: 0.5, scale: 2 },
  { shape: [2, 64, 768], shift: 0.5, scale: 2 },
];
const label = (c: LayernormCase) => `${JSON.stringify(c.shape)} shift=${c.shift}${c.offset ? ` offset=${c.offset}` : ''}`;
const sizes = (c: LayernormCase) => ({ C: c.shape.at(-1)!, N: c.shape.reduce((a, b) => a * b, 1) / c.shape.at(-1)! });
/** Cancellation in x - mean: float32 inputs far from 0 lose ~|shift| / scale digits. */
const tolOf = (c: LayernormCase): TolClass => (Math.abs(c.shift) > 10 * c.scale ? 'cancellation' : 'reduction');

function inputs(k: OpContext, c: LayernormCase) {
  const { N, C } = sizes(c);
  const rng = new R.SeededRandom(N * 31 + C + (c.offset ?? 0));
  return { rng, inp: k.round(rng.floats(N * C, c.scale, c.shift)), w: k.round(rng.floats(C, 0.5, 1)), b: k.round(rng.floats(C, 0.5)) };
}

const layernormForward: OpEntry = {
  op: 'layernormForward',
  cases: CASES.map((c) => ({
    name: label(c),
    run(k: OpContext) {
      const { N, C } = sizes(c), off = c.offset ?? 0, rows = c.shape.slice(0, -1);
      const { rng, inp, w, b } = inputs(k, c);
      // the statistics are float32 whatever the storage type
      const out = k.placed(k.round(rng.floats(N * C)), off, c.shape);
      const mean = k.placed(rng.floats(N), off, rows, 'float32'), rstd = k.placed(rng.floats(N), off, rows, 'float32');
      const x = k.placed(inp, off, c.shape);
      ops.layernormForward(out.view, mean.view, rstd.view, x.view, k.placed(w, off, [C]).view, k.placed(b, off, [C]).view);
      k.exact('layernorm inp (read only)', x.read('inp'), inp);
      const ref = R.layernormRef(R.f64(inp), R.f64(w), R.f64(b), N, C);
      k.close('layernorm out', out.read('out'), ref.out, tolOf(c));
      // the mean's float32 error is relative to the inputs, not to the (possibly ~0) mean
      k.within('layernorm mean', mean.read('mean'), ref.mean, 1e-6 * (Math.abs(c.shift) + c.scale));
      k.close('layernorm rstd', rstd.read('rstd'), ref.rstd, 'reduction', 0, k.rtolFloat32('reduction'));
    },
  })),
};

type Want = 'all' | 'dinp' | 'dweight' | 'dbias';
const layernormBackward: OpEntry = {
  op: 'layernormBackward',
  cases: CASES.flatMap((c) => (['all', 'dinp', 'dweight', 'dbias'] as Want[])
    .filter((want) => want === 'all' || sizes(c).N * sizes(c).C < 5000)
    .map((want) => ({
      name: `${label(c)} ${want === 'all' ? 'dinp, dweight, dbias' : `${want} alone`}, accumulates`,
      run(k: OpContext) {
        const { N, C } = sizes(c), off = c.offset ?? 0;
        const { rng, inp, w, b } = inputs(k, c);
        const dout = k.round(rng.floats(N * C));
        const x64 = R.f64(inp), w64 = R.f64(w), b64 = R.f64(b), d64 = R.f64(dout);
        // the statistics the backward is given: the reference forward's, as float32
        const stats = R.layernormRef(x64, w64, b64, N, C);
        const pre = { dinp: k.round(rng.floats(N * C, 0.5)), dweight: k.round(rng.floats(C, 0.5)), dbias: k.round(rng.floats(C, 0.5)) };
        const dinp = k.placed(pre.dinp, off, c.shape), dweight = k.placed(pre.dweight, off, [C]), dbias = k.placed(pre.dbias, off, [C]);
        const pick = (name: Want, t: typeof dinp) => (want === 'all' || want === name ? t.view : null);
        ops.layernormBackward(pick('dinp', dinp), pick('dweight', dweight), pick('dbias', dbias), k.placed(dout, off, c.shape).view,
          k.placed(inp, off, c.shape).view, k.placed(w, off, [C]).view,
          k.tensor(Float32Array.from(stats.mean), [N], 'float32'), k.tensor(Float32Array.from(stats.rstd), [N], 'float32'));
        const g = R.layernormBackwardRef(d64, x64, w64, stats.mean, stats.rstd, N, C);
        const L = (i: R.F64, ww: R.F64, bb: R.F64) => R.dot(d64, R.layernormRef(i, ww, bb, N, C).out);
        const outputs = [
          ['dinp', dinp, g.dinp, (x: R.F64) => L(x, w64, b64), inp, tolOf(c)],
          ['dweight', dweight, g.dweight, (x: R.F64) => L(x64, x, b64), w, tolOf(c)], // sums of dout * xhat: xhat's cancellation
          ['dbias', dbias, g.dbias, (x: R.F64) => L(x64, w64, x), b, 'reduction'],
        ] as const;
        for (const [name, t, analytic, loss, at, cls] of outputs) {
          const got = t.read(name);
          if (want !== 'all' && want !== name) k.exact(`${name} (not wanted) untouched`, got, pre[name]);
          else k.gradient(`layernorm ${name}`, got, analytic, cls, { loss, at, coords: 200 }, pre[name]);
        }
      },
    }))),
};

export const LAYERNORM: OpEntry[] = [layernormForward, layernormBackward];
