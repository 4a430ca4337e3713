// bf16 mixed precision on the CPU, end to end (issue 15's first acceptance
// criterion): the whole model's bf16 loss within 1e-2 relative of fp32 on the
// same weights; a 50-step bf16 training run whose loss curve stays within 2%
// of the fp32 run's; a bf16 run resumed from its checkpoint continues bit for
// bit (the bf16 copy comes from the float32 master by seeded stochastic
// rounding, and the checkpoint keeps both); `train --dtype bf16` and
// `generate --dtype bf16` from the command line; `--save-dtype bf16` writes a
// half-size model that loads; bf16 generation against fp32. The ops
// themselves are checked against float64 references by the op table.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readCheckpointArchive } from '../ts/checkpoint/archive.js';
import { loadCheckpoint, saveCheckpoint } from '../ts/checkpoint/checkpoint.js';
import { createLoaders } from '../ts/data/loader.js';
import { loadText } from '../ts/data/text.js';
import { textToTokenIds } from '../ts/data/tokenizer.js';
import { type GPTConfig } from '../ts/model/config.js';
import { GPTModel } from '../ts/index.js';
import { AdamW, BOOK_ADAMW } from '../ts/train/optimizer.js';
import { Trainer, type TrainEvent, type TrainOptions } from '../ts/train/trainer.js';
import { spawnCli } from './helpers/cli.js';

const REPO = resolve(import.meta.dirname, '..');
const TEXT = loadText(join(REPO, 'data', 'the-verdict.txt'));
const CONFIG: GPTConfig = {
  vocabSize: 50257, contextLength: 32, embDim: 64, nHeads: 4, nLayers: 2, dropRate: 0.1, qkvBias: false, tieWeights: false, init: 'gpt2',
};

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-bf16-test-'));
});
afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const relDiff = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

function batch(B: number, T: number, offset = 0): { ids: Int32Array; targets: Int32Array } {
  const tokens = textToTokenIds(TEXT);
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = tokens[offset + b * 97 + t]!;
      targets[b * T + t] = tokens[offset + b * 97 + t + 1]!;
    }
  return { ids, targets };
}

/**
 * An fp32 model trained for 30 steps: at initialisation every logit is near
 * zero and any precision gives a loss of ln(V), so comparisons need weights
 * that say something.
 */
function trainedModel(): GPTModel {
  const model = new GPTModel({ ...CONFIG, dropRate: 0 }, { seed: 7 });
  const opt = new AdamW(model.params, { ...BOOK_ADAMW, lr: 2e-3 });
  try {
    for (let s = 0; s < 30; s++) {
      const { ids, targets } = batch(4, 32, (s % 10) * 400);
      model.zeroGrad();
      model.forward(ids, 4, 32, targets, { grad: true });
      model.backward();
      opt.update();
    }
  } finally {
    opt.dispose();
  }
  return model;
}

let trained: GPTModel;
beforeAll(() => {
  trained = trainedModel();
});
afterAll(() => trained?.dispose());

/** A bf16 twin of `fp32` holding the same float32 values as its master weights. */
function bf16Twin(fp32: GPTModel): GPTModel {
  const twin = new GPTModel(fp32.config, { dtype: 'bf16', skipInit: true, seed: fp32.dropoutSeed });
  twin.params.writeAll(fp32.params.readAll());
  return twin;
}

describe('bf16 model against fp32 on the same weights', () => {
  it('the loss (no dropout) is within 1e-2 relative, and the gradients point the same way', () => {
    const fp32 = trained;
    const bf16 = bf16Twin(fp32);
    try {
      expect(bf16.params.flat.dtype).toBe('bfloat16');
      expect(bf16.params.master!.dtype).toBe('float32');
      const { ids, targets } = batch(2, 32, 5000);
      fp32.zeroGrad();
      const l32 = fp32.forward(ids, 2, 32, targets, { grad: true });
      expect(l32).toBeLessThan(8); // trained: well below ln(50257) = 10.8
      const l16 = bf16.forward(ids, 2, 32, targets, { grad: true });
      expect(Number.isFinite(l16)).toBe(true);
      console.log(`whole-model loss: fp32 ${l32}, bf16 ${l16}, relative difference ${relDiff(l16, l32).toExponential(2)}`);
      expect(relDiff(l16, l32)).toBeLessThan(1e-2);
      fp32.backward();
      bf16.backward();
      const g32 = fp32.params.flatGrad.toFloat32Array(), g16 = bf16.params.flatGrad.toFloat32Array();
      let dot = 0, n32 = 0, n16 = 0;
      for (let i = 0; i < g32.length; i++) {
        dot += g32[i]! * g16[i]!;
        n32 += g32[i]! ** 2;
        n16 += g16[i]! ** 2;
      }
      // cosine similarity of the whole gradient: bf16 storage perturbs it by ~2^-8 per element
      expect(dot / Math.sqrt(n32 * n16)).toBeGreaterThan(0.99);
      expect(relDiff(Math.sqrt(n16), Math.sqrt(n32))).toBeLessThan(2e-2);
    } finally {
      bf16.dispose();
    }
  });

  it('a negative control: the comparison sees an untrained model', () => {
    const b = new GPTModel(CONFIG, { seed: 7, dtype: 'bf16' });
    try {
      const { ids, targets } = batch(2, 32, 5000);
      expect(relDiff(b.forward(ids, 2, 32, targets), trained.forward(ids, 2, 32, targets))).toBeGreaterThan(1e-2);
    } finally {
      b.dispose();
    }
  });
});

