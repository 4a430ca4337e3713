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

// ---- the MLP's GELU fused with its Linears ---------------------------------------------------------
// CUDA in bf16 runs these in cuBLASLt's GELU epilogues when the aux matrix's leading dimension
// (N forward, K backward) is a multiple of 8 and every operand 16-byte aligned; the other cases
// take the fallback (the GEMM, then GELU's kernels).
interface GeluLinearCase {
  /** The Linear's input: [..., K] (forward: ln2; backward: act = gelu(pre)). */
  inShape: number[];
  N: number;
  offset?: number;
}
const GELU_FORWARD_CASES: GeluLinearCase[] = [
  { inShape: [3, 7, 6], N: 16 },
  { inShape: [2, 5, 8], N: 12 }, // N % 8 != 0
  { inShape: [4, 9], N: 24, offset: 1 }, // unaligned
  { inShape: [1, 1], N: 8 },
  { inShape: [2, 64, 48], N: 192 },
];
const GELU_BACKWARD_CASES: GeluLinearCase[] = [
  { inShape: [3, 7, 16], N: 6 },
  { inShape: [2, 5, 12], N: 5 }, // K % 8 != 0
  { inShape: [4, 24], N: 3, offset: 1 }, // unaligned
  { inShape: [1, 8], N: 1 },
  { inShape: [2, 64, 192], N: 48 },
];
const geluLabel = (c: GeluLinearCase) => `${JSON.stringify(c.inShape)} -> ${c.N}${c.offset ? ` offset=${c.offset}` : ''}`;

/** d/dx of the tanh GELU, analytically in float64 (checked against central differences by k.gradient). */
function geluGrad64(x: number): number {
  const a = Math.sqrt(2 / Math.PI), u = a * (x + 0.044715 * x ** 3), th = Math.tanh(u);
  return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * a * (1 + 3 * 0.044715 * x * x);
}

const matmulGeluForward: OpEntry = {
  op: 'matmulGeluForward',
  cases: GELU_FORWARD_CASES.map((c) => ({
    name: geluLabel(c),
    run(k: OpContext) {
      const K = c.inShape.at(-1)!, M = c.inShape.reduce((a, b) => a * b, 1) / K, N = c.N, off = c.offset ?? 0;
      const outShape = [...c.inShape.slice(0, -1), N];
      const rng = new R.SeededRandom(11 * M + 3 * K + N + off);
      const x = k.round(rng.floats(M * K)), W = k.round(rng.floats(N * K, 0.6)), b = k.round(rng.floats(N));
      // garbage in both outputs: the op overwrites them
      const out = k.placed(k.round(rng.floats(M * N)), off, outShape), pre = k.placed(k.round(rng.floats(M * N)), off, outShape);
      ops.matmulGeluForward(out.view, pre.view, k.placed(x, off, c.inShape).view, k.placed(W, off, [N, K]).view, k.placed(b, off, [N]).view);
      const preGot = pre.read('pre');
      k.close('pre', preGot, R.linearRef(R.f64(x), R.f64(W), R.f64(b), M, K, N), 'matmul');
      // GELU of pre as stored; CUDA's bf16 epilogue takes it of the float32 sum before pre's rounding: two roundings' budget
      k.close('out = gelu(pre)', out.read('out'), R.geluRef(R.f64(preGot)), 'transcendental', 0.1, 2 * k.rtol('transcendental'));
    },
  })),
};

