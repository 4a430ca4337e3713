// GPTModel end to end against an independent float64 implementation of the
// book's GPT (test/helpers/naive-gpt.ts): logits, loss, every parameter's
// gradient (central finite differences of the float64 loss), dropout
// determinism, initialisation, parameter counts, the KV cache, a short
// training run and the error paths.
import { afterAll, describe, expect, it } from 'vitest';

import { BOOK_CONFIG, countParameters, type GPTConfig } from '../ts/model/config.js';
import { GPTModel } from '../ts/model/gpt.js';
import { AdamW, BOOK_ADAMW } from '../ts/train/optimizer.js';
import { bookParameterShapes, naiveGptForward, TestRandom, type NaiveParams } from './helpers/naive-gpt.js';

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const IGNORE = -100;

const TINY: GPTConfig = {
  vocabSize: 37,
  contextLength: 8,
  embDim: 12,
  nHeads: 3,
  nLayers: 2,
  dropRate: 0,
  qkvBias: true,
  tieWeights: false,
};

const live: GPTModel[] = [];
function makeModel(config: GPTConfig, seed = 123): GPTModel {
  const m = new GPTModel(config, { seed, device: 'cpu' });
  live.push(m);
  return m;
}
afterAll(() => {
  for (const m of live) m.dispose();
});

/**
 * Overwrites every parameter with seeded values large enough to make the
 * network non-trivial (non-uniform attention, GELU off its linear part,
 * logits of order one), through the public `value.write`.
 */
function randomizeWeights(model: GPTModel, seed: number): void {
  const rng = new TestRandom(seed);
  for (const p of model.namedParameters()) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    let gen: () => number;
    if (p.name.endsWith('.scale')) gen = () => 1 + 0.3 * rng.normal();
    else if (p.name.endsWith('.shift') || p.name.endsWith('.bias')) gen = () => 0.2 * rng.normal();
    else if (p.name.startsWith('tok_emb') || p.name.startsWith('pos_emb')) gen = () => 0.7 * rng.normal();
    else gen = () => (1.2 / Math.sqrt(p.shape[1]!)) * rng.normal(); // Linear [out, in]
    for (let i = 0; i < n; i++) data[i] = gen();
    p.value.write(data);
  }
}

/** The model's current parameters as float64 copies, by name. */
function paramsOf(model: GPTModel): NaiveParams {
  const m: NaiveParams = new Map();
  for (const p of model.namedParameters()) m.set(p.name, Float64Array.from(p.value.toFloat32Array()));
  return m;
}

function gradsOf(model: GPTModel): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>();
  for (const p of model.namedParameters()) m.set(p.name, p.grad.toFloat32Array());
  return m;
}

function randomIds(rng: TestRandom, n: number, V: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(0, V);
  return out;
}

/** Random targets with about `ignoreFrac` of them -100, at least one valid. */
function randomTargets(rng: TestRandom, n: number, V: number, ignoreFrac = 0.25): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform() < ignoreFrac ? IGNORE : rng.int(0, V);
  if (out.every((t) => t === IGNORE)) out[0] = rng.int(0, V);
  return out;
}

/**
 * Elementwise |a - e| <= rtol * (|e| + floor), where floor = floorFrac * max|e|
 * keeps entries near zero from demanding more than float32 can give.
 */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, label: string, floorFrac = 0.01): void {
  expect(actual.length, `${label}: length`).toBe(expected.length);
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
  const floor = floorFrac * maxAbs + 1e-30;
  let worst = 0, wi = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    const r = Math.abs(a - e) / (Math.abs(e) + floor);
    if (!(r <= worst) || Number.isNaN(a)) {
      worst = Number.isNaN(a) ? Infinity : r;
      wi = i;
    }
  }
  if (!(worst <= rtol)) {
    throw new Error(`${label}: worst relative error ${worst.toExponential(3)} > ${rtol} at [${wi}]: actual ${actual[wi]} expected ${expected[wi]}`);
  }
}

function relClose(a: number, e: number, rtol: number, label: string): void {
  const r = Math.abs(a - e) / Math.max(Math.abs(e), 1e-12);
  if (!(r <= rtol)) throw new Error(`${label}: ${a} vs ${e} (relative error ${r.toExponential(3)} > ${rtol})`);
}

const std = (x: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m += x[i]!;
  m /= x.length;
  let v = 0;
  for (let i = 0; i < x.length; i++) v += (x[i]! - m) ** 2;
  return { mean: m, std: Math.sqrt(v / x.length) };
};

// ---------------------------------------------------------------------------
// 1. Logits and loss vs the naive reference
// ---------------------------------------------------------------------------

