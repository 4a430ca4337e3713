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
import { GPTModel, type KVCache } from '../model/gpt.js';
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

/** Next-token logits for B equal-length sequences, with or without the cache. */
export class LogitSource {
  private cache: KVCache | null;
  private cached = 0; // positions held in the cache

  constructor(private readonly model: GPTModel, private readonly B: number, useCache: boolean) {
    this.cache = useCache ? model.createKVCache(B) : null;
  }

  /** Logits [B, V] for the token after the end of `seqs` (all the same length). */
  next(seqs: number[][], appended: boolean): Float32Array {
    const step = this.plan(seqs, appended);
    if (step && this.cache) {
      const logits = this.model.forwardCached(step.ids, this.B, step.T, step.pos0, this.cache);
      this.cached = step.pos0 + step.T;
      return logits;
    }
    return this.recompute(seqs);
  }

  /** next() with the model's arithmetic on a worker thread. */
  nextAsync(seqs: number[][], appended: boolean): Promise<Float32Array> {
    return exclusive(this.model, async () => {
      const step = this.plan(seqs, appended);
      if (step && this.cache) {
        const logits = await this.model.forwardCachedAsync(step.ids, this.B, step.T, step.pos0, this.cache);
        this.cached = step.pos0 + step.T;
        return logits;
      }
      return this.recompute(seqs);
    });
  }

  /**
   * The cached forward to run: one new position when the cache holds all
   * but the last token, else the whole (last contextLength) window from
   * position 0. Null without a cache.
   */
  private plan(seqs: number[][], appended: boolean): { ids: Int32Array; T: number; pos0: number } | null {
    if (!this.cache) return null;
    const ctx = this.model.config.contextLength;
    const len = seqs[0].length;
    if (appended && len <= ctx && this.cached === len - 1)
      return { ids: Int32Array.from(seqs.map((s) => s[len - 1])), T: 1, pos0: len - 1 };
    const { ids, T } = this.window(seqs);
    return { ids, T, pos0: 0 };
  }

  /** The last contextLength tokens of every sequence, as one [B, T] batch. */
  private window(seqs: number[][]): { ids: Int32Array; T: number } {
    const len = seqs[0].length;
    const T = Math.min(len, this.model.config.contextLength);
    const ids = new Int32Array(this.B * T);
    seqs.forEach((s, b) => ids.set(s.slice(len - T), b * T));
    return { ids, T };
  }

  /** Without a cache: the full forward over the last contextLength tokens. */
  private recompute(seqs: number[][]): Float32Array {
    const { ids, T } = this.window(seqs);
    this.model.forward(ids, this.B, T);
    return lastPositionRows(this.model.logits().toFloat32Array(), this.B, T, this.model.config.vocabSize);
  }

  dispose(): void {
    this.cache?.dispose();
  }
}

/**
 * Yields each new token as it is produced. `prompts` are token-id sequences of
 * equal length (a batch shares one forward pass per token).
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
  if (prompts.some((p) => p.length !== prompts[0].length))
    throw new Error('streamBatch: prompts of a batch must have the same length (generate() handles mixed lengths)');
  const B = prompts.length;
  const V = model.config.vocabSize;
  const seqs = prompts.map((p) => Array.from(p));
  const done = new Array<boolean>(B).fill(false);
  const rng = new Rng(options.seed ?? 123);
  const source = new LogitSource(model, B, options.useCache ?? true);
  try {
    for (let step = 0; step < maxNew; step++) {
      options.signal?.throwIfAborted();
      const logits = await source.nextAsync(seqs, step > 0);
      for (let b = 0; b < B; b++) {
        const token = done[b] ? (options.eosId ?? 0) : nextToken(logits.subarray(b * V, (b + 1) * V), options, rng);
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
 * (an array of prompts) returns one array per prompt; prompts of different
 * lengths run one after another.
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
  // Check every prompt up front: a mixed-length batch runs group by group, and
  // a bad later prompt must not fail after the earlier ones were computed.
  validateSampling(options);
  prompts.forEach((p) => checkPrompt(model, p));
  const out = prompts.map((p) => Array.from(p));
  const sameLength = prompts.every((p) => p.length === prompts[0].length);
  const groups = sameLength ? [prompts.map((_, i) => i)] : prompts.map((_, i) => [i]);
  for (const group of groups) {
    for await (const t of streamBatch(model, group.map((i) => prompts[i]), options)) out[group[t.sequence]].push(t.token);
  }
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
