// Text generation with a KV cache: the prompt runs once through the model
// (prefill), then every new token is one single-position forward pass that
// reads the cached keys and values. Once a sequence outgrows the context, only
// its last contextLength tokens condition the next one (as the book's
// generate), and since position embeddings are absolute the window is
// recomputed from scratch at each slide.
//
// Each token's forward pass runs on a worker thread (a recorded op sequence
// replayed by a Napi::AsyncWorker), so the event loop stays free while the
// model computes, and an AbortSignal stops generation within one token.
import { GPTModel, type CachePositions, type KVCache } from '../model/gpt.js';
import type { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { argmax, nextToken, validateSampling, type SamplingOptions } from './sampling.js';

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to add (default 25). */
  maxNewTokens?: number;
  /** Stop a sequence when it produces this id (e.g. 50256, <|endoftext|>). */
  eosId?: number;
  /** Seeds sampling (default 123, as the book's torch.manual_seed(123)). */
  seed?: number;
  /**
   * Checked before every forward pass: once aborted, no further forward runs
   * (a token already being computed still finishes and is yielded, so at most
   * one token arrives after the abort); then generate() rejects, and a
   * stream's next() throws, with `signal.reason` (a DOMException named
   * 'AbortError' for a plain abort()). The KV cache is freed either way.
   */
  signal?: AbortSignal;
  /** Use the KV cache (default true); false recomputes the whole window per token. */
  useCache?: boolean;
}

export interface StreamedToken {
  /** Which prompt of the batch this token extends. */
  sequence: number;
  token: number;
}

/** Rows [B, V] of the last position of each sequence in logits [B, T, V]. */
export function lastPositionRows(all: Float32Array, B: number, T: number, V: number): Float32Array {
  const result = new Float32Array(B * V);
  for (let b = 0; b < B; b++) result.set(all.subarray((b * T + T - 1) * V, (b * T + T) * V), b * V);
  return result;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

function checkPrompt(model: GPTModel, ids: ArrayLike<number>): void {
  if (ids.length === 0) throw new Error('generate: the prompt is empty; give at least one token id');
  const V = model.config.vocabSize;
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i];
    if (!Number.isInteger(t) || t < 0 || t >= V)
      throw new Error(`generate: token id ${t} at position ${i} is outside the vocabulary [0, ${V})`);
  }
}

/**
 * One generation step at a time per model. A step's ops run on a worker thread
 * over the model's shared activation buffers, so two generations interleaving
 * on one model (e.g. concurrent requests) would overwrite each other's inputs,
 * or free buffers the other is still reading when a new [B, T] shape grows the
 * pool. Steps queue here instead; each generation keeps its own KV cache.
 */
const modelQueues = new WeakMap<GPTModel, Promise<void>>();

async function exclusive<T>(model: GPTModel, fn: () => Promise<T>): Promise<T> {
  const previous = modelQueues.get(model) ?? Promise.resolve();
  let release!: () => void;
  const tail = previous.then(() => new Promise<void>((resolve) => (release = resolve)));
  modelQueues.set(model, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (modelQueues.get(model) === tail) modelQueues.delete(model);
  }
}

/** One cached forward of a step: `rows` of the batch's logits come from it. */
interface CachedCall {
  ids: Int32Array;
  B: number;
  T: number;
  pos0: CachePositions;
  cache: KVCache;
  rows: number[];
}

/**
 * Next-token logits for B sequences, with or without the cache. Sequences may
 * differ in length: each row keeps its own count of cached positions, a step
 * where every row just appended one token decodes all rows together (each at
 * its own position), and a row that needs its window (re)computed, at the
 * prompt or after sliding past the context, runs alone on its row of the cache.
 * Every row then sees exactly the arithmetic of a solo run, so batched and
 * solo results agree bit for bit (up to 8 rows, where the matrix products
 * take the GEMV path whose sums do not depend on the batch size).
 */
export class LogitSource {
  private cache: KVCache | null;
  private rowCaches: KVCache[] = [];
  private cached: number[]; // positions held in each row's cache

  constructor(private readonly model: GPTModel, private readonly B: number, useCache: boolean) {
    this.cache = useCache ? model.createKVCache(B) : null;
    this.cached = new Array<number>(B).fill(0);
  }

  /** Logits [B, V] for the token after the end of each of `seqs`. */
  next(seqs: number[][], appended: boolean): Float32Array {
    const calls = this.plan(seqs, appended);
    if (!calls) return this.recompute(seqs);
    return this.gather(calls, calls.map((c) => this.model.forwardCached(c.ids, c.B, c.T, c.pos0, c.cache)));
  }

