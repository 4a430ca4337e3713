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

// ---- the residual add fused with the LayerNorm after it ------------------------------------
// residual = a + b stored (one float32 rounding, then the storage type's), ln = LayerNorm of the
// stored residual: its reference is layernormRef of those stored values.
interface ResidualCase extends LayernormCase {
  /** residual_out is a itself (x = x + branch in place). */
  inPlace?: boolean;
}
const RESIDUAL_CASES: ResidualCase[] = [
  { shape: [3, 7, 6], shift: 0, scale: 1 },
  { shape: [4, 1], shift: 0.5, scale: 1 }, // C = 1: out = bias
  { shape: [4, 3, 16], shift: 300, scale: 1 },
  { shape: [9, 64], shift: 0.5, scale: 2, offset: 1 }, // unaligned: the CUDA scalar path
  { shape: [300, 37], shift: 0.5, scale: 2 },
  { shape: [5, 1023], shift: 0.5, scale: 2, inPlace: true },
  { shape: [2, 64, 768], shift: 0.5, scale: 2 },
  { shape: [2, 16, 768], shift: 0, scale: 1, inPlace: true },
];
const residualLabel = (c: ResidualCase) => `${label(c)}${c.inPlace ? ' in place (residual_out = a)' : ''}`;

function residualInputs(k: OpContext, c: ResidualCase) {
  const { N, C } = sizes(c);
  const rng = new R.SeededRandom(N * 37 + C + (c.offset ?? 0) + (c.inPlace ? 7 : 0));
  // the stream a and a smaller branch b, as in a transformer block
  const a = k.round(rng.floats(N * C, c.scale, c.shift)), b = k.round(rng.floats(N * C, 0.5));
  const w = k.round(rng.floats(C, 0.5, 1)), bias = k.round(rng.floats(C, 0.5));
  // one float32 rounding of the exact sum, then the storage type's (the same bits on every backend)
  const residual = k.stored(Float32Array.from(a, (v, i) => v + b[i]!));
  return { rng, a, b, w, bias, residual };
}

/** Runs the fused op on placed tensors; returns them and the read-back results. */
function runResidual(k: OpContext, c: ResidualCase, x: ReturnType<typeof residualInputs>) {
  const { N, C } = sizes(c), off = c.offset ?? 0, rows = c.shape.slice(0, -1);
  const ta = k.placed(x.a, off, c.shape), tb = k.placed(x.b, off, c.shape);
  const res = c.inPlace ? ta : k.placed(k.round(x.rng.floats(N * C)), off, c.shape);
  const out = k.placed(k.round(x.rng.floats(N * C)), off, c.shape);
  const mean = k.placed(x.rng.floats(N), off, rows, 'float32'), rstd = k.placed(x.rng.floats(N), off, rows, 'float32');
  const w = k.placed(x.w, off, [C]), bias = k.placed(x.bias, off, [C]);
  ops.residualLayernormForward(res.view, out.view, mean.view, rstd.view, ta.view, tb.view, w.view, bias.view);
  return { res, out, mean, rstd, w, tb, ta };
}

