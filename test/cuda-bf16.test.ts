// The CUDA backend's bfloat16 ops (on the emulator in npm test, on the GPU
// when there is one). Inputs are rounded to bf16 on the device (convert); the
// expected values are float64 references computed here from those rounded
// values, so what is measured is the op's own error: float32 arithmetic and
// one bf16 rounding of each output (relative error <= 1e-2, the bf16 budget).
// AdamW's bf16 copy is checked bit for bit against an independent Philox4x32-10
// and stochastic rounding written from the contract in backend_ops_typed.def,
// and against the CPU backend's copy wherever the two float32 masters agree.
import { afterEach, describe, expect, it } from 'vitest';

import { GPTModel } from '../ts/model/gpt.js';
import { native } from '../ts/tensor/native.js';
import * as ops from '../ts/tensor/ops.js';
import { Tensor } from '../ts/tensor/tensor.js';
import { AdamW } from '../ts/train/optimizer.js';
import * as R from './helpers/reference.js';
import { roundingBits } from './helpers/op-cases/bf16.js';

const cuda = native().backends().cuda;
if (!cuda.available) console.warn(`bf16 CUDA ops skipped: ${cuda.reason ?? 'CUDA is not available'}`);

const RTOL = 1e-2;
const live: Tensor[] = [];
afterEach(() => {
  for (const t of live.splice(0)) if (!t.disposed) t.dispose();
});
const keep = (t: Tensor) => (live.push(t), t);

/** A float32 CUDA tensor. */
const f32 = (x: Float32Array, shape = [x.length]) => keep(Tensor.from(x, shape, { device: 'cuda' }));
const zeros32 = (shape: number[]) => keep(Tensor.zeros(shape, { device: 'cuda' }));
/**
 * A bf16 CUDA tensor holding x rounded to bf16 (by convert), at element
 * `offset` of its buffer (offset % 8 != 0: not 16-byte aligned, the scalar
 * paths), and its values in float64.
 */
function bf(x: Float32Array, shape = [x.length], offset = 0): { t: Tensor; v: R.F64 } {
  const base = keep(Tensor.zeros([x.length + offset], { device: 'cuda', dtype: 'bfloat16' }));
  const t = offset ? keep(base.view(offset, shape)) : base.view(0, shape);
  if (!offset) live.push(t);
  ops.convert(t, f32(x));
  return { t, v: R.f64(t.toFloat32Array()) };
}
const close = (what: string, actual: Tensor | ArrayLike<number>, expected: ArrayLike<number>, rtol = RTOL, floor = 0.1) => {
  const a = actual instanceof Tensor ? actual.toFloat32Array() : actual;
  const r = R.closeness(a, expected, rtol, floor);
  expect(r.ok, `${what}: ${r.message}`).toBe(true);
};
const add64 = (a: R.F64, b: ArrayLike<number>) => a.map((x, i) => x + b[i]!);

