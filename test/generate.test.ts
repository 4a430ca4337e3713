// Text generation (ts/generate): greedy decoding against an independent
// reference built from full forwards, seeded sampling, the statistics of
// temperature / top-k / top-p sampling, end-of-sequence, the KV cache against
// full recomputation (also past the context length), batches, cancellation
// through an AbortSignal, event-loop responsiveness and option validation.
//
// Cancellation contract (decided here, documented in ts/generate/generate.ts):
// the signal is checked before every forward pass, so once it is aborted no
// further token is computed. `generate()` then rejects and a `stream()` /
// `streamBatch()` iterator throws from its next `next()` with
// `signal.reason` — a DOMException named 'AbortError' for a plain
// `controller.abort()` (the same as fetch and the Node APIs). The KV cache is
// freed either way. An abort while a token is being computed lets that one
// token finish (JavaScript cannot interrupt the native call): at most one more
// token after the abort.
import { afterAll, describe, expect, it, vi } from 'vitest';

import { generate, LogitSource, stream, streamBatch } from '../ts/generate/generate.js';
import { nextToken, topKFilter } from '../ts/generate/sampling.js';
import type { GPTConfig } from '../ts/model/config.js';
import { GPTModel, type KVCache } from '../ts/model/gpt.js';
import { Rng } from '../ts/tensor/rng.js';
import { TestRandom } from './helpers/naive-gpt.js';

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** Context 8 so that 20 new tokens run well past it. */
const SMALL: GPTConfig = {
  vocabSize: 50,
  contextLength: 8,
  embDim: 16,
  nHeads: 2,
  nLayers: 2,
  dropRate: 0.1, // generation must ignore dropout
  qkvBias: true,
  tieWeights: false,
};

const live: GPTModel[] = [];
afterAll(() => {
  for (const m of live) m.dispose();
});

/**
 * A model whose weights are large enough for logits of order one and more,
 * so greedy choices are far from ties (float32 differences between the cached
 * and the recomputed path cannot flip them) and sampling is not uniform.
 */
function makeModel(config: GPTConfig = SMALL, seed = 11): GPTModel {
  const model = new GPTModel(config, { seed, device: 'cpu' });
  live.push(model);
  const rng = new TestRandom(seed * 7919 + 1);
  for (const p of model.namedParameters()) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    let gen: () => number;
    if (p.name.endsWith('.scale')) gen = () => 1 + 0.3 * rng.normal();
    else if (p.name.endsWith('.shift') || p.name.endsWith('.bias')) gen = () => 0.2 * rng.normal();
    else if (p.name.startsWith('tok_emb') || p.name.startsWith('pos_emb')) gen = () => 0.8 * rng.normal();
    else gen = () => (1.5 / Math.sqrt(p.shape[1]!)) * rng.normal(); // Linear [out, in]
    for (let i = 0; i < n; i++) data[i] = gen();
    p.value.write(data);
  }
  return model;
}

function argmaxOf(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Last-position logits of `seq` by a full forward over its last contextLength tokens, no cache. */
function fullForwardLogits(model: GPTModel, seq: number[]): Float32Array {
  const ctx = model.config.contextLength, V = model.config.vocabSize;
  const window = seq.slice(Math.max(0, seq.length - ctx));
  const T = window.length;
  model.forward(Int32Array.from(window), 1, T);
  return model.logits().toFloat32Array().slice((T - 1) * V, T * V);
}

/** Greedy decoding computed independently: full forward + argmax at each step. */
function referenceGreedy(model: GPTModel, prompt: number[], maxNew: number, eosId?: number) {
  const seq = [...prompt];
  const logits: Float32Array[] = [];
  for (let i = 0; i < maxNew; i++) {
    const l = fullForwardLogits(model, seq);
    logits.push(l);
    const t = argmaxOf(l);
    seq.push(t);
    if (t === eosId) break;
  }
  return { seq, logits };
}

function expectLogitsClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  expect(got.length, what).toBe(want.length);
  let scale = 1, worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  if (!(worst <= 2e-5 * scale)) expect.fail(`${what}: logit ${at}: ${got[at]} vs ${want[at]} (|diff| ${worst}, scale ${scale})`);
}

