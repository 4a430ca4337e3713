// Generation throughput: batch 1, a GPT-2 small sized model (124M parameters:
// vocab 50257, context 1024, 768 wide, 12 heads, 12 layers, QKV bias, tied
// head; random weights), greedy, after a 20-token prompt, through the public
// streaming API, with the KV cache and without (every token recomputes the
// whole sequence, so fewer tokens are measured there and compared per token).
import { PRESETS, type GPTConfig } from '../model/config.js';
import { stream } from '../generate/generate.js';
import { GPTModel } from '../model/gpt.js';
import { Rng } from '../tensor/rng.js';
import type { Device } from '../tensor/tensor.js';
import { now } from './util.js';

export interface GenerationRun {
  useCache: boolean;
  promptTokens: number;
  newTokens: number;
  /** Prompt processing + the first new token (seconds). */
  firstTokenS: number;
  totalS: number;
  /** New tokens / total time, first token included. */
  tokensPerSecond: number;
  /** Tokens after the first / their time: the steady decode rate. */
  decodeTokensPerSecond: number;
}

export interface GenerationResult {
  config: GPTConfig;
  parameters: number;
  cached: GenerationRun;
  uncached: GenerationRun;
  /** decodeTokensPerSecond with the cache / without. */
  speedup: number;
}

async function run(model: GPTModel, prompt: number[], maxNewTokens: number, useCache: boolean): Promise<GenerationRun> {
  const t0 = now();
  let first = NaN, count = 0;
  for await (const _ of stream(model, prompt, { maxNewTokens, useCache, temperature: 0 })) {
    if (count++ === 0) first = now() - t0;
  }
  const total = now() - t0;
  return {
    useCache,
    promptTokens: prompt.length,
    newTokens: count,
    firstTokenS: first,
    totalS: total,
    tokensPerSecond: count / total,
    decodeTokensPerSecond: (count - 1) / (total - first),
  };
}

export async function benchGenerate(device: Device, cachedTokens = 200, uncachedTokens = 30, promptTokens = 20): Promise<GenerationResult> {
  const config: GPTConfig = { ...PRESETS['gpt2-small']!, qkvBias: true, tieWeights: true, dropRate: 0 };
  const model = new GPTModel(config, { seed: 123, device });
  try {
    const rng = new Rng(11);
    const prompt = Array.from({ length: promptTokens }, () => rng.int(config.vocabSize));
    await run(model, prompt, 3, true); // warmup: activation buffers for [1, 20] and [1, 1]
    await run(model, prompt, 2, false);
    const cached = await run(model, prompt, cachedTokens, true);
    const uncached = await run(model, prompt, uncachedTokens, false);
    return {
      config,
      parameters: model.numParameters,
      cached,
      uncached,
      speedup: cached.decodeTokensPerSecond / uncached.decodeTokensPerSecond,
    };
  } finally {
    model.dispose();
  }
}
