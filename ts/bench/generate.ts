// Generation throughput on a GPT-2 small sized model (124M parameters: vocab
// 50257, context 1024, 768 wide, 12 heads, 12 layers, QKV bias, tied head;
// random weights), greedy, after a 20-token prompt, through the public
// streaming API: batch 1 and batch 8 with the KV cache, batch 1 without (every
// token recomputes the whole sequence, so fewer tokens are measured there and
// compared per token), and batch 1 and 8 again with the weights in bf16. Each cached rate is set against the memory bound: the
// bytes of weights and KV cache one decode step reads, over the machine's
// measured read bandwidth.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRESETS, type GPTConfig } from '../model/config.js';
import { exportHuggingFace } from '../weights/export.js';
import { streamBatch } from '../generate/generate.js';
import { GPTModel } from '../model/gpt.js';
import { Rng } from '../tensor/rng.js';
import { argmax } from '../generate/sampling.js';
import { native } from '../tensor/native.js';
import * as ops from '../tensor/ops.js';
import { Tensor, type Device } from '../tensor/tensor.js';
import { median, now, timeIt, type TimeOptions } from './util.js';

export const GEN_CONFIG: GPTConfig = { ...PRESETS['gpt2-small']!, qkvBias: true, tieWeights: true, dropRate: 0 };

export interface GenerationRun {
  batch: number;
  useCache: boolean;
  promptTokens: number;
  /** New tokens over all rows. */
  newTokens: number;
  /** Prompt processing + the first new token of every row (seconds). */
  firstTokenS: number;
  totalS: number;
  /** New tokens / total time, first token included. */
  tokensPerSecond: number;
  /** Tokens after each row's first / their time: the steady decode rate. */
  decodeTokensPerSecond: number;
  /** Decode tokens/s a step that only reads its weights and cache at the measured bandwidth would reach (cached runs). */
  boundTokensPerSecond: number;
  /** decodeTokensPerSecond / boundTokensPerSecond. */
  fractionOfBound: number;
  /** Each prompt followed by its new tokens. */
  ids: number[][];
}

export interface GenerationResult {
  config: GPTConfig;
  parameters: number;
  bandwidthGBs: number;
  cached: GenerationRun;
  batched: GenerationRun;
  uncached: GenerationRun;
  /** decodeTokensPerSecond with the cache / without. */
  speedup: number;
  /** Batched decode tokens/s over batch-1 decode tokens/s. */
  batchSpeedup: number;
  /** The same weights rounded to bf16 (half the bytes per token): batch 1 and batch B with the cache. */
  bf16: {
    cached: GenerationRun;
    batched: GenerationRun;
    /** bf16 decode tokens/s over fp32's, at batch 1 and batch B. */
    speedup: number;
    batchedSpeedup: number;
    /** Fraction of the batch-1 greedy tokens equal to fp32's (rounding the weights may flip a near tie). */
    idsAgreement: number;
  };
  profile: DecodeProfile;
}

/**
 * Bytes one decode step of `batch` rows reads: every matrix-product weight and
 * bias once, each row's cache up to `position`; `bytesPerValue` 4 for fp32, 2 for bf16.
 */
export function decodeBytes(c: GPTConfig, batch: number, position: number, bytesPerValue = 4): { weights: number; cache: number } {
  const C = c.embDim, F = bytesPerValue;
  const perLayer = 3 * C * C + 3 * C + C * C + C + 4 * C * C + 4 * C + 4 * C * C + C;
  return { weights: F * (c.nLayers * perLayer + c.vocabSize * C), cache: F * batch * 2 * c.nLayers * (position + 1) * C };
}

