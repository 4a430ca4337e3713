// GEMM (all transpose combinations, alpha/beta) and Linear (y = x W^T + b)
// forward and backward: odd sizes, M or N of 1, K past the CPU GEMM's cache
// blocks (384 in K, 768 in N), C past the bf16 GEMM's tiles, unaligned views.
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpContext, type OpEntry } from './context.js';

// ---- gemm ------------------------------------------------------------------------------------------
// [520, 1030, 9]: past the CPU bf16 GEMM's 512 x 1024 tiles of C in both dimensions, every transpose
const GEMM_SHAPES: [M: number, N: number, K: number][] = [[5, 7, 3], [1, 9, 13], [6, 1, 1], [33, 17, 65], [128, 144, 48], [67, 785, 401], [257, 129, 511], [520, 1030, 9]];

const gemm: OpEntry = {
  op: 'gemm',
  cases: GEMM_SHAPES.flatMap(([M, N, K]) => ([[false, false], [true, false], [false, true], [true, true]] as const).map(([transA, transB]) => ({
    name: `M=${M} N=${N} K=${K} transA=${transA} transB=${transB}`,
    run(k: OpContext) {
      const rng = new R.SeededRandom(M * 7 + N * 13 + K + (transA ? 1 : 0) + (transB ? 2 : 0));
      const A = k.round(rng.floats(M * K)), Bm = k.round(rng.floats(K * N)), C0 = k.round(rng.floats(M * N));
      const tA = k.tensor(A, transA ? [K, M] : [M, K]), tB = k.tensor(Bm, transB ? [N, K] : [K, N]);
      const combos: [number, number][] = M * N * K > 1e7 ? [[0.75, 0.5]] : [[1, 0], [0.75, 0.5], [-2, 1]];
      for (const [alpha, beta] of combos) {
        // C at an unaligned offset: beta C is read from, and the result written to, the view only
        const c = k.placed(C0, 1, [M, N]);
        ops.gemm(c.view, tA, tB, transA, transB, alpha, beta);
        k.close(`gemm alpha=${alpha} beta=${beta}`, c.read('gemm C'), R.gemmRef(transA, transB, M, N, K, alpha, R.f64(A), R.f64(Bm), beta, R.f64(C0)), 'matmul');
      }
    },
  }))),
};

// ---- matmul (Linear) ---------------------------------------------------------------------------------
interface LinearCase {
  inShape: number[];
  N: number;
  /** Element offset of every float tensor in its buffer (1: unaligned). */
  offset?: number;
}
const LINEAR_CASES: LinearCase[] = [
  { inShape: [3, 7, 6], N: 18 },
  { inShape: [2, 1, 5], N: 37 },
  { inShape: [4, 9], N: 1 },
  { inShape: [1, 1], N: 3 },
  { inShape: [2, 64, 48], N: 144 },
  { inShape: [5, 33], N: 17, offset: 1 },
  { inShape: [4, 65, 96], N: 288 },
  { inShape: [2, 64, 768], N: 2304 }, // GPT-2's attention projection: several GEMM cache blocks
];
const label = (c: LinearCase) => `${JSON.stringify(c.inShape)} -> ${c.N}${c.offset ? ` offset=${c.offset}` : ''}`;
const sizes = (c: LinearCase) => {
  const K = c.inShape.at(-1)!;
  return { K, M: c.inShape.reduce((a, b) => a * b, 1) / K, N: c.N, outShape: [...c.inShape.slice(0, -1), c.N] };
};
function inputs(k: OpContext, c: LinearCase) {
  const { M, K, N } = sizes(c);
  const rng = new R.SeededRandom(M + 3 * K + 5 * N + (c.offset ?? 0));
  return { rng, x: k.round(rng.floats(M * K)), W: k.round(rng.floats(N * K, 0.3)), b: k.round(rng.floats(N)) };
}

