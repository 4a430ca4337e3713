// Issue 11 items A and E: counts in hparams.json / config.json are checked
// against the tensors before any allocation; HF import checks names, the
// tie_word_embeddings claim, and rejects NaN/Inf unless allowed.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawnCli } from './helpers/cli.js';
import { readSafetensorsFile, encodeSafetensorsToBuffer } from '../ts/checkpoint/safetensors.js';
import { GPTModel } from '../ts/model/gpt.js';
import { exportHuggingFace } from '../ts/weights/export.js';
import { loadModel } from '../ts/weights/load.js';

const TOY = join(__dirname, 'fixtures', 'tf', 'keras-gpt2-toy');
const root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-wval-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

function toyWith(hp: Record<string, unknown>): string {
  const dir = join(root, `tf-${n++}`);
  fs.cpSync(TOY, dir, { recursive: true });
  const base = JSON.parse(fs.readFileSync(join(TOY, 'hparams.json'), 'utf8'));
  fs.writeFileSync(join(dir, 'hparams.json'), JSON.stringify({ ...base, ...hp }));
  return dir;
}

describe('hparams.json is checked against the TF tensors first', () => {
  test('huge counts fail at once, naming hparams.json', async () => {
    for (const hp of [{ n_layer: 100_000_000 }, { n_vocab: 2_000_000_000 }, { n_ctx: 1_000_000_000 }, { n_embd: 3_000_000 }]) {
      const t0 = Date.now();
      await expect(loadModel(toyWith(hp))).rejects.toThrow(/hparams\.json: n_/);
      expect(Date.now() - t0).toBeLessThan(2000);
    }
  });
  test('one layer too few or too many names the tensor', async () => {
    await expect(loadModel(toyWith({ n_layer: 2 }))).rejects.toThrow(/extra layer \(tensor model\/h2\/ln_1\/g\)/);
    await expect(loadModel(toyWith({ n_layer: 4 }))).rejects.toThrow(/tensor model\/h3\/[^ ]+ .*is missing/);
  });
});

describe('HF safetensors import', () => {
  let good: string;
  beforeAll(async () => {
    good = join(root, 'hf-good');
    const model = new GPTModel({ vocabSize: 64, contextLength: 8, embDim: 8, nHeads: 2, nLayers: 2, dropRate: 0, qkvBias: true, tieWeights: false }, { seed: 3 });
    await exportHuggingFace(model, good);
    model.dispose();
  });

  async function variant(edit: (tensors: Map<string, { name: string; dtype: string; shape: number[]; data: Float32Array }>, config: Record<string, unknown>) => void): Promise<string> {
    const dir = join(root, `hf-${n++}`);
    fs.mkdirSync(dir);
    const c = await readSafetensorsFile(join(good, 'model.safetensors'));
    const tensors = new Map([...c.tensors].map(([k, t]) => [k, { ...t, name: k, data: Float32Array.from(t.data as Float32Array) } as never]));
    const config = JSON.parse(fs.readFileSync(join(good, 'config.json'), 'utf8'));
    edit(tensors as never, config);
    fs.writeFileSync(join(dir, 'model.safetensors'), encodeSafetensorsToBuffer([...tensors.values()] as never));
    fs.writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  }

  test('the export loads', async () => {
    const m = await loadModel(good);
    expect(m.model.config.nLayers).toBe(2);
    m.model.dispose();
  });
  test('NaN/Inf weights are refused by default, allowed with allowNonFinite', async () => {
    const dir = await variant((t) => {
      const key = [...t.keys()].find((k) => k.endsWith('h.1.mlp.c_fc.weight'))!;
      t.get(key)!.data[5] = NaN;
    });
    await expect(loadModel(dir)).rejects.toThrow(/tensor (transformer\.)?h\.1\.mlp\.c_fc\.weight has a non-finite value \(NaN\) at flat index 5/);
    const m = await loadModel(dir, { allowNonFinite: true });
    m.model.dispose();
  });
  test('config.json disagreeing with the tensors names the tensor', async () => {
    await expect(loadModel(await variant((_, c) => (c.n_layer = 3)))).rejects.toThrow(/n_layer is 3 .*h\.2\.ln_1\.weight missing/);
    await expect(loadModel(await variant((_, c) => (c.n_embd = 16)))).rejects.toThrow(/n_embd is 16 .*wte\.weight/);
  });
  test('a renamed lm_head, an unknown tensor, and a false tie_word_embeddings claim are refused', async () => {
    const renamed = await variant((t) => {
      const h = t.get('lm_head.weight')!;
      t.delete('lm_head.weight');
      t.set('lm_head.weights', { ...h, name: 'lm_head.weights' });
    });
    await expect(loadModel(renamed)).rejects.toThrow(/unexpected tensor lm_head\.weights/);
    const claimTied = await variant((_, c) => (c.tie_word_embeddings = true));
    await expect(loadModel(claimTied)).rejects.toThrow(/tie_word_embeddings is true but tensor lm_head\.weight differs from wte\.weight/);
    const noHead = await variant((t) => t.delete('lm_head.weight'));
    await expect(loadModel(noHead)).rejects.toThrow(/tie_word_embeddings is false but .* has no tensor lm_head\.weight/);
  });
});

describe('--allow-nonfinite through the CLI', () => {
  test('train --init-from refuses NaN HF weights in one line, proceeds with --allow-nonfinite; eval and generate refuse', async () => {
    const dir = join(root, 'hf-nan-cli');
    const model = new GPTModel({ vocabSize: 50257, contextLength: 16, embDim: 8, nHeads: 2, nLayers: 1, dropRate: 0, qkvBias: true, tieWeights: false }, { seed: 4 });
    await exportHuggingFace(model, dir);
    model.dispose();
    const file = join(dir, 'model.safetensors');
    const c = await readSafetensorsFile(file);
    const tensors = [...c.tensors].map(([name, t]) => ({ ...t, name, data: Float32Array.from(t.data as Float32Array) }));
    const wpe = tensors.find((t) => t.name.endsWith('wpe.weight'))!;
    // A position row that --context-length 8 never reads, so training with the flag stays finite.
    wpe.data[12 * 8 + 3] = NaN;
    fs.writeFileSync(file, encodeSafetensorsToBuffer(tensors as never));
    const train = ['train', '--init-from', file, '--context-length', '8', '--batch-size', '2', '--max-steps', '1', '--device', 'cpu', '--eval-freq', '100000', '--eval-iter', '1'];
    const nan = new RegExp(`^gptcuda: ${file}: tensor (transformer\\.)?wpe\\.weight has a non-finite value \\(NaN\\) at flat index ${12 * 8 + 3}; `);

    const refused = await spawnCli([...train, '--out', join(root, 'nan-refused')], { cwd: root });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n'), refused.stderr).toHaveLength(1);
    expect(refused.stderr).toMatch(nan);
    expect(refused.stderr).toContain('--allow-nonfinite');
    expect(fs.existsSync(join(root, 'nan-refused'))).toBe(false);

    const allowed = await spawnCli([...train, '--out', join(root, 'nan-allowed'), '--allow-nonfinite'], { cwd: root });
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(fs.readdirSync(join(root, 'nan-allowed'))).toContain('ckpt-step00000001.tar');

    for (const cmd of [['eval', '--weights', file, '--device', 'cpu', '--context-length', '8'], ['generate', '--weights', file, '--device', 'cpu', '--max-new-tokens', '2']]) {
      const r = await spawnCli(cmd, { cwd: root });
      expect(r.code, cmd[0]).toBe(1);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(nan);
    }
  }, 60_000);
});