interface Case {
  label: string;
  config: GPTConfig;
  shapes: [number, number][];
}

const CASES: Case[] = [
  { label: 'qkvBias, untied, L=2', config: TINY, shapes: [[3, 5], [1, 1], [2, 8], [1, 8]] },
  { label: 'no qkvBias, untied, L=2', config: { ...TINY, qkvBias: false }, shapes: [[3, 5], [1, 1], [2, 8]] },
  { label: 'tied weights, L=1', config: { ...TINY, tieWeights: true, qkvBias: false, nLayers: 1 }, shapes: [[3, 5], [1, 1], [2, 8]] },
  { label: 'one head, L=3, tied, qkvBias', config: { ...TINY, vocabSize: 19, embDim: 8, nHeads: 1, nLayers: 3, contextLength: 6, tieWeights: true }, shapes: [[2, 6], [3, 4]] },
];

describe('GPTModel forward vs the naive float64 GPT', () => {
  for (const c of CASES) {
    it(`logits and loss: ${c.label}`, () => {
      const model = makeModel(c.config, 11);
      randomizeWeights(model, 1001);
      const params = paramsOf(model);
      const rng = new TestRandom(7);
      // Several shapes on the same model also exercise the activation pool's re-layouts.
      for (const [B, T] of [...c.shapes, ...c.shapes.slice().reverse()]) {
        const ids = randomIds(rng, B * T, c.config.vocabSize);
        const targets = randomTargets(rng, B * T, c.config.vocabSize);
        const ref = naiveGptForward(params, c.config, ids, B, T, targets);

        expect(model.forward(ids, B, T)).toBeNaN();
        const logits = model.logits();
        expect(logits.shape).toEqual([B, T, c.config.vocabSize]);
        expectClose(logits.toFloat32Array(), ref.logits, 1e-4, `${c.label} B=${B} T=${T} logits`);

        const loss = model.forward(ids, B, T, targets);
        relClose(loss, ref.loss, 1e-4, `${c.label} B=${B} T=${T} loss`);
        // The fused classifier (grad: true) reports the same loss.
        const lossG = model.forward(ids, B, T, targets, { grad: true });
        relClose(lossG, ref.loss, 1e-4, `${c.label} B=${B} T=${T} loss with grad`);
      }
    });
  }

  it('the model as initialised (std 0.02) also matches, and the loss is near ln(V)', () => {
    const model = makeModel({ ...TINY, vocabSize: 50 }, 5);
    const params = paramsOf(model);
    const rng = new TestRandom(3);
    const ids = randomIds(rng, 10, 50), targets = randomTargets(rng, 10, 50);
    const ref = naiveGptForward(params, model.config, ids, 2, 5, targets);
    model.forward(ids, 2, 5);
    expectClose(model.logits().toFloat32Array(), ref.logits, 1e-4, 'init logits');
    relClose(model.forward(ids, 2, 5, targets), ref.loss, 1e-5, 'init loss');
    expect(Math.abs(ref.loss - Math.log(50))).toBeLessThan(0.2);
  });

  it('ignored targets do not count: the loss is the mean over the valid ones', () => {
    const model = makeModel(TINY, 2);
    randomizeWeights(model, 5);
    const rng = new TestRandom(9);
    const ids = randomIds(rng, 6, 37);
    const all = randomTargets(rng, 6, 37, 0);
    const perPosition: number[] = [];
    for (let i = 0; i < 6; i++) {
      const t = new Int32Array(6).fill(IGNORE);
      t[i] = all[i]!;
      perPosition.push(model.forward(ids, 1, 6, t));
    }
    const some = all.slice();
    some[1] = IGNORE;
    some[4] = IGNORE;
    const expected = (perPosition[0]! + perPosition[2]! + perPosition[3]! + perPosition[5]!) / 4;
    relClose(model.forward(ids, 1, 6, some), expected, 1e-5, 'masked mean');
    relClose(model.forward(ids, 1, 6, all), perPosition.reduce((a, b) => a + b) / 6, 1e-5, 'full mean');
  });
});

// ---------------------------------------------------------------------------
// 2. Gradients vs central finite differences of the float64 loss
// ---------------------------------------------------------------------------

/**
 * Picks indices in a parameter: some uniformly at random, some among the
 * largest model gradients (so every tensor gets checked where it matters,
 * e.g. the embedding rows of tokens that occur), and the first and last.
 */
