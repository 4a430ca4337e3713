// The CUDA backend's failure paths: problems found on the GPU (a token id or a
// target out of range, seen only by the kernels) and out-of-memory become JS
// errors that say what was wrong, never an abort, and the device stays usable.
// Also runs the GPU benchmark of `npm run gpu-check` on tiny models, so its
// code is exercised before a GPU session depends on it.
// Skipped, with the reason, where CUDA is unavailable; the cuda-emulated
// projects run it against the CUDA code on the CPU.
import { afterEach, describe, expect, it } from 'vitest';

import { GPTModel } from '../ts/model/gpt.js';
import { native } from '../ts/tensor/native.js';
import * as ops from '../ts/tensor/ops.js';
import { Tensor } from '../ts/tensor/tensor.js';

const cuda = native().backends().cuda;
if (!cuda.available) console.warn(`CUDA error-path tests skipped: ${cuda.reason}`);

const live: Tensor[] = [];
const t = (x: Tensor) => (live.push(x), x);
afterEach(() => {
  for (const x of live.splice(0)) if (!x.disposed) x.dispose();
});
const dev = { device: 'cuda' as const };

describe.skipIf(!cuda.available)('CUDA errors', () => {
  it('a token id out of range is reported when the host next waits, then the device works again', () => {
    const ids = t(Tensor.from(Int32Array.of(1, 999), [1, 2], dev));
    const wte = t(Tensor.zeros([10, 4], dev)), wpe = t(Tensor.zeros([4, 4], dev));
    const out = t(Tensor.zeros([1, 2, 4], dev));
    ops.embeddingForward(out, ids, wte, wpe);
    expect(() => out.toFloat32Array()).toThrow(/token id 999 out of range \[0, 10\)/);
    // The record is cleared: the next valid op and read succeed.
    ids.write(Int32Array.of(1, 2));
    ops.embeddingForward(out, ids, wte, wpe);
    expect(Array.from(out.toFloat32Array())).toEqual(new Array(8).fill(0));
  });

  it('tensors on different devices are refused, naming the devices', () => {
    const a = t(Tensor.from(Float32Array.of(1, 2), [2])), b = t(Tensor.from(Float32Array.of(1, 2), [2], dev));
    expect(() => ops.add(a, a, b)).toThrow(/add:.*same device/);
  });

  it('a target out of range in the classifier is reported, and ignore_index rows are not', () => {
    const logits = t(Tensor.from(new Float32Array(3 * 5).fill(0.5), [3, 5], dev));
    const losses = t(Tensor.zeros([3], dev));
    const targets = t(Tensor.from(Int32Array.of(0, ops.IGNORE_INDEX, 4), [3], dev));
    ops.crossentropyForward(losses, logits, targets);
    expect(Array.from(losses.toFloat32Array()).map((x) => +x.toFixed(5))).toEqual([+Math.log(5).toFixed(5), 0, +Math.log(5).toFixed(5)]);
    targets.write(Int32Array.of(0, 7, 1));
    ops.crossentropyForward(losses, logits, targets);
    expect(() => losses.toFloat32Array()).toThrow(/target 7 out of range \[0, 5\)/);
  });

  it('out of memory says how much was asked for and how much is free', () => {
    const before = native().deviceInfo('cuda').memoryInUse;
    // 2^40 bytes: more than any GPU has.
    expect(() => Tensor.zeros([1 << 20, 1 << 18], dev)).toThrow(/out of memory allocating 1024\.00 GiB \(free [\d.]+ GiB of [\d.]+ GiB/);
    expect(native().deviceInfo('cuda').memoryInUse).toBe(before);
    t(Tensor.zeros([1000], dev)).toFloat32Array(); // still usable
  });

  it('a bad token in a training batch becomes an Error from forward, not a crash', () => {
    const m = new GPTModel({ vocabSize: 50, contextLength: 8, embDim: 16, nHeads: 2, nLayers: 1, dropRate: 0, qkvBias: false, tieWeights: false }, { seed: 1, device: 'cuda' });
    try {
      const ids = Int32Array.from({ length: 8 }, (_, i) => i);
      ids[3] = 50;
      expect(() => m.forward(ids, 1, 8, ids, { training: true, grad: true })).toThrow(/out of range/);
      const ok = Int32Array.from({ length: 8 }, (_, i) => i);
      expect(Number.isFinite(m.forward(ok, 1, 8, ok, { training: false, grad: false }))).toBe(true);
    } finally {
      m.dispose();
    }
  });
});

describe.skipIf(!cuda.available)('npm run gpu-check benchmark (smoke: tiny models)', () => {
  it('runs every benchmark and prints the table', async () => {
    const { runGpuBenchmark } = await import('../ts/bench/gpu.js');
    const lines: string[] = [];
    expect(await runGpuBenchmark({ smoke: true, log: (l) => lines.push(l) })).toBe(true);
    const rows = lines.filter((l) => /^\| (tiny|generation)/.test(l));
    // training and generation, each in fp32 and bf16 (the CUDA backend runs both)
    expect(rows, lines.join('\n')).toHaveLength(4);
    const json = JSON.parse(lines.at(-1)!);
    expect(json.failed, lines.join('\n')).toEqual([]);
    expect(json.train.map((r: { dtype: string }) => r.dtype)).toEqual(['fp32', 'bf16']);
    for (const r of json.train) {
      expect(r.tokensPerS).toBeGreaterThan(0);
      expect(r.peakGiB).toBeGreaterThan(0);
    }
    expect(json.generation_tokens_per_s).toBeGreaterThan(0);
    expect(json.generation_bf16_tokens_per_s).toBeGreaterThan(0);
  });
});