describe.skipIf(!cuda.available)('bf16 ops on CUDA', () => {
  describe('elementwise', () => {
    for (const [n, offset] of [[1031, 0], [1031, 1], [5, 0], [64, 3]] as const) {
      const tag = `n=${n} offset=${offset}`;
      it(`fill, scale, add, accumulate ${tag}`, () => {
        const rng = new R.SeededRandom(n + offset);
        const a = bf(rng.floats(n), [n], offset), b = bf(rng.floats(n), [n], offset);
        const x = bf(new Float32Array(n), [n], offset);
        ops.fill(x.t, 0.3);
        expect(new Set(x.t.toFloat32Array())).toEqual(new Set([bf16Value(bf16Nearest(0.3))]));
        ops.scale(a.t, -1.7);
        close('scale', a.t, a.v.map((y) => y * -1.7));
        const out = bf(new Float32Array(n), [n], offset);
        const scaled = R.f64(a.t.toFloat32Array());
        ops.add(out.t, a.t, b.t);
        close('add', out.t, add64(scaled, b.v));
        ops.accumulate(b.t, out.t);
        close('accumulate', b.t, add64(b.v, R.f64(out.t.toFloat32Array())));
      });
    }
  });

  describe('gemm and Linear', () => {
    for (const [M, N, K] of [[5, 7, 3], [33, 17, 65], [64, 48, 40]] as const)
      for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]] as const)
        it(`gemm M=${M} N=${N} K=${K} transA=${tA} transB=${tB}`, () => {
          const rng = new R.SeededRandom(M * 7 + N + K + (tA ? 1 : 0) + (tB ? 2 : 0));
          const A = bf(rng.floats(M * K), tA ? [K, M] : [M, K]), Bm = bf(rng.floats(K * N), tB ? [N, K] : [K, N]);
          for (const [alpha, beta] of [[1, 0], [0.75, 0.5]] as const) {
            const C = bf(rng.floats(M * N), [M, N]);
            ops.gemm(C.t, A.t, Bm.t, tA, tB, alpha, beta);
            close(`gemm alpha=${alpha} beta=${beta}`, C.t, R.gemmRef(tA, tB, M, N, K, alpha, A.v, Bm.v, beta, C.v));
          }
        });

    for (const [M, K, N, offset] of [[21, 6, 18, 0], [64, 48, 144, 0], [5, 33, 17, 1], [128, 64, 24, 0]] as const)
      it(`matmul forward and backward M=${M} K=${K} N=${N} offset=${offset}`, () => {
        const rng = new R.SeededRandom(M + 3 * K + 5 * N + offset);
        const x = bf(rng.floats(M * K), [M, K], offset), W = bf(rng.floats(N * K, 0.3), [N, K], offset);
        const b = bf(rng.floats(N), [N], offset);
        for (const withBias of [true, false]) {
          const out = bf(new Float32Array(M * N), [M, N], offset);
          ops.matmulForward(out.t, x.t, W.t, withBias ? b.t : null);
          close(`matmul forward bias=${withBias}`, out.t, R.linearRef(x.v, W.v, withBias ? b.v : null, M, K, N));
        }
        const dy = bf(rng.floats(M * N), [M, N], offset);
        const dx = bf(rng.floats(M * K), [M, K], offset), dW = bf(rng.floats(N * K), [N, K], offset);
        const db = bf(rng.floats(N), [N], offset);
        ops.matmulBackward(dx.t, dW.t, db.t, dy.t, x.t, W.t);
        const ref = R.linearBackwardRef(dy.v, x.v, W.v, M, K, N);
        close('matmul dinp (accumulated)', dx.t, add64(ref.dx, dx.v));
        close('matmul dweight (accumulated)', dW.t, add64(ref.dW, dW.v));
        close('matmul dbias (accumulated)', db.t, add64(ref.db, db.v));
      });
  });

  describe('activations', () => {
    for (const [n, offset] of [[1031, 0], [1031, 1], [13, 0]] as const) {
      it(`gelu forward and backward n=${n} offset=${offset}`, () => {
        const rng = new R.SeededRandom(n * 3 + offset);
        const x = bf(rng.floats(n, 3), [n], offset), g = bf(rng.floats(n), [n], offset), d = bf(rng.floats(n), [n], offset);
        const out = bf(new Float32Array(n), [n], offset);
        ops.geluForward(out.t, x.t);
        close('gelu forward', out.t, R.geluRef(x.v));
        ops.geluBackward(d.t, x.t, g.t);
        const h = 1e-6;
        const grad = x.v.map((v, i) => ((R.geluScalar(v + h) - R.geluScalar(v - h)) / (2 * h)) * g.v[i]!);
        close('gelu backward (accumulated)', d.t, add64(grad, d.v));
      });

      it(`dropout forward and backward n=${n} offset=${offset}: the float32 mask`, () => {
        const rng = new R.SeededRandom(n * 5 + offset);
        const p = 0.3, seed = 17, stream = 4;
        const keepAt = (i: number) => R.dropoutKeep(seed, stream, i, p);
        const x = bf(rng.floats(n), [n], offset), g = bf(rng.floats(n), [n], offset), d = bf(rng.floats(n), [n], offset);
        const out = bf(new Float32Array(n), [n], offset);
        ops.dropoutForward(out.t, x.t, p, { seed, stream });
        const y = out.t.toFloat32Array();
        for (let i = 0; i < n; i++) if ((y[i] === 0) === keepAt(i) && x.v[i] !== 0) expect.fail(`dropout mask differs at ${i}`);
        close('dropout forward', y, R.dropoutRef(x.v, p, keepAt));
        ops.dropoutBackward(d.t, g.t, p, { seed, stream });
        close('dropout backward (accumulated)', d.t, add64(R.dropoutRef(g.v, p, keepAt), d.v));
      });
    }
  });

  describe('layernorm', () => {
    for (const [N, C, offset] of [[7, 64, 0], [5, 37, 0], [6, 48, 1], [300, 16, 0]] as const)
      it(`forward and backward N=${N} C=${C} offset=${offset}`, () => {
        const rng = new R.SeededRandom(N * 31 + C + offset);
        const x = bf(rng.floats(N * C, 2, 0.5), [N, C], offset);
        const w = bf(rng.floats(C, 0.5, 1), [C], offset), b = bf(rng.floats(C, 0.2), [C], offset);
        const out = bf(new Float32Array(N * C), [N, C], offset);
        const mean = zeros32([N]), rstd = zeros32([N]);
        ops.layernormForward(out.t, mean, rstd, x.t, w.t, b.t);
        const ref = R.layernormRef(x.v, w.v, b.v, N, C);
        close('layernorm out', out.t, ref.out);
        close('layernorm mean (float32)', mean, ref.mean, 1e-5);
        close('layernorm rstd (float32)', rstd, ref.rstd, 1e-5);
        const dy = bf(rng.floats(N * C), [N, C], offset);
        const dx = bf(rng.floats(N * C), [N, C], offset), dw = bf(rng.floats(C), [C], offset), db = bf(rng.floats(C), [C], offset);
        ops.layernormBackward(dx.t, dw.t, db.t, dy.t, x.t, w.t, mean, rstd);
        const g = R.layernormBackwardRef(dy.v, x.v, w.v, ref.mean, ref.rstd, N, C);
        close('layernorm dinp (accumulated)', dx.t, add64(g.dinp, dx.v));
        close('layernorm dweight (accumulated)', dw.t, add64(g.dweight, dw.v));
        close('layernorm dbias (accumulated)', db.t, add64(g.dbias, db.v));
      });
  });

  describe('classifier', () => {
    for (const [N, V, offset] of [[5, 257, 0], [4, 512, 0], [3, 64, 1]] as const)
      it(`crossentropy forward and fused forward-backward N=${N} V=${V} offset=${offset}`, () => {
        const rng = new R.SeededRandom(N * V + offset);
        const logits = bf(rng.floats(N * V, 3), [N, V], offset);
        const targets = Int32Array.from({ length: N }, (_, i) => (i === 1 ? ops.IGNORE_INDEX : rng.int(0, V)));
        const tgt = keep(Tensor.from(targets, [N], { device: 'cuda' }));
        const losses = zeros32([N]);
        ops.crossentropyForward(losses, logits.t, tgt);
        const ref = R.crossEntropyRef(logits.v, targets, N, V);
        close('losses (float32)', losses, ref.losses, 1e-5);
        const dlogits = bf(new Float32Array(N * V), [N, V], offset);
        const losses2 = zeros32([N]);
        ops.crossentropyForwardBackward(losses2, dlogits.t, logits.t, tgt, 1 / 3);
        close('fused losses (float32)', losses2, ref.losses, 1e-5);
        close('dlogits', dlogits.t, R.crossEntropyGradRef(logits.v, targets, N, V, 1 / 3), RTOL, 0.01);
      });
  });

  describe('embedding', () => {
    for (const [B, T, C, offset] of [[2, 5, 24, 0], [3, 4, 13, 0], [2, 3, 16, 1]] as const)
      it(`forward and backward B=${B} T=${T} C=${C} offset=${offset}`, () => {
        const V = 11, P = 9, pos0 = 2;
        const rng = new R.SeededRandom(B * T * C + offset);
        const ids = Int32Array.from({ length: B * T }, (_, i) => (i % 3 === 0 ? 4 : rng.int(0, V)));
        const idt = keep(Tensor.from(ids, [B, T], { device: 'cuda' }));
        const wte = bf(rng.floats(V * C), [V, C], offset), wpe = bf(rng.floats(P * C), [P, C], offset);
        const out = bf(new Float32Array(B * T * C), [B, T, C], offset);
        ops.embeddingForward(out.t, idt, wte.t, wpe.t, pos0);
        close('embedding forward', out.t, R.embeddingRef(ids, wte.v, wpe.v, B, T, C, pos0));
        const dout = bf(rng.floats(B * T * C), [B, T, C], offset);
        const dwte = bf(rng.floats(V * C), [V, C], offset), dwpe = bf(rng.floats(P * C), [P, C], offset);
        ops.embeddingBackward(dwte.t, dwpe.t, dout.t, idt, pos0);
        const g = R.embeddingBackwardRef(ids, dout.v, B, T, C, V, P, pos0);
        close('dwte (accumulated)', dwte.t, add64(g.dwte, dwte.v));
        close('dwpe (accumulated)', dwpe.t, add64(g.dwpe, dwpe.v));
      });
  });

  describe('attention (bf16 tensor cores for hs <= 64 unless GPTCUDA_TF32=0, else CUDA cores; float32 softmax, bf16 in global memory)', () => {
    for (const [B, T, C, NH, p] of [[2, 37, 32, 2, 0], [1, 70, 128, 2, 0], [2, 19, 40, 2, 0.1], [1, 9, 12, 2, 0]] as const)
      it(`forward and backward B=${B} T=${T} C=${C} NH=${NH} dropout=${p}`, () => {
        const rng = new R.SeededRandom(B * T + C + NH);
        const rngSeed = { seed: 77, stream: 3 };
        const dropout = p > 0 ? { p, keep: R.attentionKeep(rngSeed.seed, rngSeed.stream, p, NH, T) } : undefined;
        const qkv = bf(rng.floats(B * T * 3 * C), [B, T, 3 * C]);
        const out = bf(new Float32Array(B * T * C), [B, T, C]);
        const lse = zeros32([B, NH, T]);
        ops.attentionForward(out.t, lse, qkv.t, NH, p, rngSeed);
        const ref = R.attentionRef(qkv.v, B, T, C, NH, dropout);
        close('attention out', out.t, ref.out);
        close('lse (float32)', lse, ref.lse, 1e-5);
        const dout = bf(rng.floats(B * T * C), [B, T, C]);
        const dqkv = bf(rng.floats(B * T * 3 * C), [B, T, 3 * C]);
        ops.attentionBackward(dqkv.t, dout.t, qkv.t, out.t, lse, NH, p, rngSeed);
        // The op takes out as an input (D = rowsum(dout * out)), here the bf16 one; D's
        // error otherwise dominates dS where dP - D cancels. The correction is D's part.
        const exact = R.attentionBackwardRef(qkv.v, dout.v, B, T, C, NH, dropout);
        const fix = dOutCorrection(qkv.v, dout.v, add64(R.f64(out.t.toFloat32Array()), ref.out.map((x) => -x)), B, T, C, NH);
        close('dqkv (accumulated)', dqkv.t, add64(add64(exact, fix), dqkv.v));
      });

    for (const [B, C, NH, steps] of [[2, 32, 2, [3, 2, 1]], [1, 24, 4, [33, 1]], [1, 12, 2, [4, 3]]] as const)
      it(`decode with a bf16 KV cache B=${B} C=${C} NH=${NH} steps=${steps.join('+')}`, () => {
        const T = steps.reduce((a, b) => a + b, 0), Tmax = T + 3, hs = C / NH;
        const rng = new R.SeededRandom(B * C + NH + T);
        const all = bf(rng.floats(B * T * 3 * C), [B, T, 3 * C]);
        const ref = R.attentionRef(all.v, B, T, C, NH).out;
        const kc = bf(new Float32Array(B * NH * Tmax * hs), [B, NH, Tmax, hs]);
        const vc = bf(new Float32Array(B * NH * Tmax * hs), [B, NH, Tmax, hs]);
        let pos0 = 0;
        for (const Tn of steps) {
          const rows = new Float32Array(B * Tn * 3 * C), want = new Float64Array(B * Tn * C);
          for (let b = 0; b < B; b++) {
            rows.set(Float32Array.from(all.v.subarray((b * T + pos0) * 3 * C, (b * T + pos0 + Tn) * 3 * C)), b * Tn * 3 * C);
            want.set(ref.subarray((b * T + pos0) * C, (b * T + pos0 + Tn) * C), b * Tn * C);
          }
          const qkv = bf(rows, [B, Tn, 3 * C]); // already bf16 values: converting keeps them
          const out = bf(new Float32Array(B * Tn * C), [B, Tn, C]);
          ops.attentionDecode(out.t, kc.t, vc.t, qkv.t, pos0);
          close(`decode out at positions ${pos0}..${pos0 + Tn - 1}`, out.t, want);
          pos0 += Tn;
        }
      });
  });

  describe('optimizer', () => {
    for (const [n, offset] of [[1031, 0], [1031, 1], [7, 0]] as const) {
      it(`sum_squares (float32 result) and clip_by_norm n=${n} offset=${offset}`, () => {
        const rng = new R.SeededRandom(n + 99 * offset);
        const x = bf(rng.floats(n, 2), [n], offset);
        const out = zeros32([1]);
        ops.sumSquares(out, x.t);
        const ss = x.v.reduce((s, v) => s + v * v, 0);
        close('sum of squares', out, [ss], 1e-5);
        const maxNorm = Math.sqrt(ss) / 3.7; // not a power of two: the scaled values need rounding
        ops.clipByNorm(x.t, out, maxNorm);
        close('clipped', x.t, x.v.map((v) => v * (maxNorm / (Math.sqrt(ss) + 1e-6))));
      });

      it(`adamw: float32 master and moments, bf16 copy by stochastic rounding, bit-exact n=${n} offset=${offset}`, () => {
        const rng = new R.SeededRandom(n * 11 + offset);
        const h = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
        const p0 = rng.floats(n), m0 = rng.floats(n, 0.01), v0 = Float32Array.from(rng.floats(n, 0.01), (x) => x * x);
        const master = f32(p0), m = f32(m0), v = f32(v0);
        const grads = bf(rng.floats(n, 0.5), [n], offset);
        const params = bf(new Float32Array(n), [n], offset);
        const rounding = { seed: 1234567, stream: 5 };
        const p = R.f64(p0), mm = R.f64(m0), vv = R.f64(v0);
        for (let step = 1; step <= 2; step++) {
          ops.adamw(master, grads.t, m, v, { ...h, step }, { params: params.t, rounding: { ...rounding, stream: rounding.stream + step } });
          R.adamwRef(p, grads.v, mm, vv, h, step);
          close(`master after step ${step}`, master, p, 1e-5);
          close(`m after step ${step}`, m, mm, 1e-5);
          close(`v after step ${step}`, v, vv, 1e-5);
          const newMaster = master.toFloat32Array();
          const bits = params.t.handle.read() as Uint16Array;
          const stream = rounding.stream + step;
          for (let i = 0; i < n; i++) {
            const want = stochasticBf16(newMaster[i]!, roundingBits(rounding.seed, stream, i));
            if (bits[i] !== want) expect.fail(`step ${step}: bf16 param ${i} is 0x${bits[i]!.toString(16)}, expected 0x${want.toString(16)} (master ${newMaster[i]})`);
          }
        }
      });

      it(`adamw: the CPU backend writes the same bf16 bits from the same master n=${n} offset=${offset}`, () => {
        const rng = new R.SeededRandom(n * 13 + offset);
        const h = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 };
        const p0 = rng.floats(n), m0 = rng.floats(n, 0.01), v0 = Float32Array.from(rng.floats(n, 0.01), (x) => x * x);
        const g = bf(rng.floats(n, 0.5), [n], offset);
        const gBits = g.t.handle.read() as Uint16Array;
        const rounding = { seed: 99, stream: 12 };
        const step = (device: 'cpu' | 'cuda') => {
          const t = (x: Float32Array) => keep(Tensor.from(x, [n], { device }));
          const master = t(p0), params = keep(Tensor.zeros([n], { device, dtype: 'bfloat16' }));
          ops.adamw(master, keep(Tensor.from(gBits, [n], { device })), t(m0), t(v0), h, { params, rounding });
          return { master: master.toFloat32Array(), bits: params.handle.read() as Uint16Array };
        };
        const cpu = step('cpu'), gpu = step('cuda');
        // The backends' float32 updates may differ in the last bit (operation order,
        // the GPU's fast math); wherever the masters agree the bf16 copies must too.
        let same = 0;
        for (let i = 0; i < n; i++) {
          if (cpu.master[i] !== gpu.master[i]) continue;
          same++;
          if (cpu.bits[i] !== gpu.bits[i]) expect.fail(`param ${i}: CPU 0x${cpu.bits[i]!.toString(16)}, CUDA 0x${gpu.bits[i]!.toString(16)} from the same master ${cpu.master[i]}`);
        }
        expect(same, 'elements whose masters agree (about 5 in 6 on the emulator)').toBeGreaterThan(0);
        close('CUDA master against the CPU one', gpu.master, cpu.master, 1e-5);
      });
    }
  });
});