/** softmax(logits / T) in float64, written independently of ts/generate/sampling.ts. */
function refSoftmax(logits: number[], T = 1): number[] {
  const z = logits.map((l) => l / T);
  const m = Math.max(...z);
  const e = z.map((v) => (v === -Infinity ? 0 : Math.exp(v - m)));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** The book's top-k: min_val = k-th largest; torch.where(logits < min_val, -inf, logits). */
function refTopK(logits: number[], k: number): number[] {
  const minVal = [...logits].sort((a, b) => b - a)[k - 1]!;
  return logits.map((l) => (l < minVal ? -Infinity : l));
}

/** The smallest set of most likely tokens whose probability reaches p, renormalised. */
function refTopP(probs: number[], p: number): number[] {
  const order = probs.map((_, i) => i).sort((a, b) => probs[b]! - probs[a]!);
  const keep = new Set<number>();
  let mass = 0;
  for (const i of order) {
    keep.add(i);
    mass += probs[i]!;
    if (mass >= p) break;
  }
  return probs.map((q, i) => (keep.has(i) ? q / mass : 0));
}

/** Draws `n` tokens from fixed logits through nextToken; returns the counts. */
function drawCounts(logits: number[], options: Parameters<typeof nextToken>[1], n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const f = Float32Array.from(logits);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[nextToken(f, options, rng)]!++;
  return counts;
}

/** Pearson's chi-square statistic over bins of positive probability, with the degrees of freedom. */
function chiSquare(counts: number[], probs: number[]): { stat: number; df: number; maxZ: number } {
  const n = counts.reduce((a, b) => a + b, 0);
  let stat = 0, df = -1, maxZ = 0;
  counts.forEach((c, i) => {
    const p = probs[i]!;
    if (p === 0) return;
    const e = n * p;
    stat += (c - e) ** 2 / e;
    df++;
    maxZ = Math.max(maxZ, Math.abs(c - e) / Math.sqrt(e * (1 - p)));
  });
  return { stat, df, maxZ };
}

/**
 * Upper 0.1% point of chi-square with df degrees of freedom (Wilson–Hilferty;
 * within a few percent of the exact value for df >= 2).
 */
function chiSquareCritical(df: number): number {
  const z = 3.0902; // standard normal 0.999 quantile
  const a = 2 / (9 * df);
  return df * (1 - a + z * Math.sqrt(a)) ** 3;
}

function expectMatchesDistribution(counts: number[], probs: number[], what: string): void {
  const { stat, df, maxZ } = chiSquare(counts, probs);
  expect(df, what).toBeGreaterThan(0);
  expect(stat, `${what}: chi-square ${stat.toFixed(2)} with ${df} df`).toBeLessThan(chiSquareCritical(df));
  expect(maxZ, `${what}: largest per-bin |z|`).toBeLessThan(4.5);
}

const busyWait = (ms: number) => {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* a slow model */ }
};

interface ForwardCall {
  method: 'forwardCachedAsync' | 'forwardCached' | 'forward';
  B: number;
  T: number;
  pos0: number;
  /** The last-position logits [B, V] a cached forward returned. */
  logits?: Float32Array;
}

/**
 * Records every forward pass generation makes on `model` (the KV-cache entry
 * points and the full forward), optionally slowing each one down on the main
 * thread and calling `onCall` as it starts.
 */
