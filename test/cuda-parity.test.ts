// CUDA vs CPU parity: every op on random inputs of several shapes (odd ones
// included) runs on both backends from the same data, and the results must
// agree by relative error ||cuda - cpu|| / ||cpu||: 1e-5 for float32 ops, 2e-3
// where tensor cores run TF32 (gemm, matmul, and attention when TF32 is on).
// Each element must also be within 10x that (relative to |cpu| plus a tenth
// of the largest |cpu|), so a few wrong elements cannot hide in a large norm.
// Copies and caches must agree exactly.
//
// Skipped, with the reason printed once, where CUDA is unavailable. Setting
// GPTCUDA_PARITY_DEVICE=cpu runs the same suite CPU-vs-CPU, a dry run that
// checks the suite's own wiring on machines without a GPU; pointing
// GPTCUDA_CUDA_LIBRARY at the emulated backend (test/cuda-emulated.test.ts)
// runs it against the CUDA code on the CPU.
import { afterEach, describe, expect, it } from 'vitest';

import { native } from '../ts/tensor/native.js';
import * as ops from '../ts/tensor/ops.js';
import { Tensor, type Device } from '../ts/tensor/tensor.js';
import * as R from './helpers/reference.js';

const cudaInfo = native().backends().cuda;
const OTHER: Device = process.env.GPTCUDA_PARITY_DEVICE === 'cpu' ? 'cpu' : 'cuda';
const enabled = OTHER === 'cpu' || cudaInfo.available;
if (!enabled) console.warn(`CUDA parity tests skipped: ${cudaInfo.reason ?? 'CUDA is not available'}`);

// TF32 tensor cores: on by default from compute capability 8.0 (GPTCUDA_TF32=0 turns them off).
const tf32 =
  OTHER === 'cuda' && enabled && process.env.GPTCUDA_TF32 !== '0' &&
  Number(native().deviceInfo('cuda').computeCapability.split('.')[0]) >= 8;
const F32 = 1e-5; // float32 kernels (different reduction orders and exp/tanh implementations only)
const TF32 = 2e-3; // tensor cores with 10-bit mantissas
const ATTN = tf32 ? TF32 : 1e-5; // attention uses TF32 tensor cores for head sizes <= 64 when TF32 is on


type Data = Float32Array | Int32Array;
interface Pair {
  cpu: Tensor;
  dev: Tensor;
}

const live: Tensor[] = [];
afterEach(() => {
  for (const t of live.splice(0)) if (!t.disposed) t.dispose();
});

/** The same data on the CPU and on the device under test. */
function pair(data: Data, shape: number[]): Pair {
  const cpu = Tensor.from(data, shape);
  live.push(cpu);
  const dev = Tensor.from(data, shape, { device: OTHER });
  live.push(dev);
  return { cpu, dev };
}
const zpair = (shape: number[]) => pair(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
const read = (t: Tensor) => (t.dtype === 'int32' ? t.toInt32Array() : t.toFloat32Array());

/** Runs `op` on both sides (tensors selected by `side`) and compares each named output. */
function both(op: (side: 'cpu' | 'dev') => void) {
  op('cpu');
  op('dev');
  if (OTHER === 'cuda') native().synchronize('cuda');
}
function expectParity(what: string, p: Pair, rtol: number, floorFrac = 0.1) {
  const a = read(p.dev), b = read(p.cpu);
  const r = R.closeness(a, b, 10 * rtol, floorFrac);
  const ok = r.ok && r.relL2 <= rtol;
  expect(ok, `${what} (${OTHER} vs cpu): relative error ${r.relL2.toExponential(3)} (tolerance ${rtol.toExponential(1)}); ${r.message}`).toBe(true);
}
function expectIdentical(what: string, p: Pair) {
  const a = read(p.dev), b = read(p.cpu);
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) expect.fail(`${what}: element ${i}: ${OTHER} ${a[i]}, cpu ${b[i]}`);
}