describe('bf16 training', () => {
  function run(dtype: 'fp32' | 'bf16', steps: number): number[] {
    const model = new GPTModel(CONFIG, { seed: 11, dtype });
    const opt = new AdamW(model.params, { ...BOOK_ADAMW, lr: 1e-3 }, 11);
    const losses: number[] = [];
    try {
      for (let s = 0; s < steps; s++) {
        const { ids, targets } = batch(4, 32, (s % 10) * 400);
        model.zeroGrad();
        losses.push(model.forward(ids, 4, 32, targets, { training: true, grad: true }));
        model.backward();
        opt.clipGradNorm(1);
        opt.update();
      }
    } finally {
      opt.dispose();
      model.dispose();
    }
    return losses;
  }

  it('50 steps: the loss curve stays within 2% of the fp32 curve, and it learns', () => {
    const l32 = run('fp32', 50), l16 = run('bf16', 50);
    console.log(`bf16 vs fp32 over 50 steps: largest relative loss difference ${Math.max(...l16.map((l, s) => relDiff(l, l32[s]!))).toExponential(2)}; loss ${l16[0]!.toFixed(3)} -> ${l16[49]!.toFixed(3)}`);
    for (let s = 0; s < 50; s++) expect(relDiff(l16[s]!, l32[s]!), `step ${s}: bf16 ${l16[s]} vs fp32 ${l32[s]}`).toBeLessThan(0.02);
    expect(l16[49]!).toBeLessThan(l16[0]! - 1);
  });

  it('the bf16 copy is the master stochastically rounded: each value one of its two bf16 neighbours', () => {
    const model = new GPTModel(CONFIG, { seed: 3, dtype: 'bf16' });
    const opt = new AdamW(model.params, { ...BOOK_ADAMW, lr: 1e-3 }, 5);
    try {
      const { ids, targets } = batch(2, 32);
      model.forward(ids, 2, 32, targets, { grad: true });
      model.backward();
      opt.update();
      const master = model.params.master!.toFloat32Array();
      const bits = new Uint32Array(master.buffer.slice(0));
      const copy = model.params.readStorageBits()!;
      let up = 0, exact = 0, neither = 0;
      for (let i = 0; i < master.length; i++) {
        const down = bits[i]! >>> 16;
        // truncation toward zero in magnitude, or the next bf16 away from zero
        if (copy[i] === down) { if ((bits[i]! & 0xffff) === 0) exact++; }
        else if (copy[i] === down + 1) up++;
        else neither++;
      }
      expect(neither).toBe(0);
      // about half round up (the dropped fraction is uniform-ish): stochastic, not nearest or truncation
      const inexact = master.length - exact;
      expect(up / inexact).toBeGreaterThan(0.3);
      expect(up / inexact).toBeLessThan(0.7);
    } finally {
      opt.dispose();
      model.dispose();
    }
  });

  it('an inference-only bf16 model refuses to be trained, saying how', () => {
    const model = new GPTModel(CONFIG, { seed: 3, dtype: 'bf16', masterWeights: false });
    try {
      expect(() => new AdamW(model.params)).toThrow(/without float32 master weights.*masterWeights: true/);
    } finally {
      model.dispose();
    }
  });

  it("ZeRO-1's part of the master weights: the part's values kept, whole-master reads and writes refused", () => {
    const model = new GPTModel(CONFIG, { seed: 3, dtype: 'bf16' });
    const fp32 = new GPTModel({ ...CONFIG, nLayers: 1 }, { seed: 3 });
    try {
      const p = model.params;
      const all = p.readAll(), bf16Bits = Uint16Array.from(p.readStorageBits()!);
      const [start, length] = [1001, 5003];
      expect(() => p.shardMaster(start, p.numel)).toThrow(/is not a non-empty part of the \d+ parameters/);
      const part = p.shardMaster(start, length);
      expect(p.master).toBe(part);
      expect(p.masterShard).toEqual({ start, length });
      expect(part.toFloat32Array()).toEqual(all.subarray(start, start + length));
      expect(Buffer.from(p.readStorageBits()!.buffer).equals(Buffer.from(bf16Bits.buffer))).toBe(true);
      for (const f of [() => p.readAll(), () => p.writeAll(all), () => p.requireMaster('AdamW'), () => new AdamW(p)])
        expect(f).toThrow(/keeps only its ZeRO-1 part of the float32 master weights; gather them/);
      expect(() => fp32.params.shardMaster(0, 1)).toThrow(/at fp32 the master weights are the parameters themselves/);
    } finally {
      model.dispose();
      fp32.dispose();
    }
  });
});