function pickIndices(rng: TestRandom, grad: Float32Array, nRandom: number, nLarge: number): number[] {
  const set = new Set<number>([0, grad.length - 1]);
  for (let i = 0; i < nRandom; i++) set.add(rng.int(0, grad.length));
  const order = Array.from(grad.keys()).sort((a, b) => Math.abs(grad[b]!) - Math.abs(grad[a]!));
  const top = order.slice(0, Math.min(grad.length, 4 * nLarge));
  for (let i = 0; i < nLarge; i++) set.add(top[rng.int(0, top.length)]!);
  return [...set];
}

function checkGradients(model: GPTModel, ids: Int32Array, B: number, T: number, targets: Int32Array, seed: number, label: string): void {
  const cfg = model.config;
  model.zeroGrad();
  const params = paramsOf(model);
  const loss = model.forward(ids, B, T, targets, { grad: true, training: false });
  model.backward();
  const grads = gradsOf(model);
  relClose(loss, naiveGptForward(params, cfg, ids, B, T, targets).loss, 1e-4, `${label} loss`);

  let globalMax = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) globalMax = Math.max(globalMax, Math.abs(g[i]!));
  expect(globalMax).toBeGreaterThan(0);

  const rng = new TestRandom(seed);
  const eps = 1e-4;
  const failures: string[] = [];
  let checked = 0, significant = 0;
  for (const [name, g] of grads) {
    const w = params.get(name)!;
    for (const i of pickIndices(rng, g, 3, 3)) {
      const orig = w[i]!;
      w[i] = orig + eps;
      const lp = naiveGptForward(params, cfg, ids, B, T, targets).loss;
      w[i] = orig - eps;
      const lm = naiveGptForward(params, cfg, ids, B, T, targets).loss;
      w[i] = orig;
      const fd = (lp - lm) / (2 * eps);
      const got = g[i]!;
      // rtol 1e-3 relative to the entry, with a floor of 1e-5 of the largest
      // gradient in the model (float32 accumulation over the whole batch).
      const err = Math.abs(got - fd);
      const allowed = 1e-3 * Math.abs(fd) + 1e-5 * globalMax;
      checked++;
      if (Math.abs(fd) > 1e-3 * globalMax) significant++;
      if (!(err <= allowed)) failures.push(`${name}[${i}]: model ${got} vs finite difference ${fd} (|diff| ${err.toExponential(2)})`);
    }
  }
  expect(checked).toBeGreaterThan(grads.size * 3);
  // Most checked entries carry real gradient, so the comparison is not vacuous.
  expect(significant).toBeGreaterThan(0.6 * checked);
  if (failures.length) throw new Error(`${label}: ${failures.length}/${checked} gradient entries off:\n  ${failures.slice(0, 20).join('\n  ')}`);
}

