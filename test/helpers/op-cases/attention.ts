// Causal self-attention forward (out and lse), backward (dqkv, accumulated),
// with and without dropout, and decoding with a KV cache. Head sizes cover
// each branch of the CUDA dispatch (native/cuda/attention.cu): the tensor-core
// kernels (hs <= 64 when TF32 is on: TF32 in float32, bf16 in bfloat16) and the
// CUDA-core kernels padded to HSP = 32, 64, 128 and 256; T = 1 and T past the 64-row tiles;
// head sizes that are not a multiple of 4 (the scalar loads); unaligned qkv.
// Decoding covers the tiled prefill (pos0 = 0 and >= 32 new positions), the
// one-query-per-block decode kernel, multi-token chunks and a full cache.
import { expect } from 'vitest';

import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpContext, type OpEntry, type TolClass } from './context.js';

interface AttentionCase {
  B: number; T: number; C: number; NH: number;
  /** Std of the qkv entries (default 0.8): 4 gives scores of std 16, a near one-hot softmax. */
  scale?: number;
  /** Element offset of qkv (and dqkv, dout) in their buffers (1: unaligned, the scalar loads). */
  offset?: number;
  /** Dropout probabilities to run (default 0 and 0.25). */
  ps?: number[];
}
const CASES: AttentionCase[] = [
  { B: 3, T: 7, C: 6, NH: 2 }, // hs 3
  { B: 2, T: 1, C: 8, NH: 2 }, // a single position
  { B: 1, T: 5, C: 4, NH: 4 }, // hs 1
  { B: 1, T: 9, C: 8, NH: 1, scale: 4 },
  { B: 2, T: 9, C: 32, NH: 2, offset: 1 }, // hs 16, unaligned
  { B: 2, T: 64, C: 48, NH: 4 }, // hs 12, one full tile
  { B: 1, T: 129, C: 64, NH: 2, ps: [0.2] }, // hs 32, past two tile boundaries
  { B: 2, T: 37, C: 192, NH: 3, ps: [0.2] }, // hs 64, several batches and heads
  { B: 1, T: 65, C: 33, NH: 1, ps: [0] }, // hs 33: HSP 64 (or tensor cores), scalar loads
  { B: 1, T: 130, C: 128, NH: 2, ps: [0, 0.1] }, // hs 64, three tiles
  { B: 1, T: 40, C: 130, NH: 2, ps: [0] }, // hs 65: HSP 128
  { B: 1, T: 70, C: 100, NH: 1, ps: [0.1] }, // hs 100: HSP 128, not a multiple of 4
  { B: 1, T: 33, C: 256, NH: 2, ps: [0] }, // hs 128
  { B: 1, T: 17, C: 256, NH: 1, ps: [0, 0.2] }, // hs 256, the limit: HSP 256
];
const label = (c: AttentionCase, p: number) =>
  `B=${c.B} T=${c.T} C=${c.C} NH=${c.NH} hs=${c.C / c.NH} dropout=${p}${c.scale ? ` scale=${c.scale}` : ''}${c.offset ? ` offset=${c.offset}` : ''}`;
const tolOf = (c: AttentionCase): TolClass => (c.scale && c.scale > 1 ? 'sharpAttention' : 'attention');
const withPs = (c: AttentionCase) => (c.ps ?? [0, 0.25]).map((p) => [c, p] as const);

/** The keep predicate as a lookup table (Philox per call would dominate the finite differences). */
function dropoutOf(c: AttentionCase, p: number, rng: { seed: number; stream: number }) {
  if (p === 0) return undefined;
  const { B, NH, T } = c, keep = R.attentionKeep(rng.seed, rng.stream, p, NH, T);
  const m = new Uint8Array(B * NH * T * T);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < NH; h++)
      for (let t = 0; t < T; t++) for (let s = 0; s <= t; s++) m[((b * NH + h) * T + t) * T + s] = keep(b, h, t, s) ? 1 : 0;
  return { p, keep: (b: number, h: number, t: number, s: number) => m[((b * NH + h) * T + t) * T + s] === 1 };
}