const geluMatmulBackward: OpEntry = {
  op: 'geluMatmulBackward',
  cases: GELU_BACKWARD_CASES.flatMap((c) => (['all', 'dpre alone'] as const).flatMap((want) =>
    [true, false].filter((accumulate) => accumulate || want === 'all').map((accumulate) => ({
      name: `${geluLabel(c)} ${want === 'all' ? 'dpre, dweight, dbias' : want}, ${accumulate ? 'accumulates' : 'writes'} dweight and dbias`,
      run(k: OpContext) {
        const K = c.inShape.at(-1)!, M = c.inShape.reduce((a, b) => a * b, 1) / K, N = c.N, off = c.offset ?? 0;
        const outShape = [...c.inShape.slice(0, -1), N];
        const rng = new R.SeededRandom(13 * M + 5 * K + N + off);
        const preV = k.round(rng.floats(M * K, 2.5));
        const act = k.round(Float32Array.from(preV, R.geluScalar));
        const W = k.round(rng.floats(N * K, 0.3)), b = k.round(rng.floats(N)), dout = k.round(rng.floats(M * N));
        const prefill = { dweight: k.round(rng.floats(N * K, 0.5)), dbias: k.round(rng.floats(N, 0.5)) };
        if (!accumulate) {
          prefill.dweight = new Float32Array(N * K).fill(NaN);
          prefill.dbias = new Float32Array(N).fill(NaN);
        }
        const dpre = k.placed(new Float32Array(M * K).fill(NaN), off, c.inShape); // written, never read
        const dweight = k.placed(prefill.dweight, off, [N, K]), dbias = k.placed(prefill.dbias, off, [N]);
        const all = want === 'all';
        ops.geluMatmulBackward(dpre.view, all ? dweight.view : null, all ? dbias.view : null, k.placed(dout, off, outShape).view,
          k.placed(act, off, c.inShape).view, k.placed(preV, off, c.inShape).view, k.placed(W, off, [N, K]).view, { accumulate });
        const pre64 = R.f64(preV), act64 = R.f64(act), W64 = R.f64(W), b64 = R.f64(b), d64 = R.f64(dout);
        const g = R.linearBackwardRef(d64, act64, W64, M, K, N);
        const coords = Math.min(400, Math.floor(3e7 / (M * K * N)));
        // dpre: the loss through GELU and the Linear, differentiated at pre
        const lossPre = (v: R.F64) => R.dot(d64, R.linearRef(R.geluRef(v), W64, b64, M, K, N));
        const dpre64 = g.dx.map((d, i) => d * geluGrad64(pre64[i]!));
        // two roundings' budget: the CPU stores the GEMM's sum before the product with gelu' (as the unfused ops do)
        k.gradient('dpre', dpre.read('dpre'), dpre64, 'matmul', { loss: lossPre, at: preV, coords, floorFrac: 0.1, rtol: 2 * k.rtol('matmul') });
        if (!all) {
          k.exact('dweight (not wanted) untouched', dweight.read('dweight'), prefill.dweight);
          k.exact('dbias (not wanted) untouched', dbias.read('dbias'), prefill.dbias);
          return;
        }
        const pf = accumulate ? prefill : undefined;
        k.gradient('dweight', dweight.read('dweight'), g.dW, 'matmul', { loss: (v) => R.dot(d64, R.linearRef(act64, v, b64, M, K, N)), at: W, coords }, pf?.dweight);
        k.gradient('dbias', dbias.read('dbias'), g.db, 'reduction', { loss: (v) => R.dot(d64, R.linearRef(act64, W64, v, M, K, N)), at: b, coords }, pf?.dbias);
      },
    })))),
};

// Empty sides: with K = 0 there is no dpre, but dbias is still dout's column sums; with N = 0 dpre is zeros.
const geluMatmulBackwardEmpty: OpEntry = {
  op: 'geluMatmulBackward',
  cases: [{
    name: 'K = 0 (dbias still summed) and N = 0 (dpre written as zeros)',
    run(k: OpContext) {
      const dbias = k.tensor(new Float32Array(4).fill(7), [4]);
      ops.geluMatmulBackward(k.zeros([3, 0]), k.zeros([4, 0]), dbias, k.tensor(new Float32Array(12).fill(1), [3, 4]), k.zeros([3, 0]), k.zeros([3, 0]), k.zeros([4, 0]), { accumulate: false });
      k.exact('dbias (K = 0)', dbias, [3, 3, 3, 3]);
      const dpre = k.tensor(new Float32Array(24).fill(5), [3, 8]), ones = k.tensor(new Float32Array(24).fill(1), [3, 8]);
      ops.geluMatmulBackward(dpre, k.zeros([0, 8]), k.zeros([0]), k.zeros([3, 0]), ones, ones, k.zeros([0, 8]), { accumulate: false });
      k.exact('dpre (N = 0)', dpre, new Array(24).fill(0));
    },
  }],
};

export const MATMUL: OpEntry[] = [gemm, matmulForward, matmulBackward, matmulGeluForward, geluMatmulBackward, geluMatmulBackwardEmpty];