describe.skipIf(!cuda.available)('the whole model in bf16 on CUDA', () => {
  const config = { vocabSize: 503, contextLength: 64, embDim: 96, nHeads: 6, nLayers: 2, dropRate: 0, qkvBias: true, tieWeights: true };
  const batch = (B: number, T: number, seed: number) => {
    const rng = new R.SeededRandom(seed);
    return { ids: Int32Array.from({ length: B * T }, () => rng.int(0, config.vocabSize)), targets: Int32Array.from({ length: B * T }, () => rng.int(0, config.vocabSize)) };
  };

  it('loss within 1e-2 of fp32 on the same weights, and 10 AdamW steps within 2% of the fp32 curve', () => {
    const run = (dtype: 'fp32' | 'bf16') => {
      const m = new GPTModel(config, { seed: 7, device: 'cuda', dtype });
      const opt = new AdamW(m.params, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }, 42);
      const losses: number[] = [];
      try {
        for (let s = 0; s < 10; s++) {
          const { ids, targets } = batch(2, 32, 100 + s);
          m.zeroGrad();
          losses.push(m.forward(ids, 2, 32, targets, { training: true, grad: true }));
          m.backward();
          opt.clipGradNorm(1.0);
          opt.update();
        }
      } finally {
        m.dispose();
        opt.dispose();
      }
      return losses;
    };
    const a = run('fp32'), b = run('bf16');
    expect(Math.abs(a[0]! - b[0]!) / a[0]!, 'first loss').toBeLessThan(1e-2);
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!) / a[i]!, `step ${i}`).toBeLessThan(2e-2);
    expect(b[9]!, 'bf16 training lowers the loss').toBeLessThan(b[0]!);
  });

  it('KV-cache decoding (a 40-token prefill, then single tokens) gives the fp32 logits within 2e-2', () => {
    const relL2 = (x: Float32Array, y: Float32Array) => R.closeness(x, y, 1).relL2;
    const fp = new GPTModel(config, { seed: 3, device: 'cuda' });
    const half = new GPTModel(config, { seed: 3, device: 'cuda', dtype: 'bf16', masterWeights: false });
    try {
      const fc = fp.createKVCache(1), hc = half.createKVCache(1);
      const prompt = batch(1, 40, 9).ids;
      expect(relL2(half.forwardCached(prompt, 1, 40, 0, hc), fp.forwardCached(prompt, 1, 40, 0, fc)), 'prefill').toBeLessThan(2e-2);
      for (let pos = 40; pos < 44; pos++) {
        const tok = Int32Array.of((pos * 37) % config.vocabSize);
        expect(relL2(half.forwardCached(tok, 1, 1, pos, hc), fp.forwardCached(tok, 1, 1, pos, fc)), `position ${pos}`).toBeLessThan(2e-2);
      }
    } finally {
      fp.dispose();
      half.dispose();
    }
  });
});