async function run(model: GPTModel, prompts: number[][], maxNewTokens: number, useCache: boolean, bandwidthGBs: number): Promise<GenerationRun> {
  const B = prompts.length;
  const ids = prompts.map((p) => [...p]);
  const t0 = now();
  let first = NaN, count = 0;
  for await (const t of streamBatch(model, prompts, { maxNewTokens, useCache, temperature: 0 })) {
    ids[t.sequence]!.push(t.token);
    if (++count === B) first = now() - t0;
  }
  const total = now() - t0;
  const decode = (count - B) / (total - first);
  // The cache grows during the run: its mean length sets the mean bytes per step.
  const bytes = decodeBytes(model.config, B, prompts[0]!.length + maxNewTokens / 2, model.dtype === 'bf16' ? 2 : 4);
  const bound = useCache ? (B * bandwidthGBs * 1e9) / (bytes.weights + bytes.cache) : NaN;
  return {
    batch: B, useCache, promptTokens: prompts[0]!.length, newTokens: count, firstTokenS: first, totalS: total,
    tokensPerSecond: count / total, decodeTokensPerSecond: decode, boundTokensPerSecond: bound, fractionOfBound: decode / bound, ids,
  };
}

/** The bench's prompts: `batch` rows of `length` token ids from a fixed seed (scripts/bench_torch.py draws the same). */
export function benchPrompts(batch: number, length: number, vocab: number): number[][] {
  const rng = new Rng(11);
  return Array.from({ length: batch }, () => Array.from({ length }, () => rng.int(vocab)));
}

/**
 * With `exportDir`, the random model is also written there for Hugging Face
 * (model.safetensors + config.json) with ids.json: the prompts and our greedy
 * ids, which scripts/bench_torch.py --only generate reproduces and compares.
 */
export async function benchGenerate(
  device: Device, cachedTokens = 200, uncachedTokens = 30, promptTokens = 20, batch = 8, timing: TimeOptions = {},
  exportDir?: string,
): Promise<GenerationResult> {
  const config = GEN_CONFIG;
  const profile = await profileDecode(device, promptTokens + Math.floor(cachedTokens / 2), timing);
  const bandwidthGBs = profile.bandwidthGBs;
  const model = new GPTModel(config, { seed: 123, device });
  try {
    const prompts = benchPrompts(batch, promptTokens, config.vocabSize);
    const one = prompts.slice(0, 1);
    await run(model, one, 3, true, bandwidthGBs); // warmup: activation buffers for [1, 20] and [1, 1]
    await run(model, prompts, 3, true, bandwidthGBs);
    await run(model, one, 2, false, bandwidthGBs);
    const cached = await run(model, one, cachedTokens, true, bandwidthGBs);
    const batched = await run(model, prompts, cachedTokens, true, bandwidthGBs);
    const uncached = await run(model, one, uncachedTokens, false, bandwidthGBs);
    const bf16 = await bf16Runs(model, prompts, cachedTokens, bandwidthGBs, cached, batched);
    if (exportDir) {
      await exportHuggingFace(model, exportDir);
      const record = { prompts, new_tokens: cachedTokens, batch1: cached.ids, batched: batched.ids };
      writeFileSync(join(exportDir, 'ids.json'), JSON.stringify(record));
    }
    return {
      config, parameters: model.numParameters, bandwidthGBs, cached, batched, uncached, profile,
      speedup: cached.decodeTokensPerSecond / uncached.decodeTokensPerSecond,
      batchSpeedup: batched.decodeTokensPerSecond / cached.decodeTokensPerSecond,
      bf16,
    };
  } finally {
    model.dispose();
  }
}

/** The fp32 model's weights rounded to bf16 (inference only: no master copy), run as the fp32 ones were. */
async function bf16Runs(fp32: GPTModel, prompts: number[][], tokens: number, bandwidthGBs: number, cached: GenerationRun, batched: GenerationRun): Promise<GenerationResult['bf16']> {
  const model = new GPTModel(fp32.config, { device: fp32.device, dtype: 'bf16', masterWeights: false, skipInit: true });
  try {
    model.params.writeAll(fp32.params.readAll());
    const one = prompts.slice(0, 1);
    await run(model, one, 3, true, bandwidthGBs);
    await run(model, prompts, 3, true, bandwidthGBs);
    const c16 = await run(model, one, tokens, true, bandwidthGBs);
    const b16 = await run(model, prompts, tokens, true, bandwidthGBs);
    const a = cached.ids[0]!, b = c16.ids[0]!;
    let same = 0;
    for (let i = one[0]!.length; i < a.length; i++) if (a[i] === b[i]) same++;
    return {
      cached: c16, batched: b16,
      speedup: c16.decodeTokensPerSecond / cached.decodeTokensPerSecond,
      batchedSpeedup: b16.decodeTokensPerSecond / batched.decodeTokensPerSecond,
      idsAgreement: same / (a.length - one[0]!.length),
    };
  } finally {
    model.dispose();
  }
}