describe('GPTModel backward vs finite differences of the naive loss', () => {
  const gradCases: { label: string; config: GPTConfig; B: number; T: number }[] = [
    { label: 'qkvBias, untied, L=2, B=3 T=5', config: TINY, B: 3, T: 5 },
    { label: 'no qkvBias, untied, L=2, B=2 T=ctx', config: { ...TINY, qkvBias: false }, B: 2, T: 8 },
    { label: 'tied weights, L=1, B=3 T=5', config: { ...TINY, tieWeights: true, nLayers: 1 }, B: 3, T: 5 },
    { label: 'tied, one head, L=3, B=1 T=1', config: { ...TINY, nHeads: 1, nLayers: 3, tieWeights: true, qkvBias: false }, B: 1, T: 1 },
  ];
  for (const c of gradCases) {
    it(`every parameter tensor: ${c.label}`, () => {
      const model = makeModel(c.config, 21);
      randomizeWeights(model, 77);
      const rng = new TestRandom(31);
      const ids = randomIds(rng, c.B * c.T, c.config.vocabSize);
      const targets = randomTargets(rng, c.B * c.T, c.config.vocabSize, c.B * c.T > 1 ? 0.25 : 0);
      checkGradients(model, ids, c.B, c.T, targets, 4242, c.label);
    });
  }

  it('unused embedding rows get exactly zero gradient (untied)', () => {
    const model = makeModel(TINY, 3);
    randomizeWeights(model, 8);
    const ids = Int32Array.from([1, 2, 3, 1, 2, 3]);
    const targets = Int32Array.from([4, 5, 6, 7, 8, 9]);
    model.zeroGrad();
    model.forward(ids, 2, 3, targets, { grad: true });
    model.backward();
    const g = gradsOf(model);
    const C = TINY.embDim;
    const tok = g.get('tok_emb.weight')!, pos = g.get('pos_emb.weight')!;
    for (let v = 0; v < TINY.vocabSize; v++) {
      const used = v >= 1 && v <= 3;
      const rowMax = Math.max(...Array.from(tok.subarray(v * C, (v + 1) * C), Math.abs));
      if (used) expect(rowMax).toBeGreaterThan(0);
      else expect(rowMax, `tok_emb row ${v}`).toBe(0);
    }
    for (let t = 0; t < TINY.contextLength; t++) {
      const rowMax = Math.max(...Array.from(pos.subarray(t * C, (t + 1) * C), Math.abs));
      if (t < 3) expect(rowMax).toBeGreaterThan(0);
      else expect(rowMax, `pos_emb row ${t}`).toBe(0);
    }
  });

  it('lossScale scales the gradient, gradients accumulate without zeroGrad, zeroGrad clears', () => {
    const model = makeModel(TINY, 4);
    randomizeWeights(model, 9);
    const rng = new TestRandom(12);
    const ids = randomIds(rng, 15, 37), targets = randomTargets(rng, 15, 37);
    const ids2 = randomIds(rng, 15, 37), targets2 = randomTargets(rng, 15, 37);
    const flatGrad = () => model.params.flatGrad.toFloat32Array();
    const step = (i: Int32Array, t: Int32Array, lossScale?: number) => {
      const l = model.forward(i, 3, 5, t, { grad: true, lossScale });
      model.backward();
      return l;
    };

    model.zeroGrad();
    const l1 = step(ids, targets);
    const g1 = flatGrad();
    expect(g1.some((v) => v !== 0)).toBe(true);

    model.zeroGrad();
    const lHalf = step(ids, targets, 0.5);
    expect(lHalf).toBe(l1); // the reported loss is not scaled
    const half = flatGrad();
    expectClose(half, g1.map((v) => v * 0.5), 1e-6, 'lossScale 0.5', 1e-3);

    model.zeroGrad();
    step(ids, targets);
    step(ids, targets);
    expectClose(flatGrad(), g1.map((v) => v * 2), 1e-5, 'two accumulated backward passes', 1e-3);

    model.zeroGrad();
    expect(flatGrad().every((v) => v === 0)).toBe(true);

    // Accumulating two different batches at lossScale 1/2 gives the gradient of the mean loss.
    step(ids2, targets2);
    const g2 = flatGrad();
    model.zeroGrad();
    step(ids, targets, 0.5);
    step(ids2, targets2, 0.5);
    expectClose(flatGrad(), g1.map((v, i) => 0.5 * (v + g2[i]!)), 1e-5, 'accumulated mean of two batches', 1e-3);

    // The accumulated gradient also matches finite differences of the mean naive loss.
    const params = paramsOf(model);
    const acc = flatGrad();
    const np = model.namedParameters();
    const meanLoss = () =>
      0.5 * (naiveGptForward(params, TINY, ids, 3, 5, targets).loss + naiveGptForward(params, TINY, ids2, 3, 5, targets2).loss);
    const prng = new TestRandom(5);
    for (const p of np.filter((q) => /^(tok_emb|trf_blocks\.1\.att\.W_key\.bias|trf_blocks\.0\.ff\.layers\.0\.weight|out_head)/.test(q.name))) {
      const w = params.get(p.name)!;
      const offset = model.params.get(p.name).offset;
      const gp = acc.subarray(offset, offset + w.length);
      for (const i of pickIndices(prng, gp, 2, 2)) {
        const o = w[i]!;
        w[i] = o + 1e-4;
        const lp = meanLoss();
        w[i] = o - 1e-4;
        const lm = meanLoss();
        w[i] = o;
        const fd = (lp - lm) / 2e-4;
        expect(Math.abs(gp[i]! - fd), `${p.name}[${i}]`).toBeLessThanOrEqual(1e-3 * Math.abs(fd) + 1e-6);
      }
    }
  });

  it('grad: true without targets computes no gradient state; backward then throws', () => {
    const model = makeModel(TINY, 4);
    const ids = Int32Array.from([1, 2, 3]);
    expect(model.forward(ids, 1, 3, undefined, { grad: true })).toBeNaN();
    expect(() => model.backward()).toThrow(/backward/);
  });
});

// ---------------------------------------------------------------------------
// 3. Dropout
// ---------------------------------------------------------------------------