function watchForwards(model: GPTModel, options: { busyMs?: number; onCall?: (call: ForwardCall) => void } = {}) {
  const calls: ForwardCall[] = [];
  const proto = GPTModel.prototype;
  const m = model as unknown as Record<string, unknown>;
  const start = (method: ForwardCall['method'], B: number, T: number, pos0: number) => {
    if (options.busyMs) busyWait(options.busyMs);
    const call: ForwardCall = { method, B, T, pos0 };
    calls.push(call);
    options.onCall?.(call);
    return call;
  };
  m.forwardCachedAsync = async function (this: GPTModel, ids: Int32Array, B: number, T: number, pos0: number, cache: KVCache) {
    const call = start('forwardCachedAsync', B, T, pos0);
    call.logits = await proto.forwardCachedAsync.call(this, ids, B, T, pos0, cache);
    return call.logits;
  };
  m.forwardCached = function (this: GPTModel, ids: Int32Array, B: number, T: number, pos0: number, cache: KVCache) {
    const call = start('forwardCached', B, T, pos0);
    call.logits = proto.forwardCached.call(this, ids, B, T, pos0, cache);
    return call.logits;
  };
  m.forward = function (this: GPTModel, ...args: Parameters<GPTModel['forward']>) {
    start('forward', args[1], args[2], 0);
    return proto.forward.apply(this, args);
  };
  return {
    calls,
    restore() {
      delete m.forwardCachedAsync;
      delete m.forwardCached;
      delete m.forward;
    },
  };
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

// ---------------------------------------------------------------------------
// 1. Greedy decoding
// ---------------------------------------------------------------------------

describe('greedy decoding', () => {
  it('temperature 0, topK 1 and the default all equal argmax of full-forward logits at every step', async () => {
    const model = makeModel();
    const prompt = [3, 14, 15];
    const ref = referenceGreedy(model, prompt, 20).seq;
    expect(ref).toHaveLength(23);
    // Not a degenerate repetition of one token.
    expect(new Set(ref.slice(3)).size).toBeGreaterThan(2);

    expect(await generate(model, prompt, { maxNewTokens: 20, temperature: 0 })).toEqual(ref);
    expect(await generate(model, prompt, { maxNewTokens: 20 })).toEqual(ref);
    expect(await generate(model, prompt, { maxNewTokens: 20, topK: 1 })).toEqual(ref);
    // topK 1 leaves one token, whatever the temperature and seed.
    expect(await generate(model, prompt, { maxNewTokens: 20, topK: 1, temperature: 1.7, seed: 5 })).toEqual(ref);
    expect(await generate(model, prompt, { maxNewTokens: 20, topK: 1, temperature: 1.7, topP: 0.9, seed: 6 })).toEqual(ref);
    expect(await generate(model, prompt, { maxNewTokens: 20, temperature: 0, useCache: false })).toEqual(ref);
    // The GPTModel methods are the same functions, and an Int32Array prompt works.
    expect(await model.generate(Int32Array.from(prompt), { maxNewTokens: 20 })).toEqual(ref);
    expect(await collect(model.stream(prompt, { maxNewTokens: 20 }))).toEqual(ref.slice(3));
  });

  it('maxNewTokens 0 returns the prompt; the default adds 25 tokens', async () => {
    const model = makeModel();
    expect(await generate(model, [1, 2], { maxNewTokens: 0 })).toEqual([1, 2]);
    expect(await generate(model, [1, 2])).toHaveLength(27);
  });
});

// ---------------------------------------------------------------------------
// 2. KV cache against full recomputation
// ---------------------------------------------------------------------------

describe('KV cache', () => {
  it('gives the full-recompute logits at every generated position, including past the context length', async () => {
    const model = makeModel();
    const prompt = [7, 1, 22];
    const ref = referenceGreedy(model, prompt, 20);
    const watch = watchForwards(model);
    let cached: number[];
    try {
      cached = await generate(model, prompt, { maxNewTokens: 20, useCache: true });
    } finally {
      watch.restore();
    }
    const noCache = watchForwards(model);
    let uncached: number[];
    try {
      uncached = await generate(model, prompt, { maxNewTokens: 20, useCache: false });
    } finally {
      noCache.restore();
    }
    expect(cached).toEqual(ref.seq);
    expect(uncached).toEqual(ref.seq);
    // Without the cache: one full forward per token.
    expect(noCache.calls.map((c) => c.method)).toEqual(new Array(20).fill('forward'));

    // With it: one cached forward per token; its logits are the ones sampled from.
    const calls = watch.calls;
    expect(calls).toHaveLength(20);
    const ctx = SMALL.contextLength;
    for (let step = 0; step < 20; step++) {
      const { method, B, T, pos0, logits } = calls[step]!;
      const len = prompt.length + step; // tokens conditioning this step
      expect(method).toBe('forwardCachedAsync');
      expect(B).toBe(1);
      if (step === 0) expect([T, pos0]).toEqual([prompt.length, 0]); // prefill
      else if (len <= ctx) expect([T, pos0]).toEqual([1, len - 1]); // one-token decode
      else expect([T, pos0]).toEqual([ctx, 0]); // past the context: the window recomputed
      expectLogitsClose(logits!, ref.logits[step]!, `step ${step} (sequence length ${len})`);
    }
    expect(prompt.length + 20).toBeGreaterThan(ctx + 10);
  });

  it('LogitSource with and without the cache agrees step by step (batch of 2, past the context)', () => {
    const model = makeModel(SMALL, 3);
    const V = SMALL.vocabSize;
    const withCache = new LogitSource(model, 2, true);
    const without = new LogitSource(model, 2, false);
    try {
      const seqs = [[4, 8, 15], [16, 23, 42]];
      for (let step = 0; step < 20; step++) {
        const a = withCache.next(seqs, step > 0);
        const b = without.next(seqs, step > 0);
        expectLogitsClose(a, b, `step ${step}`);
        for (let s = 0; s < 2; s++) {
          expectLogitsClose(a.subarray(s * V, (s + 1) * V), fullForwardLogits(model, seqs[s]!), `step ${step} sequence ${s}`);
          seqs[s]!.push(argmaxOf(a.subarray(s * V, (s + 1) * V)));
        }
      }
    } finally {
      withCache.dispose();
      without.dispose();
    }
  });
});

// ---------------------------------------------------------------------------
// 3. Seeds
// ---------------------------------------------------------------------------

describe('seeded sampling', () => {
  it('the same seed gives the same tokens; different seeds differ', async () => {
    const model = makeModel();
    const opts = { maxNewTokens: 30, temperature: 1.5 };
    const a1 = await generate(model, [5, 6], { ...opts, seed: 42 });
    const a2 = await generate(model, [5, 6], { ...opts, seed: 42 });
    const b = await generate(model, [5, 6], { ...opts, seed: 43 });
    const c = await generate(model, [5, 6], { ...opts, seed: 44 });
    expect(a2).toEqual(a1);
    expect(b).not.toEqual(a1);
    expect(c).not.toEqual(a1);
    expect(c).not.toEqual(b);
    // Sampling is not greedy decoding.
    expect(a1).not.toEqual(referenceGreedy(model, [5, 6], 30).seq);
    // The default seed is fixed (123), so sampling without a seed is reproducible.
    expect(await generate(model, [5, 6], opts)).toEqual(await generate(model, [5, 6], { ...opts, seed: 123 }));
    // Streaming yields the same tokens as generate; the cache does not change the draws.
    expect(await collect(stream(model, [5, 6], { ...opts, seed: 42 }))).toEqual(a1.slice(2));
    expect(await generate(model, [5, 6], { ...opts, seed: 42, useCache: false })).toEqual(a1);
    // With top-k and top-p too.
    const o2 = { maxNewTokens: 30, temperature: 1.2, topK: 10, topP: 0.9 };
    expect(await generate(model, [5, 6], { ...o2, seed: 9 })).toEqual(await generate(model, [5, 6], { ...o2, seed: 9 }));
    expect(await generate(model, [5, 6], { ...o2, seed: 9 })).not.toEqual(await generate(model, [5, 6], { ...o2, seed: 10 }));
  });
});

// ---------------------------------------------------------------------------
// 4. Sampling statistics on fixed logits
// ---------------------------------------------------------------------------

describe('sampling distribution (20,000 draws through nextToken)', () => {
  const N = 20_000;
  const LOGITS = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 1.2, 0.3, -2.0];

  for (const T of [0.6, 1, 1.8]) {
    it(`frequencies match softmax(logits / ${T})`, () => {
      const counts = drawCounts(LOGITS, { temperature: T }, N, 1000 + Math.round(T * 10));
      expectMatchesDistribution(counts, refSoftmax(LOGITS, T), `T=${T}`);
    });
  }

  it('the test has power: draws at T=1.8 do not fit softmax(logits / 1)', () => {
    const counts = drawCounts(LOGITS, { temperature: 1.8 }, N, 77);
    const { stat, df } = chiSquare(counts, refSoftmax(LOGITS, 1));
    expect(stat).toBeGreaterThan(10 * chiSquareCritical(df));
  });

  it('temperature 0 is argmax (first index on ties), without drawing', () => {
    const rng = new Rng(1);
    const before = JSON.stringify(rng.getState());
    expect(nextToken(Float32Array.from(LOGITS), { temperature: 0 }, rng)).toBe(0);
    expect(nextToken(Float32Array.from([0, 3, 1, 3]), {}, rng)).toBe(1);
    expect(JSON.stringify(rng.getState())).toBe(before);
  });

  // Ties at 3.0 straddle the k-th place for k = 2, 3 and 4.
  const TIED = [1.0, 3.0, 0.5, 3.0, 2.0, 3.0, -1.0, 2.0, 0.0, 4.0];

  it("topKFilter is the book's torch.where(logits < min_val, -inf, logits), ties at the k-th value kept", () => {
    for (let k = 1; k <= TIED.length + 2; k++) {
      expect(Array.from(topKFilter(Float32Array.from(TIED), k)), `k=${k}`).toEqual(refTopK(TIED, Math.min(k, TIED.length)));
    }
    // k = 2: the 2nd largest is 3.0, so all three 3.0s stay with the 4.0.
    const kept = Array.from(topKFilter(Float32Array.from(TIED), 2)).flatMap((l, i) => (l > -Infinity ? [i] : []));
    expect(kept).toEqual([1, 3, 5, 9]);
  });

  for (const k of [1, 2, 5, 7]) {
    it(`top-k ${k} never samples outside the k largest (ties kept) and matches the renormalised softmax`, () => {
      const T = 1.3;
      const counts = drawCounts(TIED, { topK: k, temperature: T }, N, 500 + k);
      const probs = refSoftmax(refTopK(TIED, k), T);
      counts.forEach((c, i) => {
        if (probs[i] === 0) expect(c, `token ${i} is outside the top ${k}`).toBe(0);
        else expect(c, `token ${i} is inside the top ${k}`).toBeGreaterThan(0);
      });
      if (probs.filter((p) => p > 0).length > 1) expectMatchesDistribution(counts, probs, `top-k ${k}`);
    });
  }

  // Probabilities 0.45, 0.25, 0.15, 0.10, 0.05 in scrambled order.
  const PROBS = [0.1, 0.45, 0.05, 0.25, 0.15];
  const P_LOGITS = PROBS.map(Math.log);
  const cases: { topP: number; nucleus: number[]; T?: number }[] = [
    { topP: 0.3, nucleus: [1] },
    { topP: 0.6, nucleus: [1, 3] },
    { topP: 0.75, nucleus: [1, 3, 4] },
    { topP: 0.88, nucleus: [1, 3, 4, 0] },
    { topP: 1, nucleus: [0, 1, 2, 3, 4] },
    { topP: 0.75, T: 2, nucleus: [] }, // computed below from softmax(logits / 2)
  ];
  for (const c of cases) {
    it(`top-p ${c.topP}${c.T ? ` at T=${c.T}` : ''} keeps the smallest nucleus and samples it in proportion`, () => {
      const T = c.T ?? 1;
      const probs = refTopP(refSoftmax(P_LOGITS, T), c.topP);
      const nucleus = probs.flatMap((p, i) => (p > 0 ? [i] : []));
      if (c.nucleus.length) expect(nucleus.sort()).toEqual([...c.nucleus].sort());
      else expect(nucleus.length).toBe(4); // flatter at T=2: 0.45 0.25 0.15 ... need four
      const counts = drawCounts(P_LOGITS, { temperature: T, topP: c.topP }, N, 900 + Math.round(c.topP * 100));
      counts.forEach((n, i) => {
        if (probs[i] === 0) expect(n, `token ${i} is outside the nucleus`).toBe(0);
        else expect(n, `token ${i} is in the nucleus`).toBeGreaterThan(0);
      });
      if (nucleus.length > 1) expectMatchesDistribution(counts, probs, `top-p ${c.topP}`);
    });
  }

  it('top-k, then temperature, then top-p', () => {
    const T = 0.9, k = 5, p = 0.8;
    const probs = refTopP(refSoftmax(refTopK(TIED, k), T), p);
    const counts = drawCounts(TIED, { temperature: T, topK: k, topP: p }, N, 4242);
    counts.forEach((n, i) => {
      if (probs[i] === 0) expect(n).toBe(0);
    });
    expectMatchesDistribution(counts, probs, 'top-k 5, T 0.9, top-p 0.8');
  });
});

