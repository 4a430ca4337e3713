// GPU benchmark for `npm run gpu-check`: training tokens/s and peak memory for
// GPT-2 124M (context 1024, batch 8 and 16) in fp32/TF32 and bf16, and the
// book's model (context 256, batch 2); batch-1 generation with the KV cache in
// both precisions; the fraction of the GPU's matmul peak the training step
// reaches. A precision the build cannot run yet is reported, not fatal.
// `--bf16-only` runs just the bf16 batch-16 row (gpu-check runs it again with
// GPTCUDA_GELU_FUSION=0 to show what the GELU epilogues are worth).
import { BOOK_CONFIG, PRESETS, type GPTConfig } from '../model/config.js';
import { generate } from '../generate/generate.js';
import { GPTModel } from '../model/gpt.js';
import { native } from '../tensor/native.js';
import type { Precision } from '../tensor/tensor.js';
import { AdamW, BOOK_ADAMW } from '../train/optimizer.js';

/** Dense TF32 tensor-core peak (TFLOP/s) by GPU name, for the utilisation column. */
const TF32_PEAK: [RegExp, number][] = [
  [/H200/, 494.7],
  [/H100.*(SXM|HBM3)/, 494.7],
  [/H100/, 378],
  [/A100/, 156],
  [/L40S/, 183],
  [/A10\b/, 62.5],
];

function randomTokens(n: number, V: number, seed: number): Int32Array {
  let s = seed >>> 0;
  return Int32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % V));
}

interface TrainResult {
  name: string;
  dtype: Precision;
  B: number;
  T: number;
  tokensPerS: number;
  peakGiB: number;
  tflops: number;
}

/** A benchmark row that could not run (a precision this build does not support yet): the first line of why. */
interface FailedRow {
  name: string;
  dtype: Precision;
  B: number;
  T: number;
  error: string;
}

function attempt<R>(row: Omit<FailedRow, 'error'>, f: () => R): R | FailedRow {
  try {
    return f();
  } catch (err) {
    return { ...row, error: (err as Error).message.split('\n')[0]! };
  }
}

function trainBench(name: string, config: GPTConfig, B: number, T: number, steps: number, dtype: Precision): TrainResult {
  const addon = native();
  const model = new GPTModel(config, { seed: 1, device: 'cuda', dtype });
  const opt = new AdamW(model.params, BOOK_ADAMW, 1);
  addon.resetPeakMemory('cuda');
  const ids = randomTokens(B * T, config.vocabSize, 1), targets = randomTokens(B * T, config.vocabSize, 2);
  const step = () => {
    model.zeroGrad();
    model.forward(ids, B, T, targets, { training: true, grad: true });
    model.backward();
    opt.update();
  };
  step();
  step();
  addon.synchronize('cuda');
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step();
  addon.synchronize('cuda');
  const seconds = (performance.now() - t0) / 1000;
  const tokensPerS = (B * T * steps) / seconds;
  // FLOPs per token: 6 x parameters (matmuls, forward + backward) + attention's 6 x layers x context x width.
  const flopsPerToken = 6 * model.numParameters + 6 * config.nLayers * T * config.embDim;
  const peakGiB = addon.deviceInfo('cuda').peakMemory / 2 ** 30;
  model.dispose();
  opt.dispose();
  return { name, dtype, B, T, tokensPerS, peakGiB, tflops: (tokensPerS * flopsPerToken) / 1e12 };
}

async function generationBench(config: GPTConfig, newTokens: number, dtype: Precision): Promise<number | string> {
  let model: GPTModel | null = null;
  try {
    model = new GPTModel(config, { seed: 1, device: 'cuda', dtype, masterWeights: false });
    const prompt = Array.from(randomTokens(20, config.vocabSize, 3));
    await generate(model, prompt, { maxNewTokens: 10 });
    const t0 = performance.now();
    await generate(model, prompt, { maxNewTokens: newTokens });
    return newTokens / ((performance.now() - t0) / 1000);
  } catch (err) {
    return (err as Error).message.split('\n')[0]!;
  } finally {
    model?.dispose();
  }
}

export interface GpuBenchmarkOptions {
  /** Tiny models and a few steps: checks the benchmark itself (e.g. on the emulated backend). */
  smoke?: boolean;
  /**
   * Only the bf16 training row of batch 16 (smoke: the tiny one), for a run
   * with GPTCUDA_GELU_FUSION=0: what the GELU epilogues save.
   */
  bf16Only?: boolean;
  log?: (line: string) => void;
}