// ---- where a decode step's time goes -----------------------------------------------------

export interface DecodePart {
  name: string;
  /** Milliseconds per token (all layers). */
  ms: number;
  /** Bytes this part reads per token (weights, or the KV cache for attention). */
  bytes: number;
}

export interface DecodeProfile {
  config: GPTConfig;
  /** Cache positions each step attends over. */
  position: number;
  /** Best of a few parallel read passes over 512 MB, GB/s. */
  bandwidthGBs: number;
  /** Weights and KV cache read by one decode step. */
  weightBytes: number;
  cacheBytes: number;
  /** bandwidth / bytes per token: the rate a decoder that only reads memory would reach. */
  boundTokensPerSecond: number;
  /** Each op kind alone, run over every layer's own buffers, synchronously. */
  parts: DecodePart[];
  /** The same matrix products (without bias) through ops.gemm, the packing GEMM path matmulForward took before. */
  gemmPathMs: number;
  /** One whole decode step through forwardCached (ops run one by one on this thread). */
  syncStepMs: number;
  /** The same step through forwardCachedAsync (recorded, replayed on a worker thread). */
  asyncStepMs: number;
}

/**
 * Times each op kind of a batch-1 decode step at `position` on the shapes of
 * `config` (every layer has its own weights, so nothing stays in the caches
 * between layers, as in a real step), then a whole step synchronously and
 * through the recording/worker path: the step minus its parts is the per-op
 * overhead of issuing ops from JS, async minus sync that of the recording.
 */
