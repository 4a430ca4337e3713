// Importing GPT-2 weights: OpenAI's TF checkpoint (the toy fixture, with logits
// computed by an independent PyTorch implementation) and Hugging Face
// safetensors (our export read back).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { loadModel, detectWeights } from '../ts/weights/load.js';
import { exportHuggingFace } from '../ts/weights/export.js';
import { GPTModel } from '../ts/model/gpt.js';
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