describe('bf16 checkpoints', () => {
  const options: TrainOptions = {
    epochs: 1, maxSteps: 8, optimizer: { ...BOOK_ADAMW, lr: 1e-3 }, gradAccum: 1, evalFreq: 4, evalIter: 1, samplePrompt: 'Every effort', sampleTokens: 0,
  };
  const loaders = () => createLoaders({ text: TEXT, trainRatio: 0.9, contextLength: 32, stride: 32, batchSize: 2, shuffle: true, seed: 5 });

  async function train(model: GPTModel, opts: TrainOptions, onCheckpoint?: (t: Trainer) => Promise<void>, restore?: Awaited<ReturnType<typeof loadCheckpoint>>) {
    const l = loaders();
    const trainer = new Trainer(model, l.train, l.val, opts);
    if (restore) {
      trainer.optimizer.m.write(restore.optimizer!.m);
      trainer.optimizer.v.write(restore.optimizer!.v);
      trainer.restore(restore.trainState!, restore.optimizer!.step);
    }
    const losses: number[] = [];
    await trainer.run({ onEvent: (e: TrainEvent) => e.event === 'step' && losses.push(e.loss), onCheckpoint: onCheckpoint ? (t) => onCheckpoint(t) : undefined, saveEvery: 4 });
    return { trainer, losses };
  }

  it('a run resumed from step 4 of 8 continues bit for bit (losses, bf16 parameters, master weights)', async () => {
    const path = join(root, 'step4.tar');
    const full = new GPTModel(CONFIG, { seed: 21, dtype: 'bf16' });
    const { trainer: t1, losses: all } = await train(full, options, async (t) => {
      if (t.state.step === 4)
        await saveCheckpoint(path, { model: full, optimizer: { step: t.optimizer.step, m: t.optimizer.m.toFloat32Array(), v: t.optimizer.v.toFloat32Array(), hyper: options.optimizer }, train: { state: t.state, options, seed: 21, loaderConfig: {} } });
    });
    const loaded = await loadCheckpoint(path);
    expect(loaded.model.dtype).toBe('bf16');
    const { trainer: t2, losses: rest } = await train(loaded.model, options, undefined, loaded);
    try {
      expect(rest).toEqual(all.slice(4));
      expect(Buffer.from(loaded.model.params.readStorageBits()!.buffer).equals(Buffer.from(full.params.readStorageBits()!.buffer))).toBe(true);
      expect(loaded.model.params.readAll()).toEqual(full.params.readAll());
      // The checkpoint's weights are the float32 master, and the bf16 copy rides along.
      const archive = await readCheckpointArchive(path);
      expect(archive.manifest.dtype).toBe('bf16');
      expect([...archive.files.get('model.safetensors')!.values()].every((t) => t.dtype === 'F32')).toBe(true);
      expect(archive.files.get('optimizer.safetensors')!.get('params_bf16')!.dtype).toBe('BF16');
    } finally {
      for (const t of [t1, t2]) t.optimizer.dispose();
      full.dispose();
      loaded.model.dispose();
    }
  });

  it('a negative control: resuming from the nearest-rounded master (no saved bf16 copy) differs', async () => {
    const path = join(root, 'nearest.tar');
    const full = new GPTModel(CONFIG, { seed: 21, dtype: 'bf16' });
    const { trainer: t1 } = await train(full, { ...options, maxSteps: 4 }, async (t) => {
      await saveCheckpoint(path, { model: full, optimizer: { step: t.optimizer.step, m: t.optimizer.m.toFloat32Array(), v: t.optimizer.v.toFloat32Array(), hyper: options.optimizer }, train: { state: t.state, options, seed: 21, loaderConfig: {} } });
    });
    const loaded = await loadCheckpoint(path);
    try {
      const saved = loaded.model.params.readStorageBits()!;
      loaded.model.params.syncFromMaster();
      const nearest = loaded.model.params.readStorageBits()!;
      expect(Buffer.from(saved.buffer).equals(Buffer.from(nearest.buffer))).toBe(false);
    } finally {
      t1.optimizer.dispose();
      full.dispose();
      loaded.model.dispose();
    }
  });

  it('saveDtype bf16: a model-only file of about half the size, loading to the nearest-rounded weights', async () => {
    const model = new GPTModel(CONFIG, { seed: 4 });
    try {
      const f32 = join(root, 'f32.tar'), b16 = join(root, 'b16.tar');
      await model.save(f32);
      await model.save(b16, { dtype: 'bf16' });
      const ratio = fs.statSync(b16).size / fs.statSync(f32).size;
      expect(ratio).toBeGreaterThan(0.45);
      expect(ratio).toBeLessThan(0.55);
      const back = await loadCheckpoint(b16);
      try {
        const want = model.params.readAll(), got = back.model.params.readAll();
        // every loaded value is a bf16 value within half a bf16 ulp (2^-9 relative) of the original
        for (let i = 0; i < want.length; i += 97) {
          expect(new Uint32Array(Float32Array.of(got[i]!).buffer)[0]! & 0xffff).toBe(0);
          expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(Math.abs(want[i]!) * 2 ** -8);
        }
      } finally {
        back.model.dispose();
      }
      await expect(saveCheckpoint(join(root, 'x.tar'), { model, saveDtype: 'bf16', optimizer: { step: 1, m: new Float32Array(model.numParameters), v: new Float32Array(model.numParameters), hyper: BOOK_ADAMW } }))
        .rejects.toThrow(/inference only/);
    } finally {
      model.dispose();
    }
  });
});