const matmulForward: OpEntry = {
  op: 'matmulForward',
  cases: LINEAR_CASES.flatMap((c) => [true, false].map((withBias) => ({
    name: `${label(c)} ${withBias ? 'with' : 'without'} bias`,
    run(k: OpContext) {
      const { M, K, N, outShape } = sizes(c), off = c.offset ?? 0;
      const { rng, x, W, b } = inputs(k, c);
      const out = k.placed(k.round(rng.floats(M * N)), off, outShape); // garbage: the forward overwrites
      ops.matmulForward(out.view, k.placed(x, off, c.inShape).view, k.placed(W, off, [N, K]).view, withBias ? k.placed(b, off, [N]).view : null);
      k.close('matmul out', out.read('matmul out'), R.linearRef(R.f64(x), R.f64(W), withBias ? R.f64(b) : null, M, K, N), 'matmul');
    },
  }))),
};

type Want = 'all' | 'dinp' | 'dweight' | 'dbias' | 'none';
// accumulate: false writes dweight and dbias over NaN-filled buffers (never read) and still accumulates dinp.
const matmulBackward: OpEntry = {
  op: 'matmulBackward',
  cases: LINEAR_CASES.flatMap((c) => (['all', 'dinp', 'dweight', 'dbias', 'none'] as Want[])
    .filter((want) => want === 'all' || sizes(c).M * sizes(c).K * sizes(c).N < 1e6)
    .flatMap((want) => [true, false].filter((accumulate) => accumulate || want === 'all').map((accumulate) => ({
      name: `${label(c)} ${want === 'all' ? 'dinp, dweight, dbias' : want === 'none' ? 'nothing wanted' : `${want} alone`}, ${accumulate ? 'accumulates' : 'writes dweight and dbias'}`,
      run(k: OpContext) {
        const { M, K, N, outShape } = sizes(c), off = c.offset ?? 0;
        const { rng, x, W, b } = inputs(k, c);
        const dout = k.round(rng.floats(M * N));
        const x64 = R.f64(x), W64 = R.f64(W), b64 = R.f64(b), d64 = R.f64(dout);
        const pre = { dinp: k.round(rng.floats(M * K, 0.5)), dweight: k.round(rng.floats(N * K, 0.5)), dbias: k.round(rng.floats(N, 0.5)) };
        if (!accumulate) {
          pre.dweight = new Float32Array(N * K).fill(NaN);
          pre.dbias = new Float32Array(N).fill(NaN);
        }
        const dinp = k.placed(pre.dinp, off, c.inShape), dweight = k.placed(pre.dweight, off, [N, K]), dbias = k.placed(pre.dbias, off, [N]);
        const pick = (name: Want, t: typeof dinp) => (want === 'all' || want === name ? t.view : null);
        ops.matmulBackward(pick('dinp', dinp), pick('dweight', dweight), pick('dbias', dbias), k.placed(dout, off, outShape).view,
          k.placed(x, off, c.inShape).view, k.placed(W, off, [N, K]).view, { accumulate });
        const g = R.linearBackwardRef(d64, x64, W64, M, K, N);
        const L = (xx: R.F64, ww: R.F64, bb: R.F64) => R.dot(d64, R.linearRef(xx, ww, bb, M, K, N));
        // each central difference costs two M K N forwards: the largest cases check only the
        // directional derivative (the same analytic backward is checked per coordinate on the smaller ones)
        const coords = Math.min(400, Math.floor(3e7 / (M * K * N)));
        const outputs = [
          ['dinp', dinp, g.dx, (v: R.F64) => L(v, W64, b64), x, 'matmul', true],
          ['dweight', dweight, g.dW, (v: R.F64) => L(x64, v, b64), W, 'matmul', accumulate],
          ['dbias', dbias, g.db, (v: R.F64) => L(x64, W64, v), b, 'reduction', accumulate],
        ] as const;
        for (const [name, t, analytic, loss, at, cls, accumulated] of outputs) {
          const got = t.read(name);
          if (want !== 'all' && want !== name) k.exact(`${name} (not wanted) untouched`, got, pre[name]);
          else k.gradient(`matmul ${name}`, got, analytic, cls, { loss, at, coords }, accumulated ? pre[name] : undefined);
        }
      },
    })))),
};

export const MATMUL: OpEntry[] = [gemm, matmulForward, matmulBackward];