  /** next() with the model's arithmetic on a worker thread. */
  nextAsync(seqs: number[][], appended: boolean): Promise<Float32Array> {
    return exclusive(this.model, async () => {
      const calls = this.plan(seqs, appended);
      if (!calls) return this.recompute(seqs);
      const logits: Float32Array[] = [];
      for (const c of calls) logits.push(await this.model.forwardCachedAsync(c.ids, c.B, c.T, c.pos0, c.cache));
      return this.gather(calls, logits);
    });
  }

  /**
   * The cached forwards to run: one new position per row when every row's
   * cache holds all but its last token, else the whole (last contextLength)
   * window from position 0, as one batch when the rows have one length and
   * row by row otherwise. Null without a cache.
   */
  private plan(seqs: number[][], appended: boolean): CachedCall[] | null {
    if (!this.cache) return null;
    const ctx = this.model.config.contextLength;
    const all = seqs.map((_, b) => b);
    const decodes = (b: number) => appended && seqs[b].length <= ctx && this.cached[b] === seqs[b].length - 1;
    const last = (b: number) => seqs[b][seqs[b].length - 1];
    let calls: CachedCall[];
    if (all.every(decodes)) {
      const pos = seqs.map((s) => s.length - 1);
      const pos0 = pos.every((p) => p === pos[0]) ? pos[0] : pos;
      calls = [{ ids: Int32Array.from(all, last), B: this.B, T: 1, pos0, cache: this.cache, rows: all }];
    } else if (seqs.every((s) => s.length === seqs[0].length)) {
      const { ids, T } = this.window(seqs);
      calls = [{ ids, B: this.B, T, pos0: 0, cache: this.cache, rows: all }];
    } else {
      calls = all.map((b) => {
        if (decodes(b)) return { ids: Int32Array.of(last(b)), B: 1, T: 1, pos0: seqs[b].length - 1, cache: this.rowCache(b), rows: [b] };
        const { ids, T } = this.window([seqs[b]]);
        return { ids, B: 1, T, pos0: 0, cache: this.rowCache(b), rows: [b] };
      });
    }
    for (const c of calls) c.rows.forEach((b) => (this.cached[b] = (typeof c.pos0 === 'number' ? c.pos0 : c.pos0[b]) + c.T));
    return calls;
  }

  /** Row b of the batch's cache as a cache of batch 1 (views: no copy). */
  private rowCache(b: number): KVCache {
    const cache = this.cache!;
    if (!this.rowCaches[b]) {
      const row = (t: Tensor) => t.view(b * (t.numel / this.B), [1, ...t.shape.slice(1)]);
      this.rowCaches[b] = { config: cache.config, batch: 1, keys: cache.keys.map(row), values: cache.values.map(row), dispose: () => {} };
    }
    return this.rowCaches[b];
  }

  private gather(calls: CachedCall[], logits: Float32Array[]): Float32Array {
    if (calls.length === 1) return logits[0];
    const V = this.model.config.vocabSize;
    const out = new Float32Array(this.B * V);
    calls.forEach((c, i) => c.rows.forEach((b, j) => out.set(logits[i].subarray(j * V, (j + 1) * V), b * V)));
    return out;
  }

  /** The last contextLength tokens of every sequence (all of one length), as one [B, T] batch. */
  private window(seqs: number[][]): { ids: Int32Array; T: number } {
    const len = seqs[0].length;
    const T = Math.min(len, this.model.config.contextLength);
    const ids = new Int32Array(seqs.length * T);
    seqs.forEach((s, b) => ids.set(s.slice(len - T), b * T));
    return { ids, T };
  }

  /** Without a cache: the full forward over the last contextLength tokens, row by row for mixed lengths. */
  private recompute(seqs: number[][]): Float32Array {
    const V = this.model.config.vocabSize;
    const groups = seqs.every((s) => s.length === seqs[0].length) ? [seqs] : seqs.map((s) => [s]);
    const out = new Float32Array(this.B * V);
    let row = 0;
    for (const g of groups) {
      const { ids, T } = this.window(g);
      this.model.forward(ids, g.length, T);
      out.set(lastPositionRows(this.model.logits().toFloat32Array(), g.length, T, V), row * V);
      row += g.length;
    }
    return out;
  }

  dispose(): void {
    this.cache?.dispose();
  }
}

