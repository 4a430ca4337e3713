// The whole model on both backends: the same weights and batch give the same
// loss and gradients (within TF32 tolerance), and 10 training steps follow the
// same loss curve. Skips, with the reason, where there is no usable GPU.
import { describe, expect, test } from 'vitest';
import { GPTModel } from '../ts/model/gpt.js';
import { native } from '../ts/tensor/native.js';
import { AdamW } from '../ts/train/optimizer.js';

const cuda = native().backends().cuda;
if (!cuda.available) console.warn(`CUDA model tests skipped: ${cuda.reason}`);

const config = { vocabSize: 503, contextLength: 64, embDim: 96, nHeads: 6, nLayers: 3, dropRate: 0.1, qkvBias: true, tieWeights: false };

function batch(B: number, T: number, seed: number) {
  let s = seed;
  const next = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % config.vocabSize);
  return { ids: Int32Array.from({ length: B * T }, next), targets: Int32Array.from({ length: B * T }, next) };
}

/** ||a - b|| / max(||b||, floor): the floor is for tensors whose exact value is 0. */
function relErr(a: Float32Array, b: Float32Array, floor = 1e-30): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), floor);
}
const norm = (a: Float32Array) => Math.sqrt(a.reduce((s, x) => s + x * x, 0));

describe.skipIf(!cuda.available)('CUDA vs CPU: whole model', () => {
  test('same loss and gradients for the same weights and batch (dropout on)', () => {
    const cpu = new GPTModel(config, { seed: 11, device: 'cpu' });
    const gpu = new GPTModel(config, { seed: 11, device: 'cuda' });
    const { ids, targets } = batch(4, 64, 1);
    cpu.zeroGrad();
    gpu.zeroGrad();
    const lc = cpu.forward(ids, 4, 64, targets, { training: true, grad: true });
    const lg = gpu.forward(ids, 4, 64, targets, { training: true, grad: true });
    cpu.backward();
    gpu.backward();
    expect(Math.abs(lc - lg) / lc).toBeLessThan(2e-3);
    // The key bias's exact gradient is 0 (adding a constant to every score of a
    // row leaves the softmax unchanged), so its computed gradient is rounding
    // noise on both sides: each tensor is compared relative to its own norm, or
    // to 1e-4 of the whole gradient's norm where that is larger.
    const grads = cpu.namedParameters().map((p) => ({ name: p.name, cpu: p.grad.toFloat32Array(), gpu: gpu.params.get(p.name).grad.toFloat32Array() }));
    const total = Math.hypot(...grads.map((g) => norm(g.cpu)));
    for (const g of grads) expect(relErr(g.gpu, g.cpu, 1e-4 * total), g.name).toBeLessThan(5e-3);
    cpu.dispose();
    gpu.dispose();
  });

  test('10 training steps give matching loss curves', () => {
    const run = (device: 'cpu' | 'cuda') => {
      const m = new GPTModel(config, { seed: 5, device });
      const opt = new AdamW(m.params, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 });
      const losses: number[] = [];
      for (let s = 0; s < 10; s++) {
        const { ids, targets } = batch(2, 64, 100 + s);
        m.zeroGrad();
        losses.push(m.forward(ids, 2, 64, targets, { training: true, grad: true }));
        m.backward();
        opt.clipGradNorm(1.0);
        opt.update();
      }
      m.dispose();
      opt.dispose();
      return losses;
    };
    const a = run('cpu'), b = run('cuda');
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i]) / a[i], `step ${i}`).toBeLessThan(5e-3);
  });

  test('KV-cache decoding gives the same logits on both devices', () => {
    const cpu = new GPTModel(config, { seed: 3, device: 'cpu' });
    const gpu = new GPTModel(config, { seed: 3, device: 'cuda' });
    const cc = cpu.createKVCache(1), gc = gpu.createKVCache(1);
    const prompt = Int32Array.of(1, 2, 3, 4);
    expect(relErr(gpu.forwardCached(prompt, 1, 4, 0, gc), cpu.forwardCached(prompt, 1, 4, 0, cc))).toBeLessThan(5e-3);
    for (let pos = 4; pos < 30; pos++) {
      const tok = Int32Array.of((pos * 37) % config.vocabSize);
      expect(relErr(gpu.forwardCached(tok, 1, 1, pos, gc), cpu.forwardCached(tok, 1, 1, pos, cc)), `position ${pos}`).toBeLessThan(5e-3);
    }
    cc.dispose();
    gc.dispose();
    cpu.dispose();
    gpu.dispose();
  });
});