describe('bf16 generation', () => {
  it('KV-cache logits in bf16 track fp32 (same weights): top-1 agrees on most positions and the logits within 5% of their spread', () => {
    const fp32 = trained;
    const bf16 = new GPTModel(fp32.config, { dtype: 'bf16', masterWeights: false, skipInit: true });
    bf16.params.writeAll(fp32.params.readAll());
    const c32 = fp32.createKVCache(1), c16 = bf16.createKVCache(1);
    try {
      const ids = textToTokenIds(TEXT).slice(0, 24);
      let agree = 0, spread = 0;
      for (let t = 0; t < ids.length; t++) {
        const a = fp32.forwardCached(Int32Array.of(ids[t]!), 1, 1, t, c32);
        const b = bf16.forwardCached(Int32Array.of(ids[t]!), 1, 1, t, c16);
        let lo = Infinity, hi = -Infinity, worst = 0, am = 0, bm = 0;
        for (let i = 0; i < a.length; i++) {
          lo = Math.min(lo, a[i]!);
          hi = Math.max(hi, a[i]!);
          worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
          if (a[i]! > a[am]!) am = i;
          if (b[i]! > b[bm]!) bm = i;
        }
        spread = Math.max(spread, worst / (hi - lo));
        if (am === bm) agree++;
      }
      console.log(`bf16 vs fp32 decoding: top-1 agrees at ${agree}/${ids.length} positions; largest logit difference ${(100 * spread).toFixed(2)}% of the logits' range`);
      expect(spread).toBeLessThan(0.05);
      expect(agree / ids.length).toBeGreaterThan(0.8);
    } finally {
      c32.dispose();
      c16.dispose();
      bf16.dispose();
    }
  });
});

describe('the CLI in bf16', () => {
  const tiny = ['--n-layers', '2', '--emb-dim', '64', '--n-heads', '4', '--context-length', '32', '--batch-size', '2'];

  it('train --dtype bf16 --device cpu --save-dtype bf16, then generate --dtype bf16 and eval --dtype bf16 on both files', async () => {
    const out = join(root, 'cli-run');
    const train = await spawnCli(['train', ...tiny, '--max-steps', '4', '--dtype', 'bf16', '--device', 'cpu', '--save-dtype', 'bf16', '--json', '--out', out], { cwd: root });
    expect(train.code, train.stderr).toBe(0);
    const events = train.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events[0]!.dtype).toBe('bf16');
    const steps = events.filter((e) => e.event === 'step');
    expect(steps.length).toBe(4);
    for (const e of steps) expect(Number.isFinite(e.loss)).toBe(true);
    const exported = events.find((e) => e.event === 'export');
    expect(exported?.path).toBe(join(out, 'model-bf16.tar'));
    expect(fs.existsSync(join(out, 'model-bf16.tar'))).toBe(true);

    for (const weights of [out, join(out, 'model-bf16.tar')]) {
      const gen = await spawnCli(['generate', '--weights', weights, '--dtype', 'bf16', '--prompt', 'Every effort moves', '--max-new-tokens', '5', '--json'], { cwd: root });
      expect(gen.code, gen.stderr).toBe(0);
      const ev = await spawnCli(['eval', '--weights', weights, '--dtype', 'bf16', '--json'], { cwd: root });
      expect(ev.code, ev.stderr).toBe(0);
    }
  });

  it('--dtype refuses an unknown precision', async () => {
    const r = await spawnCli(['train', '--dtype', 'fp16', '--max-steps', '1'], { cwd: root });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/dtype/);
    expect(r.stderr).toMatch(/fp32.*bf16|bf16.*fp32/);
  });
});
