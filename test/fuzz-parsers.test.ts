// Issue 11 item F: seeded mutants of every on-disk format (byte flips,
// truncations, length-field edits) either load the same data or are refused
// with a one-line Error naming the file; none hangs.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, saveCheckpoint } from '../ts/checkpoint/checkpoint.js';
import { encodeSafetensorsToBuffer, readSafetensors } from '../ts/checkpoint/safetensors.js';
import { TOKEN_FILE_HEADER_BYTES, TOKEN_FILE_MAGIC, TokenFile } from '../ts/data/token-file.js';
import { GPTModel } from '../ts/model/gpt.js';
import { exportHuggingFace } from '../ts/weights/export.js';
import { loadModel } from '../ts/weights/load.js';
import { mulberry32 } from './helpers/reference.js';

const MUTANTS = 300;
const TOY = join(__dirname, 'fixtures', 'tf', 'keras-gpt2-toy');
const root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-fuzz-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const rng = mulberry32;

/** One mutant of `orig`: a byte flip, a truncation, a run of 0xff, or an edited length field at one of `lengthFields`. */
function mutate(orig: Buffer, r: () => number, lengthFields: { at: number; len: number }[]): Buffer {
  const kind = Math.floor(r() * 4);
  const b = Buffer.from(orig);
  const pos = Math.floor(r() * b.length);
  if (kind === 0) {
    b[pos] ^= 1 + Math.floor(r() * 255);
    return b;
  }
  if (kind === 1) return b.subarray(0, Math.floor(r() * b.length));
  if (kind === 2) {
    b.fill(0xff, pos, Math.min(b.length, pos + 8));
    return b;
  }
  const f = lengthFields[Math.floor(r() * lengthFields.length)]!;
  for (let i = 0; i < f.len; i++) if (r() < 0.5) b[f.at + i] = Math.floor(r() * 256);
  return b;
}