describe('dropout', () => {
  const DROP: GPTConfig = { ...TINY, dropRate: 0.2 };
  const rng = new TestRandom(99);
  const ids = randomIds(rng, 3 * 8, 37);
  const targets = randomTargets(rng, 3 * 8, 37, 0.1);

  it('is deterministic in (seed, dropoutCounter) and the counter advances per training forward', () => {
    const a = makeModel(DROP, 17);
    randomizeWeights(a, 3);
    a.dropoutCounter = 0;
    const l0 = a.forward(ids, 3, 8, targets, { training: true });
    expect(a.dropoutCounter).toBe(1);
    const l1 = a.forward(ids, 3, 8, targets, { training: true });
    expect(a.dropoutCounter).toBe(2);
    expect(l1).not.toBe(l0);
    a.dropoutCounter = 0;
    expect(a.forward(ids, 3, 8, targets, { training: true })).toBe(l0);
    expect(a.forward(ids, 3, 8, targets, { training: true })).toBe(l1);

    // A second model with the same seed and weights draws the same masks.
    const b = makeModel(DROP, 17);
    randomizeWeights(b, 3);
    expect(b.forward(ids, 3, 8, targets, { training: true })).toBe(l0);
    // The grad path draws the same masks as the no-grad path.
    b.dropoutCounter = 0;
    expect(b.forward(ids, 3, 8, targets, { training: true, grad: true })).toBe(l0);

    // Another dropout seed, other masks.
    const c = makeModel(DROP, 18);
    randomizeWeights(c, 3);
    expect(c.forward(ids, 3, 8, targets, { training: true })).not.toBe(l0);

    // Evaluation forwards do not advance the counter.
    const before = a.dropoutCounter;
    a.forward(ids, 3, 8, targets, { training: false });
    expect(a.dropoutCounter).toBe(before);
  });

  it('dropout changes the loss, and dropRate 0 in training equals evaluation', () => {
    const drop = makeModel(DROP, 17);
    randomizeWeights(drop, 3);
    const plain = makeModel(TINY, 17);
    randomizeWeights(plain, 3);
    const evalLoss = plain.forward(ids, 3, 8, targets);
    expect(plain.forward(ids, 3, 8, targets, { training: true })).toBe(evalLoss);
    expect(drop.forward(ids, 3, 8, targets, { training: true })).not.toBe(evalLoss);
  });

  it('training: false ignores dropout (equals the naive reference and the dropRate 0 model)', () => {
    const drop = makeModel(DROP, 17);
    randomizeWeights(drop, 3);
    const plain = makeModel(TINY, 17);
    randomizeWeights(plain, 3);
    const ref = naiveGptForward(paramsOf(drop), DROP, ids, 3, 8, targets);
    const evalLoss = plain.forward(ids, 3, 8, targets);
    relClose(evalLoss, ref.loss, 1e-4, 'dropRate 0 model');
    // Fresh model, evaluation first.
    relClose(drop.forward(ids, 3, 8, targets, { training: false }), ref.loss, 1e-4, 'dropRate 0.2 model, eval forward before any training forward');
    // Evaluation after a training forward (e.g. validation during training).
    drop.forward(ids, 3, 8, targets, { training: true });
    relClose(drop.forward(ids, 3, 8, targets, { training: false }), ref.loss, 1e-4, 'dropRate 0.2 model, eval forward after a training forward');
    drop.forward(ids, 3, 8);
    expectClose(drop.logits().toFloat32Array(), ref.logits, 1e-4, 'dropRate 0.2 model, eval logits');
  });

  it('training: false gradients of a dropRate > 0 model match finite differences (dropout off)', () => {
    const model = makeModel({ ...DROP, nLayers: 1 }, 23);
    randomizeWeights(model, 41);
    checkGradients(model, ids.subarray(0, 10), 2, 5, targets.subarray(0, 10), 7, 'dropRate 0.2, training false');
  });

  it('with dropout on, backward uses the forward masks (directional derivative at a fixed counter)', () => {
    const model = makeModel({ ...DROP, dropRate: 0.3 }, 29);
    randomizeWeights(model, 55);
    const counter = 5;
    model.zeroGrad();
    model.dropoutCounter = counter;
    model.forward(ids, 3, 8, targets, { training: true, grad: true });
    model.backward();
    const g = model.params.flatGrad.toFloat32Array();
    const w0 = model.params.readAll();
    const drng = new TestRandom(71);
    const d = new Float32Array(w0.length);
    for (let i = 0; i < d.length; i++) d[i] = drng.normal();
    let gd = 0;
    for (let i = 0; i < d.length; i++) gd += g[i]! * d[i]!;
    const lossAt = (h: number) => {
      model.params.writeAll(w0.map((w, i) => w + h * d[i]!));
      model.dropoutCounter = counter;
      return model.forward(ids, 3, 8, targets, { training: true });
    };
    // d moves every weight at once: at h = 1e-2 the step is large enough for curvature to
    // cost ~15% on some masks; at 1e-3 the central difference is within ~0.2% of the limit.
    const h = 1e-3;
    const fd = (lossAt(h) - lossAt(-h)) / (2 * h);
    model.params.writeAll(w0);
    expect(Math.abs(gd)).toBeGreaterThan(1e-2);
    relClose(gd, fd, 2e-2, 'dropout directional derivative');
    // A different counter's masks give a different gradient: the check above is not vacuous.
    model.zeroGrad();
    model.dropoutCounter = counter + 1;
    model.forward(ids, 3, 8, targets, { training: true, grad: true });
    model.backward();
    const g2 = model.params.flatGrad.toFloat32Array();
    let gd2 = 0;
    for (let i = 0; i < d.length; i++) gd2 += g2[i]! * d[i]!;
    expect(Math.abs(gd2 - gd)).toBeGreaterThan(1e-3 * Math.abs(gd));
  });
});

