// Importing GPT-2 weights: OpenAI's TF checkpoint (the toy fixture, with logits
// computed by an independent PyTorch implementation) and Hugging Face
// safetensors (our export read back).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { loadModel, detectWeights } from '../ts/weights/load.js';
import { exportHuggingFace } from '../ts/weights/export.js';
import { GPTModel } from '../ts/index.js';
import { saveCheckpoint } from '../ts/checkpoint/checkpoint.js';

const TOY = join(__dirname, 'fixtures', 'tf', 'keras-gpt2-toy');
const expected = JSON.parse(readFileSync(join(TOY, 'expected-logits.json'), 'utf8')) as {
  input_ids: number[];
  targets: number[];
  loss: number;
  logits: number[][];
};
const tmp = mkdtempSync(join(tmpdir(), 'gptcuda-weights-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function logitsOf(model: GPTModel, ids: number[]): Float32Array {
  model.forward(Int32Array.from(ids), 1, ids.length);
  return model.logits().toFloat32Array();
}

describe('OpenAI TF checkpoint import', () => {
  test('detects the folder format', async () => {
    expect((await detectWeights(TOY)).format).toBe('openai-tf');
  });

  test('toy GPT-2 logits and loss match the PyTorch reference', async () => {
    const { model } = await loadModel(TOY);
    expect(model.config).toMatchObject({ vocabSize: 356, contextLength: 20, embDim: 15, nHeads: 5, nLayers: 3, qkvBias: true });
    const logits = logitsOf(model, expected.input_ids);
    const V = 356;
    let maxErr = 0;
    expected.logits.forEach((row, t) => row.forEach((v, j) => (maxErr = Math.max(maxErr, Math.abs(v - logits[t * V + j])))));
    // The fixture's logits are rounded to 6 decimals.
    expect(maxErr).toBeLessThan(2e-5);
    const loss = model.forward(Int32Array.from(expected.input_ids), 1, 10, Int32Array.from(expected.targets));
    expect(loss).toBeCloseTo(expected.loss, 5);
    model.dispose();
  });
});

describe('Hugging Face safetensors', () => {
  test('export then import gives identical logits (tied and untied, with and without qkv bias)', async () => {
    for (const qkvBias of [true, false]) {
      const model = new GPTModel({ vocabSize: 61, contextLength: 12, embDim: 16, nHeads: 4, nLayers: 2, dropRate: 0, qkvBias, tieWeights: false }, { seed: 7 });
      const dir = join(tmp, `hf-${qkvBias}`);
      const report = await exportHuggingFace(model, dir);
      expect(report.notes.some((n) => n.includes('lm_head'))).toBe(true);
      const ids = [3, 1, 4, 1, 5, 9, 2, 6];
      const before = logitsOf(model, ids);
      const { model: back, source } = await loadModel(dir);
      expect(source.format).toBe('hf-safetensors');
      const got = logitsOf(back, ids);
      for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(before[i], 5);
      expect(before.length).toBe(got.length);
      model.dispose();
      back.dispose();
    }
  });

  test('our checkpoint loads through the same entry point', async () => {
    const model = new GPTModel({ vocabSize: 50, contextLength: 8, embDim: 8, nHeads: 2, nLayers: 1, dropRate: 0.1, qkvBias: false, tieWeights: false }, { seed: 3 });
    const path = join(tmp, 'm.tar');
    await saveCheckpoint(path, { model });
    const { model: back, source } = await loadModel(path);
    expect(source.format).toBe('gptcuda-checkpoint');
    expect(back.params.readAll()).toEqual(model.params.readAll());
    model.dispose();
    back.dispose();
  });

  test('unknown paths give a clear error', async () => {
    await expect(loadModel(join(tmp, 'nope'))).rejects.toThrow(/does not exist.*download/);
  });
});

describe('train --init-from', () => {
  test('continues pretraining from imported weights (a Hugging Face folder)', async () => {
    const { execFileSync } = await import('node:child_process');
    const model = new GPTModel({ vocabSize: 50257, contextLength: 32, embDim: 16, nHeads: 2, nLayers: 1, dropRate: 0, qkvBias: true, tieWeights: false }, { seed: 9 });
    const dir = join(tmp, 'hf-init');
    await exportHuggingFace(model, dir);
    const cli = join(__dirname, '..', 'dist', 'cli', 'main.js');
    const out = join(tmp, 'run-init');
    const events = execFileSync(process.execPath, [cli, 'train', '--init-from', dir, '--context-length', '16', '--max-steps', '2', '--out', out, '--json'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const start = events.find((e) => e.event === 'start');
    // The shape comes from the weights; --context-length only sets the data windows.
    expect(start.config).toMatchObject({ embDim: 16, nLayers: 1, contextLength: 32, qkvBias: true });
    expect(events.filter((e) => e.event === 'step')).toHaveLength(2);
    // Two AdamW updates move each weight by at most about 2 x lr (4e-4) from the
    // imported values; a run from scratch would be unrelated to them.
    const trained = await GPTModel.load(out);
    for (const name of ['tok_emb.weight', 'trf_blocks.0.att.W_key.weight', 'trf_blocks.0.ff.layers.0.weight', 'out_head.weight']) {
      const a = model.params.get(name).value.toFloat32Array(), b = trained.params.get(name).value.toFloat32Array();
      let maxDiff = 0;
      for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
      expect(maxDiff, name).toBeLessThan(1.5e-3);
      expect(maxDiff, name).toBeGreaterThan(0);
    }
    trained.dispose();
    model.dispose();
  });
});

describe('--model with --models-dir', () => {
  test('resolves a GPT-2 preset to the downloaded folder, or says how to download it', async () => {
    const { execFileSync, spawnSync } = await import('node:child_process');
    const { cpSync } = await import('node:fs');
    const cli = join(__dirname, '..', 'dist', 'cli', 'main.js');
    const models = join(tmp, 'models');
    cpSync(TOY, join(models, '124M'), { recursive: true });
    const out = JSON.parse(execFileSync(process.execPath, [cli, 'generate', '--model', 'gpt2-small', '--models-dir', models, '--prompt', 'a', '--max-new-tokens', '3', '--json'], { encoding: 'utf8' }));
    expect(out.ids).toHaveLength(4);
    // The toy's greedy continuation, computed through the library from the fixture itself.
    const { model } = await loadModel(TOY);
    expect(await model.generate([out.ids[0]], { maxNewTokens: 3 })).toEqual(out.ids);
    model.dispose();
    const missing = spawnSync(process.execPath, [cli, 'eval', '--model', 'gpt2-medium', '--models-dir', models], { encoding: 'utf8' });
    expect(missing.status).not.toBe(0);
    // The hint is written the way the tool was started (here `node …/main.js`).
    expect(missing.stderr).toMatch(/355M does not exist: run `(node \S*main\.js|gptcuda|npx gptcuda) download --model 355M/);
  });
});
