// Child process for test/fuzz-parsers.test.ts: loads `count` seeded mutants of
// one on-disk format and checks each outcome; it runs apart from vitest so that
// a signal exit, a hang (the parent watches the progress lines) or the peak RSS
// of the parsing alone are seen.
// Usage: node fuzz-parsers-child.mjs <format> <seed> <count> <work dir> <TF toy fixture dir>
// stdout: "mutant <i>" before each mutant, then one JSON line
//   { format, mutants, refused, bad: string[], maxRssBytes, slowestMs }.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [format, seedArg, countArg, work, toy] = process.argv.slice(2);
const dist = join(import.meta.dirname, '..', '..', 'dist');
const load = async (p) => import(pathToFileURL(join(dist, p)).href);
const { loadCheckpoint, saveCheckpoint } = await load('checkpoint/checkpoint.js');
const { readSafetensorsFile, writeSafetensorsFile } = await load('checkpoint/safetensors.js');
const { TOKEN_FILE_HEADER_BYTES, TOKEN_FILE_MAGIC, TokenFile } = await load('data/token-file.js');
const { GPTModel } = await load('model/gpt.js');
const { exportHuggingFace } = await load('weights/export.js');
const { loadModel } = await load('weights/load.js');

/** A seeded stream of uniform numbers in [0, 1): sha256 of (seed, counter), 8 draws per digest. */
function rng(seed) {
  let counter = 0;
  let block = Buffer.alloc(0);
  let at = 32;
  return () => {
    if (at >= 32) {
      block = createHash('sha256').update(`${seed}:${counter++}`).digest();
      at = 0;
    }
    const v = block.readUInt32LE(at);
    at += 4;
    return v / 4294967296;
  };
}

/** One mutant: a byte flip, a truncation, a run of 0xff, or random bytes in one of `fields` (length fields, headers). */
function mutate(orig, r, fields) {
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
  const f = fields[Math.floor(r() * fields.length)];
  for (let i = 0; i < f.len && f.at + i < b.length; i++) if (r() < 0.5) b[f.at + i] = Math.floor(r() * 256);
  return b;
}

const sameBits = (a, b) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
const CFG = { vocabSize: 32, contextLength: 8, embDim: 8, nHeads: 2, nLayers: 1, dropRate: 0, qkvBias: true, tieWeights: false };

/**
 * Each format: the file to mutate, its original bytes, the regions worth
 * scribbling on, and `open`, which loads the file and returns why an accepted
 * mutant is wrong (undefined when it is the original content, or, for formats
 * without checksums, the original structure).
 */