// ---------------------------------------------------------------------------
// 5. End of sequence
// ---------------------------------------------------------------------------

describe('eosId', () => {
  it('stops at the first eos, which ends the returned ids', async () => {
    const model = makeModel();
    const prompt = [9, 10, 11];
    const full = referenceGreedy(model, prompt, 20).seq.slice(prompt.length);
    // An eos that greedy decoding produces at step 4 for the first time.
    const eos = full.find((t, i) => i >= 3 && full.indexOf(t) === i)!;
    expect(eos).toBeDefined();
    const firstAt = full.indexOf(eos);
    const watch = watchForwards(model);
    let out: number[];
    try {
      out = await generate(model, prompt, { maxNewTokens: 20, eosId: eos });
    } finally {
      watch.restore();
    }
    expect(out).toEqual([...prompt, ...full.slice(0, firstAt + 1)]);
    expect(out[out.length - 1]).toBe(eos);
    expect(out.length).toBeLessThan(prompt.length + 20);
    expect(watch.calls).toHaveLength(firstAt + 1); // no work after the eos
    expect(await collect(stream(model, prompt, { maxNewTokens: 20, eosId: eos }))).toEqual(full.slice(0, firstAt + 1));
    expect(await generate(model, prompt, { maxNewTokens: 20, eosId: eos, useCache: false })).toEqual(out);
    // An eos that never comes changes nothing.
    const never = Array.from({ length: SMALL.vocabSize }, (_, i) => i).find((t) => !full.includes(t))!;
    expect(await generate(model, prompt, { maxNewTokens: 20, eosId: never })).toEqual([...prompt, ...full]);
  });

  it('in a batch, a finished sequence stops growing while the others go on', async () => {
    const model = makeModel();
    const prompts = [[9, 10, 11], [1, 2, 3]];
    const a = referenceGreedy(model, prompts[0]!, 15).seq.slice(3);
    const b = referenceGreedy(model, prompts[1]!, 15).seq.slice(3);
    // An eos that sequence 0 meets early and sequence 1 meets later or never.
    const eos = a.find((t, i) => i >= 2 && a.indexOf(t) === i && (!b.includes(t) || b.indexOf(t) > i + 2))!;
    expect(eos).toBeDefined();
    const want = [a, b].map((s, i) => [...prompts[i]!, ...(s.includes(eos) ? s.slice(0, s.indexOf(eos) + 1) : s)]);
    const got = await generate(model, prompts, { maxNewTokens: 15, eosId: eos });
    expect(got).toEqual(want);
    expect(got[0]![got[0]!.length - 1]).toBe(eos);
    expect(got[1]!.length).toBeGreaterThan(got[0]!.length);
    // streamBatch tags each token with its sequence, and yields nothing after an eos.
    const events = await collect(streamBatch(model, prompts, { maxNewTokens: 15, eosId: eos }));
    expect(events.filter((e) => e.sequence === 0).map((e) => e.token)).toEqual(want[0]!.slice(3));
    expect(events.filter((e) => e.sequence === 1).map((e) => e.token)).toEqual(want[1]!.slice(3));
  });
});