// ---------------------------------------------------------------------------
// 4. Initialisation, determinism, parameter counts
// ---------------------------------------------------------------------------

describe('initialisation and parameter count', () => {
  const MED: GPTConfig = { vocabSize: 500, contextLength: 64, embDim: 64, nHeads: 4, nLayers: 2, dropRate: 0.1, qkvBias: true, tieWeights: false };

  it('the same seed gives identical parameters, another seed different ones', () => {
    const a = makeModel(MED, 5), b = makeModel(MED, 5), c = makeModel(MED, 6);
    const wa = a.params.readAll(), wb = b.params.readAll(), wc = c.params.readAll();
    expect(Buffer.from(wa.buffer).equals(Buffer.from(wb.buffer))).toBe(true);
    let same = 0;
    for (let i = 0; i < wa.length; i++) if (wa[i] === wc[i] && wa[i] !== 0 && wa[i] !== 1) same++;
    expect(same).toBeLessThan(10);
    // Per tensor too: every random tensor differs between the seeds.
    const pa = paramsOf(a), pc = paramsOf(c);
    for (const [name, v] of pa) {
      if (/norm|bias|shift|scale/.test(name)) continue;
      expect(v, name).not.toEqual(pc.get(name));
    }
    // Reinitialising with the same seed reproduces the weights.
    c.initialize(5);
    expect(Buffer.from(c.params.readAll().buffer).equals(Buffer.from(wa.buffer))).toBe(true);
  });

  it('GPT-2 style init statistics: weights N(0, 0.02), LayerNorm scale 1 / shift 0, biases 0', () => {
    const m = makeModel(MED, 9);
    const p = paramsOf(m);
    for (const name of ['tok_emb.weight', 'pos_emb.weight', 'out_head.weight', 'trf_blocks.0.att.W_query.weight', 'trf_blocks.1.att.W_key.weight', 'trf_blocks.1.att.W_value.weight', 'trf_blocks.0.ff.layers.0.weight']) {
      const s = std(p.get(name)!);
      expect(Math.abs(s.mean), `${name} mean`).toBeLessThan(0.002);
      expect(Math.abs(s.std - 0.02) / 0.02, `${name} std ${s.std}`).toBeLessThan(0.05);
    }
    // Residual projections: std 0.02 at most (GPT-2 scales them down by 1/sqrt(2 n_layers)).
    for (const name of ['trf_blocks.0.att.out_proj.weight', 'trf_blocks.1.ff.layers.2.weight']) {
      const s = std(p.get(name)!);
      expect(s.std, name).toBeGreaterThan(0.005);
      expect(s.std, name).toBeLessThan(0.021);
    }
    for (const [name, v] of p) {
      if (name.endsWith('.scale')) expect(v.every((x) => x === 1), name).toBe(true);
      if (name.endsWith('.shift') || name.endsWith('.bias')) expect(v.every((x) => x === 0), name).toBe(true);
    }
    expect(p.has('trf_blocks.1.att.W_value.bias')).toBe(true);
  });

  it('names and shapes are the book model\'s; counts equal countParameters', () => {
    const configs: GPTConfig[] = [
      TINY,
      { ...TINY, qkvBias: false },
      { ...TINY, tieWeights: true },
      { ...TINY, tieWeights: true, qkvBias: false, nLayers: 1, nHeads: 1 },
      MED,
    ];
    for (const cfg of configs) {
      const m = makeModel(cfg, 1);
      const got = m.namedParameters().map((q) => ({ name: q.name, shape: q.shape }));
      const want = bookParameterShapes(cfg);
      const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : 1);
      expect([...got].sort(byName)).toEqual([...want].sort(byName));
      const total = got.reduce((s, q) => s + q.shape.reduce((a, b) => a * b, 1), 0);
      expect(m.numParameters).toBe(total);
      expect(countParameters(cfg)).toBe(total);
      for (const q of m.namedParameters()) {
        expect(q.value.shape).toEqual(q.shape);
        expect(q.grad.shape).toEqual(q.shape);
      }
    }
  });

  it("the book's parameter counts", () => {
    // Chapter 5 config (context 256), untied, no QKV bias.
    expect(countParameters(BOOK_CONFIG)).toBe(162_419_712);
    // Chapter 4 GPT_CONFIG_124M (context 1024): 163,009,536; with weight tying 124,412,160.
    expect(countParameters({ ...BOOK_CONFIG, contextLength: 1024 })).toBe(163_009_536);
    expect(countParameters({ ...BOOK_CONFIG, contextLength: 1024, tieWeights: true })).toBe(124_412_160);
    // OpenAI GPT-2 small (qkv bias, tied): 124,439,808.
    expect(countParameters({ ...BOOK_CONFIG, contextLength: 1024, tieWeights: true, qkvBias: true })).toBe(124_439_808);
    // Not instantiated here: even with skipInit, allocating 2 x 650 MB takes seconds.
    // The tests above tie numParameters to countParameters on small configs.
  });
});