const residualLayernormForward: OpEntry = {
  op: 'residualLayernormForward',
  cases: [
    ...RESIDUAL_CASES.map((c) => ({
      name: residualLabel(c),
      run(k: OpContext) {
        const { N, C } = sizes(c);
        const x = residualInputs(k, c);
        const t = runResidual(k, c, x);
        k.exact('residual_out', t.res.read('residual_out'), x.residual);
        if (!c.inPlace) k.exact('a (read only)', t.ta.read('a'), x.a);
        k.exact('b (read only)', t.tb.read('b'), x.b);
        const ref = R.layernormRef(R.f64(x.residual), R.f64(x.w), R.f64(x.bias), N, C);
        k.close('ln_out', t.out.read('ln_out'), ref.out, tolOf(c));
        k.within('mean', t.mean.read('mean'), ref.mean, 1e-6 * (Math.abs(c.shift) + c.scale));
        k.close('rstd', t.rstd.read('rstd'), ref.rstd, 'reduction', 0, k.rtolFloat32('reduction'));
      },
    })),
    // The model's backward: layernormBackward with inp = residual_out, the op's own statistics, and
    // dinp holding the residual stream's gradient dres (the skip path), onto which it accumulates
    // LN's share: d/da of dot(dln, LN(a + b)) + dot(dres, a + b).
    // (Not C = 1: there rstd = 1/sqrt(eps) = 316 scales the float32 rounding of dout * weight - mean, which
    // cancels to 0 exactly only in float64, up to ~1e-5 of the skip path's gradient: layernormBackward's own cases have it.)
    ...RESIDUAL_CASES.filter((c) => c.shape.at(-1)! > 1 && (sizes(c).N * sizes(c).C < 5000 || c.shape.at(-1) === 768)).map((c) => ({
      name: `${residualLabel(c)}: the gradient through layernormBackward`,
      run(k: OpContext) {
        const { N, C } = sizes(c), off = c.offset ?? 0;
        const x = residualInputs(k, c);
        const t = runResidual(k, c, x);
        const dln = k.round(x.rng.floats(N * C)), dres = k.round(x.rng.floats(N * C, 0.5));
        const dinp = k.placed(dres, off, c.shape);
        ops.layernormBackward(dinp.view, null, null, k.placed(dln, off, c.shape).view, t.res.view, t.w.view, t.mean.view, t.rstd.view);
        const b64 = R.f64(x.b), w64 = R.f64(x.w), bias64 = R.f64(x.bias), dln64 = R.f64(dln), dres64 = R.f64(dres);
        const sum = (a: R.F64) => a.map((v, i) => v + b64[i]!);
        const loss = (a: R.F64) => R.dot(dln64, R.layernormRef(sum(a), w64, bias64, N, C).out) + R.dot(dres64, sum(a));
        const analyticAt = (r: R.F64) => {
          const st = R.layernormRef(r, w64, bias64, N, C);
          return R.layernormBackwardRef(dln64, r, w64, st.mean, st.rstd, N, C).dinp.map((g, i) => g + dres64[i]!);
        };
        // checked against central differences at the exact sum; compared at the residual as stored
        k.gradient('d residual (skip path + LayerNorm)', dinp.read('dinp'), analyticAt(sum(R.f64(x.a))), tolOf(c),
          { loss, at: x.a, coords: 200 }, undefined, analyticAt(R.f64(x.residual)));
      },
    })),
    {
      name: 'the same bits as add then layernormForward (the model relies on it)',
      run(k: OpContext) {
        for (const c of RESIDUAL_CASES) {
          const { N, C } = sizes(c), off = c.offset ?? 0, rows = c.shape.slice(0, -1);
          const x = residualInputs(k, c);
          const t = runResidual(k, c, x);
          // at the same offsets, so that the CUDA kernels take the same (vector or scalar) path
          const res = k.placed(new Float32Array(N * C), off, c.shape), out = k.placed(new Float32Array(N * C), off, c.shape);
          const mean = k.placed(new Float32Array(N), off, rows, 'float32'), rstd = k.placed(new Float32Array(N), off, rows, 'float32');
          ops.add(res.view, k.placed(x.a, off, c.shape).view, k.placed(x.b, off, c.shape).view);
          ops.layernormForward(out.view, mean.view, rstd.view, res.view, k.placed(x.w, off, [C]).view, k.placed(x.bias, off, [C]).view);
          const name = residualLabel(c);
          k.exact(`${name}: residual_out`, t.res.read('residual_out'), res.read('add'));
          k.exact(`${name}: ln_out`, t.out.read('ln_out'), out.read('layernorm out'));
          k.exact(`${name}: mean`, t.mean.read('mean'), mean.read('layernorm mean'));
          k.exact(`${name}: rstd`, t.rstd.read('rstd'), rstd.read('layernorm rstd'));
        }
      },
    },
  ],
};

export const LAYERNORM: OpEntry[] = [layernormForward, layernormBackward, residualLayernormForward];