const f32buf = new Float32Array(1), u32buf = new Uint32Array(f32buf.buffer);
/** The float value of bf16 bits h (the top half of a float32). */
function bf16Value(h: number): number {
  u32buf[0] = (h << 16) >>> 0;
  return f32buf[0]!;
}
/** Round to nearest, ties to even, of a finite float32 x: the nearer of its two bf16 neighbours, in float64. */
function bf16Nearest(x: number): number {
  f32buf[0] = x;
  const toward = u32buf[0]! >>> 16, away = toward + 1;
  const dt = Math.abs(x - bf16Value(toward)), da = Math.abs(bf16Value(away) - x);
  return dt < da || (dt === da && toward % 2 === 0) ? toward : away;
}
/**
 * Stochastic rounding to bf16 as the contract states it: x lies between the
 * bf16 value toward zero (its top 16 bits) and the next one away from zero;
 * it goes to the latter when its dropped low 16 bits plus the random 16 bits
 * carry past 2^16, i.e. with probability equal to the dropped fraction; never
 * up to infinity; infinities and NaN round to nearest.
 */
function stochasticBf16(x: number, random16: number): number {
  f32buf[0] = x;
  const u = u32buf[0]!;
  if (!Number.isFinite(f32buf[0]!)) throw new Error(`the AdamW inputs keep the master finite, got ${x}`);
  const toward = u >>> 16, dropped = u & 0xffff;
  if (dropped + random16 < 0x10000) return toward;
  const away = toward + 1;
  return (away & 0x7f80) === 0x7f80 ? toward : away;
}