// ---------------------------------------------------------------------------
// 6. Batches
// ---------------------------------------------------------------------------

describe('batches of prompts', () => {
  it('equal lengths run as one batch and equal generating each alone (past the context too)', async () => {
    const model = makeModel();
    const prompts = [[1, 2, 3], [4, 5, 6], [40, 41, 42]];
    const alone: number[][] = [];
    for (const p of prompts) alone.push(await generate(model, p, { maxNewTokens: 12 }));
    prompts.forEach((p, i) => expect(alone[i]).toEqual(referenceGreedy(model, p, 12).seq));
    const watch = watchForwards(model);
    let batch: number[][];
    try {
      batch = await generate(model, prompts, { maxNewTokens: 12 });
    } finally {
      watch.restore();
    }
    expect(batch).toEqual(alone);
    expect(watch.calls).toHaveLength(12);
    for (const call of watch.calls) expect(call.B).toBe(3); // one batch
    expect(await generate(model, prompts, { maxNewTokens: 12, useCache: false })).toEqual(alone);
    expect(await model.generate(prompts.map((p) => Int32Array.from(p)), { maxNewTokens: 12 })).toEqual(alone);
  });

  it('mixed lengths equal generating each alone', async () => {
    const model = makeModel();
    const prompts = [[1, 2], [3, 4, 5, 6], [7], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17]]; // the last is longer than the context
    const alone: number[][] = [];
    for (const p of prompts) alone.push(await generate(model, p, { maxNewTokens: 10 }));
    prompts.forEach((p, i) => expect(alone[i]).toEqual(referenceGreedy(model, p, 10).seq));
    const watch = watchForwards(model);
    try {
      expect(await generate(model, prompts, { maxNewTokens: 10 })).toEqual(alone);
    } finally {
      watch.restore();
    }
    // Past the context every row slides on its own (batch 1); test/generate-batch.test.ts covers batched decoding.
    expect(watch.calls.length).toBeGreaterThan(0);
    expect(await generate(model, prompts, { maxNewTokens: 10, useCache: false })).toEqual(alone);
    // Sampling: each prompt of a mixed batch is seeded as if alone.
    const opts = { maxNewTokens: 10, temperature: 1, seed: 8 };
    const sampledAlone: number[][] = [];
    for (const p of prompts) sampledAlone.push(await generate(model, p, opts));
    expect(await generate(model, prompts, opts)).toEqual(sampledAlone);
  });

  it('concurrent generations on one model give what each gives alone', async () => {
    const model = makeModel();
    // Different batch shapes and cache use, started together and interleaving on the event loop.
    const jobs: [number[] | number[][], object][] = [
      [[1, 2, 3], { maxNewTokens: 15 }],
      [[[4, 5], [6, 7]], { maxNewTokens: 15 }],
      [[8, 9, 10, 11, 12, 13], { maxNewTokens: 15, useCache: false }],
      [[14], { maxNewTokens: 15, temperature: 1, seed: 3 }],
      [[[15, 16, 17], [18], [19, 20, 21, 22, 23]], { maxNewTokens: 15 }],
    ];
    const sequential: unknown[] = [];
    for (const [p, o] of jobs) sequential.push(await generate(model, p as number[], o));
    const concurrent = await Promise.all(jobs.map(([p, o]) => generate(model, p as number[], o)));
    expect(concurrent).toEqual(sequential);
  });

  it('an empty list of prompts gives an empty list', async () => {
    const model = makeModel();
    expect(await collect(streamBatch(model, [], { maxNewTokens: 3 }))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// 7. Cancellation and the event loop
// ---------------------------------------------------------------------------

describe('AbortSignal', () => {
  it('aborting after the first streamed token stops the iterator with an AbortError (no further token)', async () => {
    const model = makeModel();
    const controller = new AbortController();
    let cache: KVCache | undefined;
    const create = vi.spyOn(model, 'createKVCache').mockImplementation((batch: number) => {
      cache = GPTModel.prototype.createKVCache.call(model, batch);
      return cache;
    });
    const got: number[] = [];
    let error: unknown;
    try {
      for await (const t of stream(model, [1, 2, 3], { maxNewTokens: 50, signal: controller.signal })) {
        got.push(t);
        if (got.length === 1) controller.abort();
      }
    } catch (e) {
      error = e;
    } finally {
      create.mockRestore();
    }
    expect(error).toBeInstanceOf(Error); // DOMException extends Error in Node
    expect((error as Error).name).toBe('AbortError');
    expect(got.length).toBeGreaterThanOrEqual(1);
    expect(got.length).toBeLessThanOrEqual(2);
    expect(got.length).toBe(1); // the check comes before each forward pass
    expect(cache!.keys[0]!.disposed).toBe(true); // the cache is freed
  });

  it('generate() rejects with the AbortError; an abort during a token lets only that token finish', async () => {
    const model = makeModel();
    const controller = new AbortController();
    // Abort while the first token is being computed.
    const watch = watchForwards(model, { onCall: () => controller.abort() });
    try {
      await expect(generate(model, [1, 2, 3], { maxNewTokens: 50, signal: controller.signal })).rejects.toMatchObject({
        name: 'AbortError',
      });
    } finally {
      watch.restore();
    }
    expect(watch.calls.length).toBeGreaterThanOrEqual(1);
    expect(watch.calls.length).toBeLessThanOrEqual(2);
    expect(watch.calls.length).toBe(1);
  });

  it('an abort from a timer stops a long generation within one token; the reason is passed through', async () => {
    const model = makeModel();
    const controller = new AbortController();
    const watch = watchForwards(model, { busyMs: 2 });
    let callsAtAbort = -1;
    const reason = new Error('user pressed stop');
    setTimeout(() => {
      callsAtAbort = watch.calls.length;
      controller.abort(reason);
    }, 30);
    try {
      await expect(generate(model, [1, 2, 3], { maxNewTokens: 100_000, signal: controller.signal })).rejects.toBe(reason);
    } finally {
      watch.restore();
    }
    expect(callsAtAbort).toBeGreaterThan(0);
    expect(watch.calls.length).toBeLessThanOrEqual(callsAtAbort + 1);
  });

  it('an already aborted signal computes nothing', async () => {
    const model = makeModel();
    const watch = watchForwards(model);
    try {
      await expect(generate(model, [1, 2], { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
      await expect(generate(model, [[1, 2], [3]], { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
      await expect(generate(model, [1, 2], { signal: AbortSignal.abort(), useCache: false })).rejects.toMatchObject({ name: 'AbortError' });
    } finally {
      watch.restore();
    }
    expect(watch.calls).toEqual([]);
  });
});

describe('event loop', () => {
  it('a setInterval tick fires between every two tokens', async () => {
    const model = makeModel();
    // Each token blocks the main thread > 2 ms, so a 1 ms interval is due at every yield.
    const watch = watchForwards(model, { busyMs: 2.5 });
    const log: string[] = [];
    const timer = setInterval(() => log.push('tick'), 1);
    try {
      for await (const t of model.stream([1, 2, 3], { maxNewTokens: 25 })) log.push(`token ${t}`);
    } finally {
      clearInterval(timer);
      watch.restore();
    }
    const tokenAt = log.flatMap((e, i) => (e.startsWith('token') ? [i] : []));
    expect(tokenAt).toHaveLength(25);
    for (let i = 1; i < tokenAt.length; i++) {
      const between = log.slice(tokenAt[i - 1]! + 1, tokenAt[i]);
      expect(between, `no tick between tokens ${i - 1} and ${i}`).toContain('tick');
    }
  });

  it('generate() (a promise) lets timers run between tokens, with and without the cache', async () => {
    const model = makeModel();
    for (const useCache of [true, false]) {
      const watch = watchForwards(model, { busyMs: 2.5 });
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      try {
        await generate(model, [1, 2, 3], { maxNewTokens: 20, useCache });
      } finally {
        clearInterval(timer);
        watch.restore();
      }
      expect(ticks, `useCache ${useCache}`).toBeGreaterThanOrEqual(19);
    }
  });

  it('timers also run while a token is being computed (the forward runs off the main thread)', async () => {
    // Big enough that prefilling 64 positions takes tens of milliseconds.
    const model = new GPTModel(
      { vocabSize: 8000, contextLength: 64, embDim: 256, nHeads: 4, nLayers: 6, dropRate: 0, qkvBias: false, tieWeights: true },
      { seed: 1 },
    );
    live.push(model);
    let inFlight = false, ticksInFlight = 0;
    const proto = GPTModel.prototype;
    const m = model as unknown as Record<string, unknown>;
    m.forwardCachedAsync = async function (this: GPTModel, ...args: Parameters<GPTModel['forwardCachedAsync']>) {
      inFlight = true;
      try {
        return await proto.forwardCachedAsync.apply(this, args);
      } finally {
        inFlight = false;
      }
    };
    const timer = setInterval(() => {
      if (inFlight) ticksInFlight++;
    }, 1);
    const prompt = Array.from({ length: 64 }, (_, i) => (i * 37) % 8000);
    try {
      const t0 = performance.now();
      await generate(model, prompt, { maxNewTokens: 2 });
      const ms = performance.now() - t0;
      if (ms > 20) expect(ticksInFlight, `${ms.toFixed(0)} ms of generation`).toBeGreaterThan(0);
    } finally {
      clearInterval(timer);
      delete m.forwardCachedAsync;
    }
  });
});

// ---------------------------------------------------------------------------
// 8. Invalid options
// ---------------------------------------------------------------------------

describe('invalid options', () => {
  const cases: { label: string; prompt: number[] | number[][]; options: Record<string, unknown>; error: RegExp }[] = [
    { label: 'negative temperature', prompt: [1], options: { temperature: -0.5 }, error: /temperature must be a finite number >= 0 \(got -0\.5\)/ },
    { label: 'NaN temperature', prompt: [1], options: { temperature: NaN }, error: /temperature/ },
    { label: 'infinite temperature', prompt: [1], options: { temperature: Infinity }, error: /temperature/ },
    { label: 'topK 0', prompt: [1], options: { topK: 0 }, error: /topK must be a positive integer \(got 0\)/ },
    { label: 'topK -3', prompt: [1], options: { topK: -3 }, error: /topK/ },
    { label: 'fractional topK', prompt: [1], options: { topK: 2.5 }, error: /topK/ },
    { label: 'topP 0', prompt: [1], options: { topP: 0 }, error: /topP must be in \(0, 1\] \(got 0\)/ },
    { label: 'topP > 1', prompt: [1], options: { topP: 1.5 }, error: /topP must be in \(0, 1\] \(got 1\.5\)/ },
    { label: 'negative topP', prompt: [1], options: { topP: -0.1 }, error: /topP/ },
    { label: 'negative maxNewTokens', prompt: [1], options: { maxNewTokens: -1 }, error: /maxNewTokens/ },
    { label: 'fractional maxNewTokens', prompt: [1], options: { maxNewTokens: 2.5 }, error: /maxNewTokens/ },
    { label: 'token id = vocab size', prompt: [1, 50], options: {}, error: /token id 50 at position 1 is outside the vocabulary \[0, 50\)/ },
    { label: 'negative token id', prompt: [-1], options: {}, error: /token id -1 .*outside the vocabulary/ },
    { label: 'fractional token id', prompt: [1.5], options: {}, error: /token id 1\.5 .*outside the vocabulary/ },
    { label: 'empty prompt', prompt: [], options: {}, error: /prompt is empty/ },
    { label: 'empty prompt in a batch', prompt: [[1, 2], []], options: {}, error: /prompt is empty/ },
    { label: 'bad id in a mixed batch', prompt: [[1, 2], [3], [4, 99]], options: {}, error: /token id 99/ },
  ];
  for (const c of cases) {
    it(`${c.label} is a clear error, before any forward pass`, async () => {
      const model = makeModel();
      const watch = watchForwards(model);
      try {
        await expect(generate(model, c.prompt as number[], { maxNewTokens: 3, ...c.options })).rejects.toThrow(c.error);
        if (!Array.isArray(c.prompt[0])) {
          await expect(collect(stream(model, c.prompt as number[], { maxNewTokens: 3, ...c.options }))).rejects.toThrow(c.error);
        }
      } finally {
        watch.restore();
      }
      expect(watch.calls).toEqual([]);
    });
  }

  it('streamBatch takes prompts of different lengths, as generate() does', async () => {
    const model = makeModel();
    const events = await collect(streamBatch(model, [[1, 2], [3]], { maxNewTokens: 4 }));
    const got = [[1, 2], [3]];
    for (const e of events) got[e.sequence].push(e.token);
    expect(got).toEqual(await generate(model, [[1, 2], [3]], { maxNewTokens: 4 }));
  });
});
