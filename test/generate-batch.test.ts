// Batched and concurrent generation (ts/generate/generate.ts): prompts of
// different lengths decode in one batch, each row at its own position of the
// KV cache (no padding). Every batched result must equal the same prompt run
// alone (greedy and sampled, bit for bit in the logits up to 8 rows), solo
// greedy runs must equal an independent greedy decoder built from full
// forwards without the cache, the decode steps must really be batched, and
// several generate() calls running at once on one model must each give what
// they give alone while the event loop keeps running.
import { afterAll, describe, expect, it } from 'vitest';

import { generate } from '../ts/generate/generate.js';
import type { GPTConfig } from '../ts/model/config.js';
import { GPTModel, type CachePositions, type KVCache } from '../ts/model/gpt.js';
import { TestRandom } from './helpers/naive-gpt.js';

// Context 48: prompts plus new tokens stay inside it, so decode steps batch.
const CFG: GPTConfig = { vocabSize: 97, contextLength: 48, embDim: 32, nHeads: 4, nLayers: 2, dropRate: 0, qkvBias: true, tieWeights: false };

const live: GPTModel[] = [];
afterAll(() => {
  for (const m of live) m.dispose();
});

/** Weights large enough for logits of order one, so greedy choices are far from ties. */
function makeModel(config: GPTConfig = CFG, seed = 5): GPTModel {
  const model = new GPTModel(config, { seed, device: 'cpu' });
  live.push(model);
  const rng = new TestRandom(seed * 7919 + 1);
  for (const p of model.namedParameters()) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const scale = p.name.endsWith('.scale') ? 0 : p.shape.length === 2 ? 1.5 / Math.sqrt(p.shape[1]!) : 0.3;
    const base = p.name.endsWith('.scale') ? 1 : 0;
    p.value.write(Float32Array.from({ length: n }, () => base + (scale || 0.3) * rng.normal()));
  }
  return model;
}