// ---------------------------------------------------------------------------
// 5. KV cache
// ---------------------------------------------------------------------------

describe('KV-cache inference', () => {
  const cases: { label: string; config: GPTConfig; B: number; prompt: number; chunk: number }[] = [
    { label: 'B=1, token by token', config: TINY, B: 1, prompt: 3, chunk: 1 },
    { label: 'B=2, token by token', config: { ...TINY, qkvBias: false }, B: 2, prompt: 3, chunk: 1 },
    { label: 'B=1, prompt of one token', config: { ...TINY, tieWeights: true }, B: 1, prompt: 1, chunk: 1 },
    { label: 'B=2, chunks of 2 after the prompt', config: TINY, B: 2, prompt: 2, chunk: 2 },
  ];
  for (const c of cases) {
    it(`matches the last position of a full forward at every step: ${c.label}`, () => {
      const model = makeModel(c.config, 13);
      randomizeWeights(model, 202);
      const params = paramsOf(model);
      const { B } = c, L = c.config.contextLength, V = c.config.vocabSize;
      const rng = new TestRandom(303);
      const seq = randomIds(rng, B * L, V); // [B, L]
      const prefix = (t: number) => {
        const out = new Int32Array(B * t);
        for (let b = 0; b < B; b++) out.set(seq.subarray(b * L, b * L + t), b * t);
        return out;
      };
      const slice = (t0: number, t1: number) => {
        const out = new Int32Array(B * (t1 - t0));
        for (let b = 0; b < B; b++) out.set(seq.subarray(b * L + t0, b * L + t1), b * (t1 - t0));
        return out;
      };
      const cache = model.createKVCache(B);
      try {
        let pos = 0, steps = 0;
        while (pos < L) {
          const n = pos === 0 ? c.prompt : Math.min(c.chunk, L - pos);
          const got = model.forwardCached(slice(pos, pos + n), B, n, pos, cache);
          pos += n;
          steps++;
          expect(got.length).toBe(B * V);
          // Full forward (no grad) over the sequence so far.
          model.forward(prefix(pos), B, pos);
          const full = model.logits().toFloat32Array();
          const want = new Float32Array(B * V);
          for (let b = 0; b < B; b++) want.set(full.subarray((b * pos + pos - 1) * V, (b * pos + pos) * V), b * V);
          expectClose(got, want, 1e-4, `${c.label} pos ${pos} vs full forward`);
          // And against the naive reference.
          const ref = naiveGptForward(params, c.config, prefix(pos), B, pos).logits;
          const refLast = new Float64Array(B * V);
          for (let b = 0; b < B; b++) refLast.set(ref.subarray((b * pos + pos - 1) * V, (b * pos + pos) * V), b * V);
          expectClose(got, refLast, 1e-4, `${c.label} pos ${pos} vs naive`);
        }
        expect(steps).toBeGreaterThan(1);
        // The context is full now.
        expect(() => model.forwardCached(slice(0, 1), B, 1, L, cache)).toThrow(/context length/);
      } finally {
        cache.dispose();
      }
    });
  }

  it('a fresh cache replays the same logits; a batch mismatch is an error', () => {
    const model = makeModel(TINY, 13);
    randomizeWeights(model, 5);
    const ids = Int32Array.from([3, 1, 4, 1, 5]);
    const c1 = model.createKVCache(1), c2 = model.createKVCache(1);
    try {
      const a = model.forwardCached(ids, 1, 5, 0, c1);
      const b = model.forwardCached(ids, 1, 5, 0, c2);
      expect(Array.from(b)).toEqual(Array.from(a));
      expect(() => model.forwardCached(Int32Array.from([1, 2]), 2, 1, 5, c1)).toThrow(/batch/);
    } finally {
      c1.dispose();
      c2.dispose();
    }
  });
});