function expectRefusal(err: unknown, names: string[]): void {
  expect(err).toBeInstanceOf(Error);
  const msg = (err as Error).message;
  expect(msg.includes('\n'), `one line: ${msg}`).toBe(false);
  expect(names.some((n) => msg.includes(n)), `names the file: ${msg}`).toBe(true);
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

const CFG = { vocabSize: 32, contextLength: 8, embDim: 8, nHeads: 2, nLayers: 1, dropRate: 0, qkvBias: true, tieWeights: false };

async function fuzzModelFile(seed: number, orig: Buffer, file: string, fields: { at: number; len: number }[], load: () => Promise<GPTModel>, expected: Float32Array, dataMayDiffer = false): Promise<number> {
  const r = rng(seed);
  let refused = 0;
  for (let i = 0; i < MUTANTS; i++) {
    fs.writeFileSync(file, mutate(orig, r, fields));
    let model: GPTModel | undefined;
    try {
      model = await load();
    } catch (err) {
      expectRefusal(err, [file, join(file, '..')]);
      refused++;
      continue;
    }
    // safetensors has no checksum: a flipped weight byte is indistinguishable from real data, but the structure must be intact.
    if (dataMayDiffer) expect(model.params.readAll().length, `mutant ${i} loaded a different model`).toBe(expected.length);
    else expect(sameBits(model.params.readAll(), expected), `mutant ${i} loaded different weights`).toBe(true);
    model.dispose();
  }
  return refused;
}

describe('fuzzed parsers', () => {
  it('checkpoint .tar', async () => {
    const file = join(root, 'ckpt.tar');
    const model = new GPTModel(CFG, { seed: 1 });
    const expected = model.params.readAll();
    await saveCheckpoint(file, { model, extra: { step: 4 } });
    model.dispose();
    const orig = fs.readFileSync(file);
    // tar size fields of the first two entries, and the manifest's first bytes
    const refused = await fuzzModelFile(11, orig, file, [{ at: 124, len: 12 }, { at: 512, len: 64 }], async () => (await loadCheckpoint(file)).model, expected);
    expect(refused).toBeGreaterThan(MUTANTS / 2);
  });

  it('safetensors', () => {
    const model = new GPTModel(CFG, { seed: 2 });
    const expected = model.params.readAll();
    model.dispose();
    const tensors = [{ name: 'w', dtype: 'F32' as const, shape: [expected.length], data: expected }];
    const orig = encodeSafetensorsToBuffer(tensors);
    const r = rng(22);
    for (let i = 0; i < MUTANTS; i++) {
      const b = mutate(orig, r, [{ at: 0, len: 8 }, { at: 8, len: 40 }]);
      try {
        const c = readSafetensors(b, 'fuzz.safetensors');
        // No checksum in the format: accepted mutants keep the structure (a data byte may differ).
        const t = c.tensors.get('w');
        expect(t && t.data.length === expected.length && c.tensors.size === 1, `mutant ${i}`).toBe(true);
      } catch (err) {
        expectRefusal(err, ['fuzz.safetensors']);
      }
    }
  });

  it('HF model.safetensors + config.json', async () => {
    const dir = join(root, 'hf');
    const model = new GPTModel(CFG, { seed: 3 });
    await exportHuggingFace(model, dir);
    const expected = model.params.readAll();
    model.dispose();
    const st = join(dir, 'model.safetensors'), cj = join(dir, 'config.json');
    const origSt = fs.readFileSync(st), origCj = fs.readFileSync(cj);
    await fuzzModelFile(33, origSt, st, [{ at: 0, len: 8 }, { at: 8, len: 64 }], async () => (await loadModel(dir)).model, expected, true);
    fs.writeFileSync(st, origSt);
    // config.json: the weights, if accepted, must be the same (n_head is not visible in the tensors, so only weights are compared).
    await fuzzModelFile(34, origCj, cj, [{ at: 0, len: origCj.length }], async () => (await loadModel(dir)).model, expected);
  });

  it('TF index / data / hparams.json (the toy fixture)', async () => {
    const dir = join(root, 'tf');
    fs.cpSync(TOY, dir, { recursive: true });
    const ref = await loadModel(dir);
    const expected = ref.model.params.readAll();
    ref.model.dispose();
    let seed = 44;
    for (const name of ['model.ckpt.index', 'model.ckpt.data-00000-of-00001', 'hparams.json']) {
      const file = join(dir, name);
      const orig = fs.readFileSync(file);
      await fuzzModelFile(seed++, orig, file, [{ at: Math.max(0, orig.length - 48), len: 48 }], async () => (await loadModel(dir)).model, expected);
      fs.writeFileSync(file, orig);
    }
  });

  it('.tok token files', () => {
    const ids = Array.from({ length: 200 }, (_, i) => (i * 7919) % 50257);
    const orig = Buffer.alloc(TOKEN_FILE_HEADER_BYTES + 2 * ids.length);
    orig.write(TOKEN_FILE_MAGIC, 0, 'ascii');
    orig.writeUInt32LE(1, 8);
    orig.writeBigUInt64LE(BigInt(ids.length), 12);
    ids.forEach((id, i) => orig.writeUInt16LE(id, TOKEN_FILE_HEADER_BYTES + 2 * i));
    const file = join(root, 'fuzz.tok');
    const r = rng(55);
    for (let i = 0; i < MUTANTS; i++) {
      fs.writeFileSync(file, mutate(orig, r, [{ at: 12, len: 8 }, { at: 8, len: 4 }]));
      let f: TokenFile;
      try {
        f = TokenFile.open(file);
      } catch (err) {
        expectRefusal(err, [file]);
        continue;
      }
      // A flipped token byte that stays in range is indistinguishable from real data; every id is in range.
      const got = f.read(0, f.length);
      f.close();
      expect(got.length).toBe(ids.length);
      expect(got.every((v) => v >= 0 && v < 50257)).toBe(true);
    }
  });
});
