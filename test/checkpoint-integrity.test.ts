// Issue 11: the checkpoint manifest (config + training state) is checksummed,
// its counts are checked against the tensors before they drive any loop, and
// loading a run directory falls back to the newest intact checkpoint.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readCheckpointArchive, writeCheckpointArchive } from '../ts/checkpoint/archive.js';
import { checkpointFileName } from '../ts/checkpoint/run-files.js';
import { loadCheckpoint, loadLatestCheckpoint, saveCheckpoint } from '../ts/checkpoint/checkpoint.js';
import type { GPTConfig } from '../ts/model/config.js';
import { GPTModel } from '../ts/model/gpt.js';
import { loadModel } from '../ts/weights/load.js';

const SMALL: GPTConfig = { vocabSize: 64, contextLength: 8, embDim: 8, nHeads: 2, nLayers: 1, dropRate: 0, qkvBias: false, tieWeights: false };
let root: string;
let n = 0;
const tmp = (name: string) => join(root, `${n++}-${name}`);

async function save(path: string, step: number, seed = 1): Promise<void> {
  const model = new GPTModel(SMALL, { seed });
  await saveCheckpoint(path, { model, extra: { step, lr: 0.0004 } });
  model.dispose();
}

/** Replaces `from` by `to` (same byte length) inside the file, in place. */
function patch(path: string, from: string, to: string): void {
  expect(to.length).toBe(from.length);
  const text = fs.readFileSync(path).toString('latin1');
  expect(text.includes(from), `${from} in ${path}`).toBe(true);
  fs.writeFileSync(path, Buffer.from(text.replace(from, to), 'latin1'));
}

beforeAll(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-integrity-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('manifest checksum', () => {
  it('an edited step, lr or config value is refused like a flipped tensor byte', async () => {
    for (const [from, to] of [['"step": 3', '"step": 9'], ['"lr": 0.0004', '"lr": 0.0009'], ['"n_heads": 2', '"n_heads": 4']] as const) {
      const p = tmp('edited.tar');
      await save(p, 3);
      await loadCheckpoint(p).then((c) => c.model.dispose());
      patch(p, from, to);
      await expect(loadCheckpoint(p)).rejects.toThrow(/manifest\.json does not match its manifest_sha256/);
      await expect(readCheckpointArchive(p)).rejects.toThrow(p);
    }
  });

  it('an old checkpoint without the checksum loads with a warning', async () => {
    const p = tmp('old.tar');
    await save(p, 3);
    const text = fs.readFileSync(p).toString('latin1');
    const m = /,\n {2}"manifest_sha256": "[0-9a-f]{64}"/.exec(text);
    expect(m).not.toBeNull();
    patch(p, m![0], ' '.repeat(m![0].length));
    const ck = await loadCheckpoint(p);
    expect(ck.manifest.step).toBe(3);
    expect(ck.warnings.join('\n')).toMatch(/no manifest_sha256/);
    ck.model.dispose();
  });
});

describe('manifest config counts are checked against the tensors first', () => {
  it('a huge n_layers / vocab_size is refused at once, naming the file', async () => {
    const good = tmp('good.tar');
    await save(good, 1);
    const archive = await readCheckpointArchive(good);
    for (const edit of [{ n_layers: 50_000_000 }, { vocab_size: 2_000_000_000 }, { context_length: 1_000_000_000 }]) {
      const p = tmp('huge.tar');
      const files = [...archive.files].map(([name, t]) => ({ name, tensors: [...t.values()] }));
      await writeCheckpointArchive(p, { manifest: { ...archive.manifest, config: { ...(archive.manifest.config as object), ...edit } }, files });
      const t0 = Date.now();
      await expect(loadCheckpoint(p)).rejects.toThrow(new RegExp(`${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: the manifest's model config`));
      expect(Date.now() - t0).toBeLessThan(2000);
    }
  });

  it('a config with one layer more than the tensors names the missing tensor', async () => {
    const good = tmp('good.tar');
    await save(good, 1);
    const archive = await readCheckpointArchive(good);
    const p = tmp('extra-layer.tar');
    const files = [...archive.files].map(([name, t]) => ({ name, tensors: [...t.values()] }));
    await writeCheckpointArchive(p, { manifest: { ...archive.manifest, config: { ...(archive.manifest.config as object), n_layers: 2 } }, files });
    await expect(loadCheckpoint(p)).rejects.toThrow(/tensor 'trf_blocks\.1\.[^']+' is missing/);
  });
});

describe('a run directory falls back to the newest intact checkpoint', () => {
  it('--resume DIR, eval DIR and generate DIR skip a damaged newest checkpoint with a warning', async () => {
    const dir = tmp('run');
    fs.mkdirSync(dir);
    await save(join(dir, checkpointFileName(10)), 10, 1);
    await save(join(dir, checkpointFileName(20)), 20, 2);
    // Flip one byte of tensor data (the quick header check cannot see it; the full load must).
    const newest = join(dir, checkpointFileName(20));
    const buf = fs.readFileSync(newest);
    const at = buf.length - 1024 - 700;
    buf[at] ^= 0x10;
    fs.writeFileSync(newest, buf);
    await expect(loadCheckpoint(newest)).rejects.toThrow(/sha256 mismatch/);

    const warnings: string[] = [];
    const latest = await loadLatestCheckpoint(dir, { onWarning: (m) => warnings.push(m) });
    expect(latest!.path).toBe(join(dir, checkpointFileName(10)));
    expect(latest!.manifest.step).toBe(10);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/skipping damaged checkpoint ckpt-step00000020\.tar/);
    latest!.model.dispose();

    // eval / generate load through loadModel.
    const errors: string[] = [];
    const orig = console.error;
    console.error = (m: string) => errors.push(m);
    try {
      const loaded = await loadModel(dir);
      expect(loaded.source.path).toBe(join(dir, checkpointFileName(10)));
      loaded.model.dispose();
    } finally {
      console.error = orig;
    }
    expect(errors.filter((e) => /skipping damaged checkpoint ckpt-step00000020\.tar/.test(e))).toHaveLength(1);
  });

  it('a directory with only damaged checkpoints is an error, and an empty one returns null', async () => {
    const dir = tmp('bad-run');
    fs.mkdirSync(dir);
    expect(await loadLatestCheckpoint(dir)).toBeNull();
    fs.writeFileSync(join(dir, checkpointFileName(5)), Buffer.alloc(4096, 7));
    await expect(loadLatestCheckpoint(dir, { onWarning: () => {} })).rejects.toThrow(/none of the 1 checkpoints is usable/);
  });
});