describe.skipIf(!enabled)(`CUDA parity (${OTHER} vs cpu${tf32 ? ', TF32 tensor cores' : ''})`, () => {
  // ---- elementwise and copies ---------------------------------------------------------
  for (const n of [1, 7, 1000, 100_003]) {
    it(`fill / scale / add / accumulate / copy n=${n}`, () => {
      const rng = new R.SeededRandom(n);
      const a = pair(rng.floats(n), [n]), b = pair(rng.floats(n), [n]);
      const out = zpair([n]);
      both((s) => ops.add(out[s], a[s], b[s]));
      expectIdentical('add', out);
      both((s) => ops.accumulate(out[s], a[s]));
      expectIdentical('accumulate', out);
      both((s) => ops.scale(out[s], 0.37));
      expectIdentical('scale', out);
      const win = Math.max(1, n >> 1);
      both((s) => ops.fill(out[s].view(n - win, [win]), -1.5));
      expectIdentical('fill (a view)', out);
      // device -> device, host -> device -> host round trips
      const c = zpair([n]);
      both((s) => ops.copy(c[s], out[s]));
      expectIdentical('copy', c);
      const back = Tensor.zeros([n]);
      live.push(back);
      ops.copy(back, c.dev);
      expect([...back.toFloat32Array()]).toEqual([...out.cpu.toFloat32Array()]);
      const toDev = Tensor.zeros([n], { device: OTHER });
      live.push(toDev);
      ops.copy(toDev, out.cpu);
      expect([...toDev.toFloat32Array()]).toEqual([...out.cpu.toFloat32Array()]);
      const ids = pair(rng.ints(n, -5, 1 << 30), [n]);
      const ids2 = Tensor.zeros([n], { dtype: 'int32', device: OTHER });
      live.push(ids2);
      ops.copy(ids2, ids.dev);
      expect([...ids2.toInt32Array()]).toEqual([...ids.cpu.toInt32Array()]);
    });
  }

  // ---- embedding --------------------------------------------------------------------------
  for (const [B, T, C, V, pos0] of [
    [3, 7, 6, 37, 0],
    [2, 1, 5, 11, 3],
    [4, 65, 96, 1003, 7],
  ] as const) {
    it(`embedding B=${B} T=${T} C=${C} V=${V} pos0=${pos0}`, () => {
      const rng = new R.SeededRandom(B * T * C);
      const P = pos0 + T + 2;
      const idData = rng.ints(B * T, 0, Math.min(V, 9)); // many repeats: the backward accumulates rows
      idData[0] = V - 1;
      const ids = pair(idData, [B, T]), wte = pair(rng.floats(V * C), [V, C]), wpe = pair(rng.floats(P * C), [P, C]);
      const out = zpair([B, T, C]);
      both((s) => ops.embeddingForward(out[s], ids[s], wte[s], wpe[s], pos0));
      expectParity('embedding out', out, F32);
      const dout = pair(rng.floats(B * T * C), [B, T, C]);
      const dwte = pair(rng.floats(V * C), [V, C]), dwpe = pair(rng.floats(P * C), [P, C]);
      both((s) => ops.embeddingBackward(dwte[s], dwpe[s], dout[s], ids[s], pos0));
      expectParity('dwte', dwte, F32);
      expectParity('dwpe', dwpe, F32);
    });
  }

  // ---- layernorm ----------------------------------------------------------------------------
  for (const shape of [[3, 7, 6], [2, 1, 5], [2, 64, 768], [5, 1023]]) {
    it(`layernorm ${JSON.stringify(shape)}`, () => {
      const C = shape.at(-1)!, N = shape.reduce((a, b) => a * b, 1) / C;
      const rng = new R.SeededRandom(N + C);
      const inp = pair(rng.floats(N * C, 2, 0.5), shape), w = pair(rng.floats(C, 0.3, 1), [C]), b = pair(rng.floats(C), [C]);
      const out = zpair(shape), mean = zpair([N]), rstd = zpair([N]);
      both((s) => ops.layernormForward(out[s], mean[s], rstd[s], inp[s], w[s], b[s]));
      expectParity('layernorm out', out, F32);
      expectParity('layernorm mean', mean, F32);
      expectParity('layernorm rstd', rstd, F32);
      const dout = pair(rng.floats(N * C), shape);
      const dinp = pair(rng.floats(N * C), shape), dw = pair(rng.floats(C), [C]), db = pair(rng.floats(C), [C]);
      both((s) => ops.layernormBackward(dinp[s], dw[s], db[s], dout[s], inp[s], w[s], mean[s], rstd[s]));
      expectParity('layernorm dinp', dinp, F32);
      expectParity('layernorm dweight', dw, F32);
      expectParity('layernorm dbias', db, F32);
    });
  }

  // ---- GEMM and Linear -------------------------------------------------------------------------
  for (const [M, N, K] of [[5, 7, 3], [1, 9, 13], [33, 17, 65], [128, 144, 48], [257, 129, 511]] as const) {
    it(`gemm M=${M} N=${N} K=${K}, all transpose combinations`, () => {
      const rng = new R.SeededRandom(M * N + K);
      for (const ta of [false, true])
        for (const tb of [false, true]) {
          const A = pair(rng.floats(M * K), ta ? [K, M] : [M, K]), Bm = pair(rng.floats(K * N), tb ? [N, K] : [K, N]);
          const C = pair(rng.floats(M * N), [M, N]);
          both((s) => ops.gemm(C[s], A[s], Bm[s], ta, tb, 0.75, 0.5));
          expectParity(`gemm transA=${ta} transB=${tb}`, C, TF32);
        }
    });
  }

  for (const [inShape, N] of [[[3, 7, 6], 18], [[2, 1, 5], 37], [[4, 65, 96], 288], [[2, 64, 768], 2304]] as const) {
    it(`matmul ${JSON.stringify(inShape)} -> ${N}`, () => {
      const K = inShape.at(-1)!, M = inShape.reduce((a: number, b: number) => a * b, 1) / K;
      const outShape = [...inShape.slice(0, -1), N];
      const rng = new R.SeededRandom(M * K + N);
      const x = pair(rng.floats(M * K), [...inShape]), W = pair(rng.floats(N * K, 0.1), [N, K]), b = pair(rng.floats(N), [N]);
      for (const withBias of [true, false]) {
        const out = pair(rng.floats(M * N), outShape);
        both((s) => ops.matmulForward(out[s], x[s], W[s], withBias ? b[s] : null));
        expectParity(`matmul out (bias ${withBias})`, out, TF32);
      }
      const dout = pair(rng.floats(M * N), outShape);
      const dx = pair(rng.floats(M * K), [...inShape]), dW = pair(rng.floats(N * K), [N, K]), db = pair(rng.floats(N), [N]);
      both((s) => ops.matmulBackward(dx[s], dW[s], db[s], dout[s], x[s], W[s]));
      expectParity('matmul dinp', dx, TF32);
      expectParity('matmul dweight', dW, TF32);
      expectParity('matmul dbias', db, F32);
      // null gradients are skipped on both
      const dW2 = pair(rng.floats(N * K), [N, K]);
      both((s) => ops.matmulBackward(null, dW2[s], null, dout[s], x[s], W[s]));
      expectParity('matmul dweight alone', dW2, TF32);
    });
  }

  // GELU and dropout: op cases (helpers/op-cases.ts) against float64 references on every device.

  // ---- attention ---------------------------------------------------------------------------------------
  for (const [B, T, C, NH] of [
    [3, 7, 6, 2], // head size 3
    [2, 1, 8, 2], // T = 1
    [1, 5, 4, 4], // head size 1
    [2, 64, 48, 4],
    [1, 129, 64, 2], // T past a tile boundary, head size 32
    [2, 37, 192, 3], // head size 64
    [1, 33, 256, 2], // head size 128
    [1, 17, 256, 1], // head size 256 (the limit)
  ] as const) {
    for (const p of [0, 0.2]) {
      it(`attention B=${B} T=${T} C=${C} NH=${NH} dropout=${p}`, (ctx) => {
        const rng = new R.SeededRandom(B * T * C + NH);
        const drng = { seed: 42 + T, stream: 7 };
        const qkv = pair(rng.floats(B * T * 3 * C), [B, T, 3 * C]);
        const out = zpair([B, T, C]), lse = zpair([B, NH, T]);
        try {
          both((s) => ops.attentionForward(out[s], lse[s], qkv[s], NH, p, drng));
        } catch (e) {
          // Head sizes above 128 need ~217 KiB of shared memory per block (Hopper);
          // smaller GPUs must refuse them with this error, and only them.
          const msg = (e as Error).message;
          if (C / NH > 128 && /bytes of shared memory per block, the GPU allows/.test(msg)) return ctx.skip(msg);
          throw e;
        }
        expectParity('attention out', out, ATTN);
        expectParity('attention lse', lse, ATTN); // scores from TF32 products when TF32 is on
        const dout = pair(rng.floats(B * T * C), [B, T, C]);
        const dqkv = pair(rng.floats(B * T * 3 * C), [B, T, 3 * C]); // pre-filled: the backward accumulates
        both((s) => ops.attentionBackward(dqkv[s], dout[s], qkv[s], out[s], lse[s], NH, p, drng));
        expectParity('attention dqkv', dqkv, ATTN);
      });
    }
  }

  for (const [B, T, C, NH, Tmax, chunks] of [
    [2, 9, 12, 3, 11, [4, 1, 1, 1, 1, 1]],
    [3, 7, 6, 2, 10, [2, 3, 1, 1]],
    [1, 70, 256, 4, 96, [33, ...Array<number>(37).fill(1)]],
  ] as const) {
    it(`attentionDecode B=${B} T=${T} C=${C} NH=${NH} Tmax=${Tmax}`, () => {
      const hs = C / NH;
      const all = new R.SeededRandom(T * C).floats(B * T * 3 * C);
      const kc = zpair([B, NH, Tmax, hs]), vc = zpair([B, NH, Tmax, hs]);
      let pos = 0;
      for (const len of chunks) {
        const part = new Float32Array(B * len * 3 * C);
        for (let b = 0; b < B; b++) part.set(all.subarray((b * T + pos) * 3 * C, (b * T + pos + len) * 3 * C), b * len * 3 * C);
        const qkv = pair(part, [B, len, 3 * C]), out = zpair([B, len, C]);
        both((s) => ops.attentionDecode(out[s], kc[s], vc[s], qkv[s], pos));
        expectParity(`decode out at ${pos}`, out, ATTN);
        pos += len;
      }
      expectIdentical('k cache', kc);
      expectIdentical('v cache', vc);
    });
  }

  // ---- classifier ------------------------------------------------------------------------------------
  for (const [N, V] of [[21, 37], [1, 2], [65, 1003], [4, 50257]] as const) {
    it(`cross-entropy N=${N} V=${V}`, () => {
      const rng = new R.SeededRandom(N * V);
      const logitsData = rng.floats(N * V, 3);
      for (let v = 0; v < V; v++) logitsData[v] = 80 + 10 * rng.normal(); // a row whose exp overflows float32
      const tgt = rng.ints(N, 0, V);
      tgt[N - 1] = V - 1;
      if (N > 2) tgt[1] = -100;
      const logits = pair(logitsData, [N, V]), targets = pair(tgt, [N]);
      const losses = pair(new Float32Array(N).fill(9), [N]);
      both((s) => ops.crossentropyForward(losses[s], logits[s], targets[s]));
      expectParity('losses', losses, F32, 0.01);
      const nValid = tgt.filter((t) => t !== -100).length;
      const losses2 = zpair([N]), dlogits = pair(rng.floats(N * V, 50), [N, V]);
      both((s) => ops.crossentropyForwardBackward(losses2[s], dlogits[s], logits[s], targets[s], 1 / nValid));
      expectParity('fused losses', losses2, F32, 0.01);
      expectParity('dlogits', dlogits, F32, 0.01);
      // in place on the device equals out of place
      const inPlace = pair(logitsData, [N, V]), losses3 = zpair([N]);
      both((s) => ops.crossentropyForwardBackward(losses3[s], inPlace[s], inPlace[s], targets[s], 1 / nValid));
      expectParity('in-place dlogits', inPlace, F32, 0.01);
      expectParity('in-place dlogits vs out of place', { cpu: dlogits.cpu, dev: inPlace.dev }, F32, 0.01);
    });
  }

  // ---- optimizer ----------------------------------------------------------------------------------------
  for (const n of [1, 1001, 100_003]) {
    it(`adamw n=${n}, 3 steps`, () => {
      const rng = new R.SeededRandom(n);
      const params = pair(rng.floats(n), [n]), m = zpair([n]), v = zpair([n]);
      for (let step = 1; step <= 3; step++) {
        const g = pair(rng.floats(n, step === 2 ? 5 : 0.1), [n]);
        both((s) => ops.adamw(params[s], g[s], m[s], v[s], { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step }));
        expectParity(`params after step ${step}`, params, F32);
        expectParity(`m after step ${step}`, m, F32);
        expectParity(`v after step ${step}`, v, F32);
      }
    });
  }

  for (const n of [1, 1000, 1_000_003]) {
    it(`sumSquares and clipByNorm n=${n}`, () => {
      const rng = new R.SeededRandom(n);
      const x = pair(rng.floats(n), [n]);
      const nsq = pair(Float32Array.of(123), [1]);
      both((s) => ops.sumSquares(nsq[s], x[s]));
      expectParity('sum of squares', nsq, F32);
      const norm = Math.sqrt(nsq.cpu.item());
      for (const maxNorm of [norm * 2, norm / 4]) {
        const y = pair(x.cpu.toFloat32Array(), [n]);
        both((s) => ops.clipByNorm(y[s], nsq[s], maxNorm));
        expectParity(`clipped to ${maxNorm}`, y, F32);
      }
    });
  }

  // ---- errors the device reports asynchronously ----------------------------------------------------------
  it.skipIf(OTHER !== 'cuda')('an out-of-range token id on the device is reported, and the device keeps working', () => {
    const out = Tensor.zeros([1, 2, 3], { device: 'cuda' }), wte = Tensor.zeros([5, 3], { device: 'cuda' });
    const wpe = Tensor.zeros([4, 3], { device: 'cuda' }), ids = Tensor.from(Int32Array.from([0, 9]), [1, 2], { device: 'cuda' });
    live.push(out, wte, wpe, ids);
    expect(() => {
      ops.embeddingForward(out, ids, wte, wpe);
      native().synchronize('cuda');
    }).toThrow(/token|out of range|9/i);
    const a = pair(Float32Array.of(1, 2, 3), [3]), r = zpair([3]);
    both((s) => ops.add(r[s], a[s], a[s]));
    expect([...r.dev.toFloat32Array()]).toEqual([2, 4, 6]);
  });

  it.skipIf(OTHER !== 'cuda')('tensors on different devices are refused, naming the devices', () => {
    const a = pair(Float32Array.of(1, 2), [2]);
    expect(() => ops.add(a.cpu, a.cpu, a.dev)).toThrow(/add:.*same device/);
  });
});