function inputs(k: OpContext, c: AttentionCase, p: number) {
  const rng = new R.SeededRandom(c.B * 100 + c.T * 10 + c.C + c.NH + p * 1000 + (c.offset ?? 0));
  const drng = { seed: 1000 + c.T, stream: 77 };
  return { rng, drng, qkv: k.round(rng.floats(c.B * c.T * 3 * c.C, c.scale ?? 0.8)), drop: dropoutOf(c, p, drng) };
}

/**
 * Head sizes above 128 need ~217 KiB of shared memory per block (Hopper);
 * smaller GPUs (and the sm_80 emulation) must refuse them with this error, and only them.
 */
function refusedForSharedMemory(k: OpContext, c: AttentionCase, run: () => void): boolean {
  try {
    run();
    return false;
  } catch (e) {
    const msg = (e as Error).message;
    if (k.device === 'cuda' && c.C / c.NH > 128 && /bytes of shared memory per block, the GPU allows/.test(msg)) return true;
    throw e;
  }
}

const attentionForward: OpEntry = {
  op: 'attentionForward',
  cases: CASES.flatMap(withPs).map(([c, p]) => ({
    name: label(c, p),
    run(k: OpContext) {
      const { B, T, C, NH } = c;
      const { rng, drng, qkv, drop } = inputs(k, c, p);
      const out = k.zeros([B, T, C]), lse = k.tensor(rng.floats(B * NH * T), [B, NH, T], 'float32'); // garbage: written
      const q = k.placed(qkv, c.offset ?? 0, [B, T, 3 * C]);
      if (refusedForSharedMemory(k, c, () => ops.attentionForward(out, lse, q.view, NH, p, drng))) return;
      const ref = R.attentionRef(R.f64(qkv), B, T, C, NH, drop);
      k.close('attention out', out, ref.out, tolOf(c));
      k.close('attention lse', lse, ref.lse, tolOf(c), 0.01, k.rtolFloat32(tolOf(c))); // float32 whatever the storage type
      k.exact('qkv (read only)', q.read('qkv'), qkv);
    },
  })),
};

const attentionBackward: OpEntry = {
  op: 'attentionBackward',
  cases: CASES.flatMap(withPs).map(([c, p]) => ({
    name: `${label(c, p)}, accumulates`,
    run(k: OpContext) {
      const { B, T, C, NH } = c, off = c.offset ?? 0, hs = C / NH;
      const { rng, drng, qkv, drop } = inputs(k, c, p);
      const q64 = R.f64(qkv);
      // the forward results the backward is given: the reference's, as float32 (out as stored: rounded for bfloat16)
      const ref = R.attentionRef(q64, B, T, C, NH, drop);
      const dout = k.round(rng.floats(B * T * C)), d64 = R.f64(dout), prefill = k.round(rng.floats(B * T * 3 * C, 0.5));
      const dqkv = k.placed(prefill, off, [B, T, 3 * C]);
      const outStored = k.round(Float32Array.from(ref.out));
      const run = () => ops.attentionBackward(dqkv.view, k.placed(dout, off, [B, T, C]).view, k.placed(qkv, off, [B, T, 3 * C]).view,
        k.tensor(outStored, [B, T, C]), k.tensor(Float32Array.from(ref.lse), [B, NH, T], 'float32'), NH, p, drng);
      if (refusedForSharedMemory(k, c, run)) return;
      const analytic = R.attentionBackwardRef(q64, d64, B, T, C, NH, drop);
      // the tolerance can tell: the gradient without the dropout mask would be rejected
      if (drop && T > 1) expect(R.closeness(R.attentionBackwardRef(q64, d64, B, T, C, NH), analytic, k.rtol(tolOf(c))).ok).toBe(false);
      // each central difference costs two forwards of ~B NH T^2 hs multiply-adds
      const coords = Math.min(400, Math.floor(3e7 / (B * NH * T * T * hs)));
      // bfloat16: the op's D = rowsum(dO * O) uses the rounded out it is given (~2^-9 off, which a near
      // one-hot softmax turns into a large relative error of dq), so it is compared with the backward of that out
      const given = k.dtype === 'bfloat16' ? R.attentionBackwardRef(q64, d64, B, T, C, NH, drop, R.f64(outStored)) : undefined;
      k.gradient('attention dqkv', dqkv.read('dqkv'), analytic, tolOf(c),
        { loss: (x) => R.dot(d64, R.attentionRef(x, B, T, C, NH, drop).out), at: qkv, coords }, prefill, given);
    },
  })),
};