// ---------------------------------------------------------------------------
// 6. Training sanity
// ---------------------------------------------------------------------------

describe('training', () => {
  it('30 AdamW steps on one fixed batch cut the loss below a third', () => {
    const cfg: GPTConfig = { ...TINY, contextLength: 16, embDim: 32, nHeads: 4, dropRate: 0 };
    const model = makeModel(cfg, 123);
    const opt = new AdamW(model.params, { ...BOOK_ADAMW, lr: 1e-2 });
    try {
      const rng = new TestRandom(2024);
      const B = 4, T = 16;
      const ids = randomIds(rng, B * T, cfg.vocabSize);
      const targets = randomIds(rng, B * T, cfg.vocabSize);
      const losses: number[] = [];
      for (let s = 0; s < 30; s++) {
        model.zeroGrad();
        losses.push(model.forward(ids, B, T, targets, { training: true, grad: true }));
        model.backward();
        opt.update();
      }
      const final = model.forward(ids, B, T, targets);
      expect(losses.every(Number.isFinite)).toBe(true);
      expect(Math.abs(losses[0]! - Math.log(cfg.vocabSize))).toBeLessThan(0.1);
      expect(final).toBeLessThan(losses[0]! / 3);
      expect(opt.step).toBe(30);
    } finally {
      opt.dispose();
    }
  });
});

// ---------------------------------------------------------------------------
// 7. Errors
// ---------------------------------------------------------------------------

describe('errors', () => {
  it('rejects malformed inputs with clear messages', () => {
    const model = makeModel(TINY, 1);
    expect(() => model.forward(new Int32Array(5), 2, 3)).toThrow(/5 ids.*\[2, 3\]/);
    expect(() => model.forward(new Int32Array(9), 1, 9)).toThrow(/sequence length 9 exceeds .*context length 8/);
    expect(() => model.forward(new Int32Array(6), 2, 3, new Int32Array(5))).toThrow(/targets must have 6/);
    expect(() => model.forward(new Int32Array(6), 2, 3, new Int32Array(6).fill(IGNORE))).toThrow(/ignore index -100/);
    expect(() => model.forward(new Int32Array(6), 2, 3, new Int32Array(6).fill(IGNORE), { grad: true })).toThrow(/ignore index/);
    // Token ids and targets outside the vocabulary.
    expect(() => model.forward(Int32Array.from([1, 37]), 1, 2)).toThrow(/token id 37.*out of range/);
    expect(() => model.forward(Int32Array.from([-1, 2]), 1, 2)).toThrow(/token id -1.*out of range/);
    expect(() => model.forward(Int32Array.from([1, 2]), 1, 2, Int32Array.from([37, 1]))).toThrow(/target 37.*out of range/);
    expect(() => model.forward(Int32Array.from([1, 2]), 1, 2, Int32Array.from([-5, 1]), { grad: true })).toThrow(/target -5.*out of range/);
    // The KV-cache path checks its inputs too.
    const cache = model.createKVCache(1);
    try {
      expect(() => model.forwardCached(Int32Array.from([1, 2, 3]), 1, 2, 0, cache)).toThrow();
      expect(() => model.forwardCached(Int32Array.from([40]), 1, 1, 0, cache)).toThrow(/token id 40.*out of range/);
    } finally {
      cache.dispose();
    }
  });

  it('rejects invalid configs', () => {
    expect(() => new GPTModel({ ...TINY, nHeads: 5 })).toThrow(/divisible/);
    expect(() => new GPTModel({ ...TINY, dropRate: 1 })).toThrow(/dropRate/);
    expect(() => new GPTModel({ ...TINY, nLayers: 0 })).toThrow(/nLayers/);
  });

  it('enforces the forward/backward/logits protocol', () => {
    const model = makeModel(TINY, 1);
    const ids = Int32Array.from([1, 2, 3]), targets = Int32Array.from([2, 3, 4]);
    expect(() => model.backward()).toThrow(/backward/);
    expect(() => model.logits()).toThrow(/logits/);
    model.forward(ids, 1, 3, targets, { grad: true });
    expect(() => model.logits()).toThrow(/logits/); // they hold gradients now
    model.backward();
    expect(() => model.backward()).toThrow(/backward/); // one backward per forward
    model.forward(ids, 1, 3, targets); // no grad
    expect(() => model.backward()).toThrow(/backward/);
    const cache = model.createKVCache(1);
    expect(() => model.forwardCached(ids, 1, 3, 6, cache)).toThrow(/context length/);
    cache.dispose();
  });
});