async function setup() {
  fs.mkdirSync(work, { recursive: true });
  const model = new GPTModel(CFG, { seed: 1 });
  const weights = model.params.readAll();
  const n = weights.length;
  const m = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 1e-3);
  const v = Float32Array.from({ length: n }, (_, i) => 1e-6 * (1 + (i % 7)));
  const sameModel = (loaded, exact) => {
    const got = loaded.params.readAll();
    loaded.dispose();
    if (exact ? !sameBits(got, weights) : got.length !== n) return exact ? 'loaded different weights' : `loaded ${got.length} parameters, not ${n}`;
    return undefined;
  };
  try {
    if (format === 'checkpoint') {
      const file = join(work, 'ckpt.tar');
      const state = { step: 4, epoch: 0, tokensSeen: 64, stepLosses: [3, 2.5, 2, 1.5], history: { steps: [0], trainLosses: [3], valLosses: [3.1], tokensSeen: [16], epochsSeen: [0.1] } };
      await saveCheckpoint(file, {
        model,
        optimizer: { step: 4, m, v, hyper: { lr: 4e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 } },
        train: { state, options: { epochs: 1, optimizer: { lr: 4e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 }, evalFreq: 5, evalIter: 1, samplePrompt: 'x' }, seed: 1, loaderConfig: { paths: ['x.txt'] } },
      });
      const orig = fs.readFileSync(file);
      const entry = (name) => orig.indexOf(Buffer.from(name + '\0'));
      // tar headers (name, size, checksum) of each entry and the first bytes of each safetensors header
      const fields = [];
      for (const name of ['manifest.json', 'model.safetensors', 'optimizer.safetensors']) {
        const at = entry(name);
        fields.push({ at: at + 124, len: 12 }, { at: at + 148, len: 8 }, { at: at + 512, len: 64 });
      }
      return {
        file, orig, fields, names: [file],
        open: async () => {
          const c = await loadCheckpoint(file);
          const why = sameModel(c.model, true);
          if (why) return why;
          if (!c.optimizer || !sameBits(c.optimizer.m, m) || !sameBits(c.optimizer.v, v)) return 'loaded different optimizer moments';
          if (JSON.stringify(c.trainState) !== JSON.stringify(state) || c.optimizer.step !== 4) return 'loaded a different training state';
          return undefined;
        },
      };
    }
    if (format === 'model-safetensors' || format === 'optimizer-safetensors') {
      const file = join(work, `${format}.safetensors`);
      const tensors = format === 'model-safetensors'
        ? model.params.params.map((p) => ({ name: p.name, dtype: 'F32', shape: p.shape, data: weights.subarray(p.offset, p.offset + p.numel) }))
        : [{ name: 'exp_avg', dtype: 'F32', shape: [n], data: m }, { name: 'exp_avg_sq', dtype: 'F32', shape: [n], data: v }];
      await writeSafetensorsFile(file, tensors);
      const orig = fs.readFileSync(file);
      const headerLen = Number(orig.readBigUInt64LE(0));
      return {
        file, orig, names: [file],
        fields: [{ at: 0, len: 8 }, { at: 8, len: 48 }, { at: 8 + Math.floor(headerLen / 2), len: 48 }],
        // No checksum in the format: an accepted mutant keeps every dtype and shape (a data byte may differ,
        // and so may a name: the manifest and the HF loader, which expect names, refuse a renamed tensor).
        open: async () => {
          const c = await readSafetensorsFile(file);
          const layout = (ts) => ts.map((t) => `${t.dtype} [${t.shape}] ${t.data.length}`).sort().join('; ');
          const got = layout([...c.tensors.values()]);
          return got === layout(tensors) ? undefined : `tensors changed structure: ${got}`;
        },
      };
    }
    if (format === 'hf-safetensors' || format === 'hf-config') {
      const dir = join(work, 'hf');
      await exportHuggingFace(model, dir);
      const file = join(dir, format === 'hf-config' ? 'config.json' : 'model.safetensors');
      const orig = fs.readFileSync(file);
      const fields = format === 'hf-config' ? [{ at: 0, len: orig.length }] : [{ at: 0, len: 8 }, { at: 8, len: 64 }];
      // config.json holds no weights: accepted mutants load the same ones. A data byte of model.safetensors may differ.
      return { file, orig, fields, names: [file, dir], open: async () => sameModel((await loadModel(dir)).model, format === 'hf-config') };
    }
    if (format.startsWith('tf-')) {
      const dir = join(work, 'tf');
      fs.cpSync(toy, dir, { recursive: true });
      const ref = await loadModel(dir);
      const expected = ref.model.params.readAll();
      ref.model.dispose();
      const file = join(dir, { 'tf-index': 'model.ckpt.index', 'tf-data': 'model.ckpt.data-00000-of-00001', 'tf-hparams': 'hparams.json' }[format]);
      const orig = fs.readFileSync(file);
      return {
        file, orig, names: [file, dir],
        fields: [{ at: 0, len: Math.min(48, orig.length) }, { at: Math.max(0, orig.length - 48), len: 48 }],
        open: async () => {
          const got = (await loadModel(dir)).model;
          const w = got.params.readAll();
          got.dispose();
          return sameBits(w, expected) ? undefined : 'loaded different weights';
        },
      };
    }
    if (format === 'tok') {
      const ids = Array.from({ length: 200 }, (_, i) => (i * 7919) % 50257);
      const orig = Buffer.alloc(TOKEN_FILE_HEADER_BYTES + 2 * ids.length);
      orig.write(TOKEN_FILE_MAGIC, 0, 'ascii');
      orig.writeUInt32LE(1, 8);
      orig.writeBigUInt64LE(BigInt(ids.length), 12);
      ids.forEach((id, i) => orig.writeUInt16LE(id, TOKEN_FILE_HEADER_BYTES + 2 * i));
      const file = join(work, 'fuzz.tok');
      return {
        file, orig, names: [file],
        fields: [{ at: 12, len: 8 }, { at: 8, len: 4 }],
        // A flipped token byte that stays in range is indistinguishable from real data; every id must be in range.
        open: async () => {
          const f = TokenFile.open(file);
          const got = f.read(0, f.length);
          f.close();
          if (got.length !== ids.length) return `read ${got.length} tokens, not ${ids.length}`;
          return got.every((id) => id >= 0 && id < 50257) ? undefined : 'read an id beyond the vocabulary';
        },
      };
    }
    throw new Error(`unknown format ${format}`);
  } finally {
    model.dispose();
  }
}

const target = await setup();
const r = rng(Number(seedArg));
const count = Number(countArg);
const bad = [];
let refused = 0;
let slowestMs = 0;
for (let i = 0; i < count; i++) {
  process.stdout.write(`mutant ${i}\n`);
  fs.writeFileSync(target.file, mutate(target.orig, r, target.fields));
  const t0 = performance.now();
  try {
    const why = await target.open();
    if (why) bad.push(`mutant ${i} accepted: ${why}`);
  } catch (err) {
    refused++;
    const msg = err instanceof Error ? err.message : `non-Error ${String(err)}`;
    if (!(err instanceof Error)) bad.push(`mutant ${i}: threw ${msg}`);
    else if (msg.includes('\n')) bad.push(`mutant ${i}: refusal is not one line: ${JSON.stringify(msg)}`);
    else if (!target.names.some((name) => msg.includes(name))) bad.push(`mutant ${i}: refusal does not name the file: ${msg}`);
  }
  slowestMs = Math.max(slowestMs, performance.now() - t0);
}
process.stdout.write(JSON.stringify({ format, mutants: count, refused, bad: bad.slice(0, 20), maxRssBytes: process.resourceUsage().maxRSS * 1024, slowestMs }) + '\n');