// ---- decode ------------------------------------------------------------------------------------------
interface DecodeCase {
  B: number; T: number; C: number; NH: number; Tmax: number;
  /** New positions per call, in order, summing to T. */
  chunks: number[];
}
const ones = (n: number) => Array<number>(n).fill(1);
const DECODE_CASES: DecodeCase[] = [
  { B: 2, T: 9, C: 12, NH: 3, Tmax: 11, chunks: [4, ...ones(5)] },
  { B: 2, T: 9, C: 12, NH: 3, Tmax: 9, chunks: ones(9) }, // up to the last slot of the cache
  { B: 2, T: 9, C: 12, NH: 3, Tmax: 12, chunks: [9] },
  { B: 3, T: 7, C: 6, NH: 2, Tmax: 10, chunks: [2, 3, 1, 1] }, // hs 3, a multi-token chunk after a prefill
  { B: 1, T: 40, C: 48, NH: 4, Tmax: 64, chunks: [17, ...ones(23)] },
  { B: 1, T: 36, C: 256, NH: 4, Tmax: 50, chunks: [33, 1, 2] }, // hs 64: a tiled prefill (>= 32 positions at 0)
  { B: 1, T: 36, C: 100, NH: 1, Tmax: 300, chunks: [32, 1, 3] }, // hs 100: HSP 128 prefill, scalar decode loads
  { B: 1, T: 34, C: 256, NH: 2, Tmax: 34, chunks: [32, 1, 1] }, // hs 128 up to the last slot
  { B: 1, T: 4, C: 256, NH: 1, Tmax: 6, chunks: ones(4) }, // hs 256, the decode kernel's limit
];

const attentionDecode: OpEntry = {
  op: 'attentionDecode',
  cases: DECODE_CASES.map((c) => ({
    name: `B=${c.B} T=${c.T} C=${c.C} NH=${c.NH} hs=${c.C / c.NH} Tmax=${c.Tmax} chunks=${JSON.stringify(c.chunks)}`,
    run(k: OpContext) {
      const { B, T, C, NH, Tmax, chunks } = c, hs = C / NH;
      const rng = new R.SeededRandom(T * 5 + C + chunks.length);
      const qkv = k.round(rng.floats(B * T * 3 * C));
      const garbage = { k: k.round(rng.floats(B * NH * Tmax * hs)), v: k.round(rng.floats(B * NH * Tmax * hs)) };
      const kc = k.tensor(garbage.k, [B, NH, Tmax, hs]), vc = k.tensor(garbage.v, [B, NH, Tmax, hs]);
      const got = new Float32Array(B * T * C);
      let pos = 0;
      for (const len of chunks) {
        const part = new Float32Array(B * len * 3 * C);
        for (let b = 0; b < B; b++) part.set(qkv.subarray((b * T + pos) * 3 * C, (b * T + pos + len) * 3 * C), b * len * 3 * C);
        const out = k.zeros([B, len, C]);
        ops.attentionDecode(out, kc, vc, k.tensor(part, [B, len, 3 * C]), pos);
        const o = k.read(out);
        for (let b = 0; b < B; b++) got.set(o.subarray(b * len * C, (b + 1) * len * C), (b * T + pos) * C);
        pos += len;
      }
      k.close('decode out vs causal attention over the whole sequence', got, R.attentionRef(R.f64(qkv), B, T, C, NH).out, 'attention');
      // the caches: K and V of every position so far, bit for bit; slots past T untouched
      const want = { k: Float32Array.from(garbage.k), v: Float32Array.from(garbage.v) };
      for (let b = 0; b < B; b++)
        for (let h = 0; h < NH; h++)
          for (let t = 0; t < T; t++)
            for (let d = 0; d < hs; d++) {
              const at = ((b * NH + h) * Tmax + t) * hs + d, src = (b * T + t) * 3 * C + h * hs + d;
              want.k[at] = qkv[src + C]!;
              want.v[at] = qkv[src + 2 * C]!;
            }
      k.exact('k cache', kc, want.k);
      k.exact('v cache', vc, want.v);
    },
  })),
};

export const ATTENTION: OpEntry[] = [attentionForward, attentionBackward, attentionDecode];