/** Greedy decoding by full forwards over the whole sequence (no cache, batch 1): the reference. */
function referenceGreedy(model: GPTModel, prompt: number[], maxNew: number): number[] {
  const seq = [...prompt];
  const V = model.config.vocabSize;
  for (let i = 0; i < maxNew; i++) {
    model.forward(Int32Array.from(seq), 1, seq.length);
    const row = model.logits().toFloat32Array().subarray((seq.length - 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
    seq.push(best);
  }
  return seq;
}

interface Call { B: number; T: number; pos0: CachePositions }

function watchCalls(model: GPTModel): { calls: Call[]; restore: () => void } {
  const calls: Call[] = [];
  const m = model as unknown as Record<string, unknown>;
  m.forwardCachedAsync = function (this: GPTModel, ids: Int32Array, B: number, T: number, pos0: CachePositions, cache: KVCache) {
    calls.push({ B, T, pos0: typeof pos0 === 'number' ? pos0 : [...pos0] });
    return GPTModel.prototype.forwardCachedAsync.call(this, ids, B, T, pos0, cache);
  };
  return { calls, restore: () => delete m.forwardCachedAsync };
}

const PROMPTS = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [18, 19, 20, 21, 22], [23], [24, 25, 26, 27, 28, 29]];

describe('batched generation', () => {
  it('8 prompts of different lengths: batched greedy ids equal each prompt alone and the no-cache reference', async () => {
    const model = makeModel();
    const alone: number[][] = [];
    for (const p of PROMPTS) alone.push(await generate(model, p, { maxNewTokens: 12 }));
    PROMPTS.forEach((p, i) => expect(alone[i], `prompt ${i} alone`).toEqual(referenceGreedy(model, p, 12)));
    const watch = watchCalls(model);
    let batched: number[][];
    try {
      batched = await generate(model, PROMPTS, { maxNewTokens: 12 });
    } finally {
      watch.restore();
    }
    expect(batched).toEqual(alone);
    // One prefill per prompt, then every new token after the first is one step over all 8 rows.
    const prefills = watch.calls.filter((c) => c.B === 1);
    expect(prefills.map((c) => c.T)).toEqual(PROMPTS.map((p) => p.length));
    const steps = watch.calls.filter((c) => c.B === 8);
    expect(steps).toHaveLength(11);
    steps.forEach((c, i) => expect(c.pos0).toEqual(PROMPTS.map((p) => p.length + i)));
  });

  it('a per-row-position decode step gives each row the logits of its solo step, bit for bit', () => {
    const model = makeModel();
    const V = CFG.vocabSize;
    const batchCache = model.createKVCache(PROMPTS.length);
    const solos = PROMPTS.map(() => model.createKVCache(1));
    try {
      // Fill row b of the batch cache and the solo cache b with the same prompt.
      const rowOf = (c: KVCache, b: number): KVCache => {
        const row = (t: (typeof c.keys)[number]) => t.view(b * (t.numel / c.batch), [1, ...t.shape.slice(1)]);
        return { config: c.config, batch: 1, keys: c.keys.map(row), values: c.values.map(row), dispose: () => {} };
      };
      PROMPTS.forEach((p, b) => {
        const ids = Int32Array.from(p);
        expect(model.forwardCached(ids, 1, p.length, 0, rowOf(batchCache, b))).toEqual(model.forwardCached(ids, 1, p.length, 0, solos[b]!));
      });
      const next = Int32Array.from(PROMPTS, (_, b) => 30 + b);
      const batched = model.forwardCached(next, PROMPTS.length, 1, PROMPTS.map((p) => p.length), batchCache);
      PROMPTS.forEach((p, b) => {
        const solo = model.forwardCached(next.subarray(b, b + 1), 1, 1, p.length, solos[b]!);
        expect(batched.subarray(b * V, (b + 1) * V), `row ${b}`).toEqual(solo);
      });
    } finally {
      batchCache.dispose();
      solos.forEach((c) => c.dispose());
    }
  });

  it('sampled generation in a batch equals each prompt sampled alone with the same seed', async () => {
    const model = makeModel();
    const opts = { maxNewTokens: 10, temperature: 1.2, topK: 20, seed: 77 };
    const alone: number[][] = [];
    for (const p of PROMPTS.slice(0, 5)) alone.push(await generate(model, p, opts));
    expect(await generate(model, PROMPTS.slice(0, 5), opts)).toEqual(alone);
    expect(new Set(alone.map((s) => s.slice(-10).join())).size, 'rows sample differently').toBeGreaterThan(1);
  });

  it('an end-of-sequence id stops its row while the others go on, as alone', async () => {
    const model = makeModel();
    const solo = await generate(model, PROMPTS[2]!, { maxNewTokens: 10 });
    const eos = solo[PROMPTS[2]!.length + 1]!; // the 2nd new token of prompt 2
    const alone: number[][] = [];
    for (const p of PROMPTS) alone.push(await generate(model, p, { maxNewTokens: 10, eosId: eos }));
    expect(alone[2]!.length).toBeLessThanOrEqual(PROMPTS[2]!.length + 2);
    expect(alone[2]!.at(-1)).toBe(eos);
    expect(await generate(model, PROMPTS, { maxNewTokens: 10, eosId: eos })).toEqual(alone);
  });

  it('rows sliding past the context still equal their solo runs', async () => {
    const model = makeModel({ ...CFG, contextLength: 8 });
    const prompts = [[1, 2], [3, 4, 5, 6, 7], [8]];
    const alone: number[][] = [];
    for (const p of prompts) alone.push(await generate(model, p, { maxNewTokens: 10 }));
    expect(await generate(model, prompts, { maxNewTokens: 10 })).toEqual(alone);
  });

  it('per-row positions are validated', () => {
    const model = makeModel();
    const cache = model.createKVCache(2);
    try {
      expect(() => model.forwardCached(Int32Array.of(1, 2, 3, 4), 2, 2, [0, 1], cache)).toThrow(/per-sequence positions need T = 1/);
      expect(() => model.forwardCached(Int32Array.of(1, 2), 2, 1, [0], cache)).toThrow(/1 positions for a batch of 2/);
      expect(() => model.forwardCached(Int32Array.of(1, 2), 2, 1, [0, 48], cache)).toThrow(/exceed the context length 48/);
      expect(() => model.forwardCached(Int32Array.of(1, 2), 2, 1, [0, 1.5], cache)).toThrow(/position 1.5 is not a non-negative integer/);
    } finally {
      cache.dispose();
    }
  });
});

describe('concurrent generation', () => {
  it('several generate() calls at once on one model each give their solo result, and timers keep running', async () => {
    const model = makeModel();
    const jobs: [number[] | number[][], object][] = [
      [PROMPTS, { maxNewTokens: 12 }],
      [PROMPTS[2]!, { maxNewTokens: 15 }],
      [PROMPTS.slice(3, 6), { maxNewTokens: 9, temperature: 0.9, seed: 4 }],
      [PROMPTS[0]!, { maxNewTokens: 12, useCache: false }],
      [[PROMPTS[1]!, PROMPTS[1]!], { maxNewTokens: 7 }],
    ];
    const solo: unknown[] = [];
    for (const [p, o] of jobs) solo.push(await generate(model, p as number[], o));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    let concurrent: unknown[];
    try {
      concurrent = await Promise.all(jobs.map(([p, o]) => generate(model, p as number[], o)));
    } finally {
      clearInterval(timer);
    }
    expect(concurrent).toEqual(solo);
    // Each token yields to the event loop, so the timer fires many times during the ~55 steps.
    expect(ticks).toBeGreaterThanOrEqual(10);
  });
});