/**
 * The change in dqkv when the backward is given out + dOut instead of the
 * exact out: D = rowsum(dout * out) moves by dD = rowsum(dout * dOut), so
 * dS = P (dP - D) moves by -P dD, and dQ, dK with it (float64; causal, no
 * dropout on this term: D multiplies the undropped P).
 */
function dOutCorrection(qkv: R.F64, dout: R.F64, dOut: R.F64, B: number, T: number, C: number, NH: number): R.F64 {
  const hs = C / NH, scale = 1 / Math.sqrt(hs);
  const fix = new Float64Array(B * T * 3 * C);
  const at = (b: number, t: number, part: number, h: number) => (b * T + t) * 3 * C + part * C + h * hs;
  const P = new Float64Array(T);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < NH; h++)
      for (let t = 0; t < T; t++) {
        const q = at(b, t, 0, h), o = (b * T + t) * C + h * hs;
        let dD = 0;
        for (let c = 0; c < hs; c++) dD += dout[o + c]! * dOut[o + c]!;
        let mx = -Infinity;
        for (let s = 0; s <= t; s++) {
          let d = 0;
          for (let c = 0; c < hs; c++) d += qkv[q + c]! * qkv[at(b, s, 1, h) + c]!;
          mx = Math.max(mx, (P[s] = d * scale));
        }
        let z = 0;
        for (let s = 0; s <= t; s++) z += (P[s] = Math.exp(P[s]! - mx));
        for (let s = 0; s <= t; s++) {
          const ds = (-P[s]! / z) * dD * scale, k = at(b, s, 1, h);
          for (let c = 0; c < hs; c++) {
            fix[q + c]! += ds * qkv[k + c]!;
            fix[k + c]! += ds * qkv[q + c]!;
          }
        }
      }
  return fix;
}