/** Runs the benchmarks and prints the table; returns false when CUDA is unavailable. */
export async function runGpuBenchmark({ smoke = false, bf16Only = false, log = console.log }: GpuBenchmarkOptions = {}): Promise<boolean> {
  const cuda = native().backends().cuda;
  if (!cuda.available) {
    log(`GPU benchmark skipped: ${cuda.reason}`);
    return false;
  }
  const gpu = native().deviceInfo('cuda');
  const peak = TF32_PEAK.find(([re]) => re.test(gpu.name))?.[1];
  const tiny: GPTConfig = { ...BOOK_CONFIG, vocabSize: 503, contextLength: 32, embDim: 64, nHeads: 2, nLayers: 2 };
  const bf16Row: [string, GPTConfig, number, number, number, Precision] = smoke ? ['tiny', tiny, 2, 32, 2, 'bf16'] : ['gpt2-124M', PRESETS['gpt2-small'], 16, 1024, 10, 'bf16'];
  const runs: [string, GPTConfig, number, number, number, Precision][] = bf16Only
    ? [bf16Row]
    : smoke
    ? [['tiny', tiny, 2, 32, 2, 'fp32'], bf16Row]
    : [
        ['gpt2-124M', PRESETS['gpt2-small'], 8, 1024, 10, 'fp32'],
        ['gpt2-124M', PRESETS['gpt2-small'], 16, 1024, 10, 'fp32'],
        ['gpt2-124M', PRESETS['gpt2-small'], 8, 1024, 10, 'bf16'],
        ['gpt2-124M', PRESETS['gpt2-small'], 16, 1024, 10, 'bf16'],
        ['book (ctx 256)', BOOK_CONFIG, 2, 256, 20, 'fp32'],
      ];
  const rows = runs.map(([name, cfg, B, T, steps, dtype]) => attempt({ name, dtype, B, T }, () => trainBench(name, cfg, B, T, steps, dtype)));
  const results = rows.filter((r): r is TrainResult => !('error' in r));
  const failed = rows.filter((r): r is FailedRow => 'error' in r);
  const newTokens = smoke ? 5 : 200;
  const genConfig = smoke ? tiny : PRESETS['gpt2-small'];
  const gen = bf16Only ? 'not run' : await generationBench(genConfig, newTokens, 'fp32');
  const genBf16 = bf16Only ? 'not run' : await generationBench(genConfig, newTokens, 'bf16');
  const rate = (x: number | string) => (typeof x === 'number' ? Math.round(x).toLocaleString('en-US') : `not run: ${x}`);
  log(`\nGPU: ${gpu.name}, ${(gpu.totalMemory / 2 ** 30).toFixed(1)} GiB, TF32 ${process.env.GPTCUDA_TF32 === '0' ? 'off' : 'on'}`);
  log('| model | dtype | batch x context | tokens/s | peak GPU memory | TFLOP/s | of TF32 peak |');
  log('| --- | --- | --- | ---: | ---: | ---: | ---: |');
  for (const r of results)
    log(`| ${r.name} | ${r.dtype} | ${r.B} x ${r.T} | ${Math.round(r.tokensPerS).toLocaleString('en-US')} | ${r.peakGiB.toFixed(2)} GiB | ${r.tflops.toFixed(1)} | ${peak && r.dtype === 'fp32' ? ((100 * r.tflops) / peak).toFixed(1) + '%' : 'n/a'} |`);
  for (const r of failed) log(`| ${r.name} | ${r.dtype} | ${r.B} x ${r.T} | not run: ${r.error} | | | |`);
  log(`| generation, ${smoke ? 'tiny' : 'gpt2-124M'}, KV cache | fp32 | 1 x ${newTokens} new | ${rate(gen)} | | | |`);
  log(`| generation, ${smoke ? 'tiny' : 'gpt2-124M'}, KV cache | bf16 | 1 x ${newTokens} new | ${rate(genBf16)} | | | |`);
  const num = (x: number | string) => (typeof x === 'number' ? x : null);
  log(JSON.stringify({ gpu: gpu.name, train: results, failed, generation_tokens_per_s: num(gen), generation_bf16_tokens_per_s: num(genBf16) }));
  return true;
}

// `node dist/bench/gpu.js [--smoke]` (npm run gpu-check runs it).
if (process.argv[1] && /gpu\.[jt]s$/.test(process.argv[1])) {
  if (!(await runGpuBenchmark({ smoke: process.argv.includes('--smoke'), bf16Only: process.argv.includes('--bf16-only') }))) process.exitCode = 1;
}