/**
 * Yields each new token as it is produced. `prompts` are token-id sequences,
 * of any lengths: after each prompt's own prefill, the batch shares one
 * forward pass per token, every row at its own position (no padding). Each
 * row samples from its own generator seeded with `seed`, so a prompt gives the
 * same tokens in a batch as alone, sampled or greedy.
 */
export async function* streamBatch(
  model: GPTModel,
  prompts: ArrayLike<number>[],
  options: GenerateOptions = {},
): AsyncGenerator<StreamedToken> {
  validateSampling(options);
  const maxNew = options.maxNewTokens ?? 25;
  if (!(Number.isInteger(maxNew) && maxNew >= 0)) throw new Error(`maxNewTokens must be a non-negative integer (got ${maxNew})`);
  if (prompts.length === 0) return;
  prompts.forEach((p) => checkPrompt(model, p));
  const B = prompts.length;
  const V = model.config.vocabSize;
  const seqs = prompts.map((p) => Array.from(p));
  const done = new Array<boolean>(B).fill(false);
  const rngs = prompts.map(() => new Rng(options.seed ?? 123));
  const source = new LogitSource(model, B, options.useCache ?? true);
  try {
    for (let step = 0; step < maxNew; step++) {
      options.signal?.throwIfAborted();
      const logits = await source.nextAsync(seqs, step > 0);
      for (let b = 0; b < B; b++) {
        const token = done[b] ? (options.eosId ?? 0) : nextToken(logits.subarray(b * V, (b + 1) * V), options, rngs[b]);
        seqs[b].push(token);
        if (done[b]) continue;
        if (token === options.eosId) done[b] = true;
        yield { sequence: b, token };
      }
      if (done.every(Boolean)) return;
      await yieldToEventLoop();
    }
  } finally {
    source.dispose();
  }
}

/** Yields each new token of one prompt as it is produced. */
export async function* stream(model: GPTModel, ids: ArrayLike<number>, options: GenerateOptions = {}): AsyncGenerator<number> {
  for await (const t of streamBatch(model, [ids], options)) yield t.token;
}

/**
 * The prompt followed by the new tokens (as the book's generate). For a batch
 * (an array of prompts, of any lengths) returns one array per prompt, computed
 * together (see streamBatch).
 */
export async function generate(model: GPTModel, ids: ArrayLike<number>, options?: GenerateOptions): Promise<number[]>;
export async function generate(model: GPTModel, ids: ArrayLike<number>[], options?: GenerateOptions): Promise<number[][]>;
export async function generate(
  model: GPTModel,
  ids: ArrayLike<number> | ArrayLike<number>[],
  options: GenerateOptions = {},
): Promise<number[] | number[][]> {
  const isBatch = Array.isArray(ids) && ids.length > 0 && typeof ids[0] !== 'number';
  const prompts = isBatch ? (ids as ArrayLike<number>[]) : [ids as ArrayLike<number>];
  const out = prompts.map((p) => Array.from(p));
  for await (const t of streamBatch(model, prompts, options)) out[t.sequence].push(t.token);
  return isBatch ? out : out[0];
}

/** Greedy decoding with the KV cache, synchronously (the trainer's samples). */
export function generateGreedySync(model: GPTModel, prompt: number[], maxNew: number): number[] {
  const seq = [...prompt];
  const source = new LogitSource(model, 1, true);
  try {
    for (let i = 0; i < maxNew; i++) seq.push(argmax(source.next([seq], i > 0)));
  } finally {
    source.dispose();
  }
  return seq;
}

// model.generate() and model.stream(): model/ sits below this layer and cannot
// import it, so the methods are attached here; ts/index.ts imports this module.
declare module '../model/gpt.js' {
  interface GPTModel {
    /** The prompt plus new token ids: greedy by default, or temperature / topK / topP sampling. */
    generate(ids: ArrayLike<number>, options?: GenerateOptions): Promise<number[]>;
    generate(ids: ArrayLike<number>[], options?: GenerateOptions): Promise<number[][]>;
    /** Async iterator over new token ids as they are produced. */
    stream(ids: ArrayLike<number>, options?: GenerateOptions): AsyncGenerator<number>;
  }
}
GPTModel.prototype.generate = function (this: GPTModel, ids: ArrayLike<number> | ArrayLike<number>[], options?: GenerateOptions) {
  return generate(this, ids as ArrayLike<number>[], options);
} as GPTModel['generate'];
GPTModel.prototype.stream = function (this: GPTModel, ids: ArrayLike<number>, options?: GenerateOptions) {
  return stream(this, ids, options);
};