export async function profileDecode(device: Device, position = 120, timing: TimeOptions = {}): Promise<DecodeProfile> {
  const config = GEN_CONFIG;
  const C = config.embDim, L = config.nLayers, V = config.vocabSize, NH = config.nHeads, ctx = config.contextLength;
  const owned: Tensor[] = [];
  const t = (shape: number[]) => {
    const x = Tensor.zeros(shape, { device });
    owned.push(x);
    return x;
  };
  const F = 4;
  const bandwidthGBs = native().readBandwidth(512, 5);
  try {
    const x = t([1, 1, C]), y = t([1, 1, C]), res = t([1, 1, C]), branch = t([1, 1, C]), x4 = t([1, 1, 4 * C]), y4 = t([1, 1, 4 * C]), qkv = t([1, 1, 3 * C]), mean = t([1]), rstd = t([1]), logits = t([1, 1, V]);
    const layers = Array.from({ length: L }, () => ({
      qkvW: t([3 * C, C]), qkvB: t([3 * C]), projW: t([C, C]), projB: t([C]),
      fcW: t([4 * C, C]), fcB: t([4 * C]), fc2W: t([C, 4 * C]), fc2B: t([C]),
      k: t([1, NH, ctx, C / NH]), v: t([1, NH, ctx, C / NH]), lnW: t([C]), lnB: t([C]),
    }));
    const head = t([V, C]), wpe = t([ctx, C]);
    const ids = Tensor.zeros([1, 1], { dtype: 'int32', device });
    owned.push(ids);
    for (const w of [head, ...layers.flatMap((l) => [l.qkvW, l.projW, l.fcW, l.fc2W, l.k, l.v])]) ops.fillNormal(w, 0, 0.02, { seed: 1, stream: 0 });
    const ms = (fn: () => void) => timeIt(fn, device, timing).median * 1e3;
    const perLayer = (fn: (l: (typeof layers)[number]) => void) => () => layers.forEach(fn);
    const mm = (K: number, N: number) => F * (K * N + N) * L;
    const { weights: weightBytes, cache: cacheBytes } = decodeBytes(config, 1, position);
    const scores = new Float32Array(V).map((_, i) => Math.sin(i));
    const parts: DecodePart[] = [
      { name: 'matmul qkv', ms: ms(perLayer((l) => ops.matmulForward(qkv, x, l.qkvW, l.qkvB))), bytes: mm(C, 3 * C) },
      { name: 'matmul attn proj', ms: ms(perLayer((l) => ops.matmulForward(y, x, l.projW, l.projB))), bytes: mm(C, C) },
      { name: 'matmul fc', ms: ms(perLayer((l) => ops.matmulForward(x4, x, l.fcW, l.fcB))), bytes: mm(C, 4 * C) },
      { name: 'matmul fc proj', ms: ms(perLayer((l) => ops.matmulForward(y, x4, l.fc2W, l.fc2B))), bytes: mm(4 * C, C) },
      { name: `LM head (${V} wide)`, ms: ms(() => ops.matmulForward(logits, x, head, null)), bytes: F * V * C },
      { name: `attention over ${position + 1} cached`, ms: ms(perLayer((l) => ops.attentionDecode(y, l.k, l.v, qkv, position))), bytes: cacheBytes },
      // as the step runs them: block 0's norm1 alone, the other 24 fused with the residual add before them
      { name: 'residual add + layernorm x25', ms: ms(() => { ops.layernormForward(y, mean, rstd, x, layers[0]!.lnW, layers[0]!.lnB); perLayer((l) => { ops.residualLayernormForward(res, y, mean, rstd, x, branch, l.lnW, l.lnB); ops.residualLayernormForward(res, y, mean, rstd, x, branch, l.lnW, l.lnB); })(); }), bytes: 0 },
      { name: 'gelu x12', ms: ms(perLayer(() => ops.geluForward(y4, x4))), bytes: 0 },
      { name: 'embedding', ms: ms(() => ops.embeddingForward(y, ids, head, wpe, position)), bytes: 0 },
      { name: 'greedy argmax (JS)', ms: ms(() => void argmax(scores)), bytes: 0 },
    ];
    const gemmPathMs = ms(() => {
      perLayer((l) => {
        ops.gemm(qkv.view(0, [1, 3 * C]), x.view(0, [1, C]), l.qkvW, false, true);
        ops.gemm(y.view(0, [1, C]), x.view(0, [1, C]), l.projW, false, true);
        ops.gemm(x4.view(0, [1, 4 * C]), x.view(0, [1, C]), l.fcW, false, true);
        ops.gemm(y.view(0, [1, C]), x4.view(0, [1, 4 * C]), l.fc2W, false, true);
      })();
      ops.gemm(logits.view(0, [1, V]), x.view(0, [1, C]), head, false, true);
    });
    for (const x of owned.splice(0)) x.dispose();

    // The whole step, on a real model with `position` tokens cached.
    const model = new GPTModel(config, { seed: 123, device });
    const cache = model.createKVCache(1);
    try {
      const prompt = Int32Array.from({ length: position }, (_, i) => (i * 7919) % V);
      model.forwardCached(prompt, 1, position, 0, cache);
      const one = Int32Array.of(11);
      // Each repetition rewrites the same cache slot, so the step always reads position + 1 entries.
      const syncStepMs = ms(() => void model.forwardCached(one, 1, 1, position, cache));
      const times: number[] = [];
      await model.forwardCachedAsync(one, 1, 1, position, cache);
      for (let i = 0; i < Math.max(5, timing.minReps ?? 3); i++) {
        const t0 = now();
        await model.forwardCachedAsync(one, 1, 1, position, cache);
        times.push(now() - t0);
      }
      const asyncStepMs = median(times) * 1e3;
      return {
        config, position, bandwidthGBs, weightBytes, cacheBytes,
        boundTokensPerSecond: (bandwidthGBs * 1e9) / (weightBytes + cacheBytes),
        parts, gemmPathMs, syncStepMs, asyncStepMs,
      };
    } finally {
      cache.dispose();
      model.dispose();
    }
  } finally {
    for (const x of owned) x.dispose();
  }
}
