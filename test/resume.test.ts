// The checkpoint acceptance test: a run of N+M optimizer updates and a run of
// N updates resumed for M more give the same losses and the same final
// weights on the CPU, bit for bit, with dropout (drop rate 0.1) and shuffling
// on. Checked through the library (Trainer + saveCheckpoint / loadCheckpoint +
// restore) and through the CLI (`train --json`, then `train --resume`),
// including a resume that crosses an epoch boundary, one at the boundary, one
// with gradient accumulation whose epoch ends in a partial update, and one
// after SIGINT. Negative controls show the comparison catches a wrong dropout
// counter or data position. Also: --keep-checkpoints pruning, and loading a
// damaged or foreign checkpoint fails with a clear error.
//
// Everything uses a tiny model (2 layers, width 32, context 32, batch 2) on
// the bundled the-verdict.txt; its cost is the 50,257-token output head.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CheckpointError, readCheckpointArchive, writeCheckpointArchive, type CheckpointArchive } from '../ts/checkpoint/archive.js';
import { listCheckpoints } from '../ts/checkpoint/run-files.js';
import { loadCheckpoint, saveCheckpoint } from '../ts/checkpoint/checkpoint.js';
import { createLoaders } from '../ts/data/loader.js';
import { loadText } from '../ts/data/text.js';
import { resolveConfig, type GPTConfig } from '../ts/model/config.js';
import { GPTModel } from '../ts/index.js';
import { BOOK_ADAMW } from '../ts/train/optimizer.js';
import { Trainer, type TrainEvent, type TrainOptions, type TrainState } from '../ts/train/trainer.js';
import { spawnCli, type CliResult } from './helpers/cli.js';

const REPO = resolve(import.meta.dirname, '..');
const MAIN = join(REPO, 'dist', 'cli', 'main.js');
const TEXT = loadText(join(REPO, 'data', 'the-verdict.txt'));
const SEED = 123;

let root: string;
let counter = 0;
const tmp = (name: string): string => join(root, `${counter++}-${name}`);

beforeAll(() => {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npx tsc -p tsconfig.json\` first`);
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-resume-test-'));
});
afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Comparison helpers

/** Asserts two float arrays are identical bit for bit, reporting where they are not. */
function expectSameBits(actual: ArrayBufferView, expected: ArrayBufferView, what: string): void {
  expect(actual.byteLength, `${what}: size`).toBe(expected.byteLength);
  const a = new Uint32Array(actual.buffer.slice(actual.byteOffset, actual.byteOffset + actual.byteLength));
  const b = new Uint32Array(expected.buffer.slice(expected.byteOffset, expected.byteOffset + expected.byteLength));
  let differing = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      differing++;
    }
  }
  expect(differing, `${what}: ${differing} of ${a.length} words differ (first at index ${first})`).toBe(0);
}

/** How many 32-bit words differ (for the negative controls). */
function countDiffering(x: Float32Array, y: Float32Array): number {
  const a = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const b = new Uint32Array(y.buffer, y.byteOffset, y.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

// ---------------------------------------------------------------------------
// Library runs

const CONFIG: GPTConfig = resolveConfig(undefined, { contextLength: 32, embDim: 32, nLayers: 2, nHeads: 4, dropRate: 0.1 });

interface Setup {
  /** 0.9: 72 batches per epoch; 0.1: 7 batches per epoch (epoch boundaries within a few updates). */
  trainRatio: number;
  gradAccum: number;
}

function makeOptions(setup: Setup, maxSteps: number): TrainOptions {
  return {
    epochs: 10,
    maxSteps,
    optimizer: { ...BOOK_ADAMW },
    gradAccum: setup.gradAccum,
    evalFreq: 3,
    evalIter: 2,
    samplePrompt: 'Every effort moves you',
    sampleTokens: 4,
  };
}

function makeLoaders(setup: Setup) {
  return createLoaders({ text: TEXT, trainRatio: setup.trainRatio, contextLength: 32, batchSize: 2, shuffle: true, seed: SEED });
}

interface RunResult {
  /** step and eval events (sample events differ legitimately: a run that stops samples). */
  events: TrainEvent[];
  weights: Float32Array;
  m: Float32Array;
  v: Float32Array;
  optimizerStep: number;
  state: TrainState;
  dropoutCounter: number;
}

/**
 * Runs `trainer` to its end. `saveTo` gets the checkpoint written at the end
 * of the run; `saveAt` ones written mid-run, as `--save-every` does.
 */
async function runTrainer(trainer: Trainer, saveTo?: string, saveAt?: { step: number; path: string }): Promise<RunResult> {
  const events: TrainEvent[] = [];
  await trainer.run({
    onEvent: (e) => {
      if (e.event !== 'sample') events.push(structuredClone(e));
    },
    saveEvery: saveAt?.step,
    onCheckpoint: async (t, reason) => {
      const path = reason === 'interval' ? (t.state.step === saveAt?.step ? saveAt.path : undefined) : saveTo;
      if (!path) return;
      await saveCheckpoint(path, {
        model: t.model,
        optimizer: { step: t.optimizer.step, m: t.optimizer.m.toFloat32Array(), v: t.optimizer.v.toFloat32Array(), hyper: t.options.optimizer },
        train: { state: t.state, options: t.options, seed: SEED, loaderConfig: {} }, // the test rebuilds its loaders itself
      });
    },
  });
  const result: RunResult = {
    events,
    weights: trainer.model.params.readAll(),
    m: trainer.optimizer.m.toFloat32Array(),
    v: trainer.optimizer.v.toFloat32Array(),
    optimizerStep: trainer.optimizer.step,
    state: structuredClone(trainer.state),
    dropoutCounter: trainer.model.dropoutCounter,
  };
  trainer.model.dispose();
  trainer.optimizer.dispose();
  return result;
}

/** A fresh run of `steps` updates, optionally checkpointed at the end and mid-run. */
async function freshRun(setup: Setup, steps: number, saveTo?: string, saveAt?: { step: number; path: string }): Promise<RunResult> {
  const loaders = makeLoaders(setup);
  const model = new GPTModel(CONFIG, { seed: SEED });
  return runTrainer(new Trainer(model, loaders.train, loaders.val, makeOptions(setup, steps)), saveTo, saveAt);
}

/** Loads `path` from disk into a brand-new Trainer and trains until `totalSteps`. */
async function resumedRun(setup: Setup, path: string, totalSteps: number, perturb?: (s: TrainState) => void): Promise<RunResult> {
  const ck = await loadCheckpoint(path);
  expect(ck.trainState, 'checkpoint has a trainer state').not.toBeNull();
  expect(ck.trainOptions, 'checkpoint has trainer options').not.toBeNull();
  expect(ck.optimizer, 'checkpoint has optimizer moments').not.toBeNull();
  const loaders = makeLoaders(setup);
  const trainer = new Trainer(ck.model, loaders.train, loaders.val, { ...ck.trainOptions!, maxSteps: totalSteps });
  trainer.optimizer.m.write(ck.optimizer!.m);
  trainer.optimizer.v.write(ck.optimizer!.v);
  const state = structuredClone(ck.trainState!);
  perturb?.(state);
  trainer.restore(state, ck.optimizer!.step);
  return runTrainer(trainer);
}

function expectSameRun(resumed: RunResult, first: RunResult, reference: RunResult): void {
  expect([...first.events, ...resumed.events]).toEqual(reference.events);
  expectSameBits(resumed.weights, reference.weights, 'final weights');
  expectSameBits(resumed.m, reference.m, 'AdamW first moment');
  expectSameBits(resumed.v, reference.v, 'AdamW second moment');
  expect(resumed.optimizerStep).toBe(reference.optimizerStep);
  expect(resumed.dropoutCounter).toBe(reference.dropoutCounter);
  expect(resumed.state).toEqual(reference.state);
}

const stepLosses = (r: RunResult) => r.events.filter((e) => e.event === 'step').map((e) => (e as { loss: number }).loss);

describe('resume through the library (Trainer + saveCheckpoint/loadCheckpoint + restore)', () => {
  const main: Setup = { trainRatio: 0.9, gradAccum: 1 };
  const short: Setup = { trainRatio: 0.1, gradAccum: 1 };
  let mainRef: RunResult;
  let mainFirst: RunResult;
  let mainCkpt: string;

  beforeAll(async () => {
    mainCkpt = tmp('lib-main-3.tar');
    mainRef = await freshRun(main, 6);
    mainFirst = await freshRun(main, 3, mainCkpt);
  });

  it('the setting really has dropout and shuffling on', () => {
    expect(CONFIG.dropRate).toBeGreaterThan(0);
    const loaders = makeLoaders(main);
    expect(loaders.train.shuffle).toBe(true);
    const order = Array.from(loaders.train.epochOrder());
    expect(order).not.toEqual(order.map((_, i) => i));
    expect(mainRef.dropoutCounter).toBe(6); // one training forward per micro-batch
    expect(mainRef.events.filter((e) => e.event === 'step')).toHaveLength(6);
    expect(mainRef.events.filter((e) => e.event === 'eval').map((e) => e.step)).toEqual([0, 3]);
  });

  it('3 + 3 updates equal 6 updates bit for bit', async () => {
    const resumed = await resumedRun(main, mainCkpt, 6);
    expectSameRun(resumed, mainFirst, mainRef);
  });

  it('the comparison catches a wrong dropout counter or a wrong data position', async () => {
    // One update after the resume is enough to tell.
    const expected = stepLosses(mainRef)[3];
    const right = await resumedRun(main, mainCkpt, 4);
    expect(stepLosses(right)).toEqual([expected]);
    const wrongDropout = await resumedRun(main, mainCkpt, 4, (s) => {
      s.dropoutCounter += 1;
    });
    expect(stepLosses(wrongDropout)).toHaveLength(1);
    expect(stepLosses(wrongDropout)).not.toEqual([expected]);
    const wrongPosition = await resumedRun(main, mainCkpt, 4, (s) => {
      s.loader = { ...s.loader, batchIndex: s.loader.batchIndex + 1 };
    });
    expect(stepLosses(wrongPosition)).toHaveLength(1);
    expect(stepLosses(wrongPosition)).not.toEqual([expected]);
  });

  describe('epoch boundaries (7 batches per epoch)', () => {
    let ref: RunResult;
    let first: RunResult;
    let atEpochEnd: string;
    let midEpoch: string;
    beforeAll(async () => {
      ref = await freshRun(short, 10);
      // One run of 7 updates: checkpointed mid-run at 5 (as --save-every does) and at its end, the end of epoch 1.
      atEpochEnd = tmp('lib-short-7.tar');
      midEpoch = tmp('lib-short-5.tar');
      first = await freshRun(short, 7, atEpochEnd, { step: 5, path: midEpoch });
    });

    it('a resume mid-epoch (from a mid-run checkpoint) that crosses into the next epoch', async () => {
      expect((await loadCheckpoint(midEpoch)).trainState).toMatchObject({ step: 5, epoch: 0, loader: { epoch: 0, batchIndex: 5 } });
      const resumed = await resumedRun(short, midEpoch, 10);
      expect(resumed.state.epoch).toBe(1);
      expect(resumed.events.filter((e) => e.event === 'step').map((e) => (e as { epoch: number }).epoch)).toEqual([1, 1, 2, 2, 2]);
      expectSameRun(resumed, { ...first, events: first.events.filter((e) => e.step < 5) }, ref);
    });

    it('a resume from a checkpoint written exactly at the end of an epoch', async () => {
      expect(first.state).toMatchObject({ step: 7, epoch: 1, loader: { epoch: 1, batchIndex: 0 } });
      const resumed = await resumedRun(short, atEpochEnd, 10);
      expectSameRun(resumed, first, ref);
    });
  });

  it('with --grad-accum 2, resuming right before an epoch-ending partial update', async () => {
    // 7 batches per epoch and 2 per update: updates of 2, 2, 2 and 1 batches.
    const accum: Setup = { trainRatio: 0.1, gradAccum: 2 };
    const ref = await freshRun(accum, 6);
    expect(ref.dropoutCounter).toBe(11); // 7 + 4 micro-batches
    const path = tmp('lib-accum-3.tar');
    const first = await freshRun(accum, 3, path);
    expect(first.state.loader.batchIndex).toBe(6);
    const resumed = await resumedRun(accum, path, 6);
    expectSameRun(resumed, first, ref);
  });
});

// ---------------------------------------------------------------------------
// CLI runs

const TINY_FLAGS = [
  '--n-layers', '2', '--emb-dim', '32', '--n-heads', '4', '--context-length', '32', '--batch-size', '2', '--drop-rate', '0.1',
  // 7 training batches per epoch, so runs of a few updates cross epoch boundaries.
  '--train-ratio', '0.1',
  '--eval-freq', '3', '--eval-iter', '2', '--device', 'cpu', '--seed', String(SEED),
];


const cli = (args: string[]): Promise<CliResult> => spawnCli(args, { cwd: root });

async function cliOk(args: string[]): Promise<CliResult> {
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`gptcuda ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return r;
}

type JsonEvent = Record<string, unknown> & { event: string };
const jsonLines = (stdout: string): JsonEvent[] =>
  stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as JsonEvent);
/** The events that must match between runs: updates and evaluations. */
const trainingEvents = (events: JsonEvent[]) => events.filter((e) => e.event === 'step' || e.event === 'eval');

async function finalCheckpoint(runDir: string, step: number): Promise<CheckpointArchive> {
  const list = await listCheckpoints(runDir);
  const last = list[list.length - 1];
  expect(last?.step, `latest checkpoint in ${runDir}`).toBe(step);
  return readCheckpointArchive(last!.path);
}

/** Weights, moments and trainer state of two checkpoints are identical. */
function expectSameCheckpoint(actual: CheckpointArchive, expected: CheckpointArchive): void {
  expect([...actual.files.keys()].sort()).toEqual(['model.safetensors', 'optimizer.safetensors']);
  expect([...actual.files.keys()].sort()).toEqual([...expected.files.keys()].sort());
  for (const [file, tensors] of expected.files) {
    const got = actual.files.get(file)!;
    expect([...got.keys()]).toEqual([...tensors.keys()]);
    for (const [name, t] of tensors) expectSameBits(got.get(name)!.data, t.data, `${file}:${name}`);
  }
  // Same bytes in the manifest's checksums too (a cheap double check).
  expect(actual.manifest.tensors).toEqual(expected.manifest.tensors);
  for (const key of ['step', 'epoch', 'tokens_seen', 'dropout', 'optimizer', 'train_state', 'config'])
    expect(actual.manifest[key], `manifest.${key}`).toEqual(expected.manifest[key]);
}

describe('resume through the CLI (train --json, then train --resume)', () => {
  let refDir: string;
  let refEvents: JsonEvent[];
  let refFinal: CheckpointArchive;
  let firstDir: string;
  let firstRun: CliResult;

  beforeAll(async () => {
    refDir = tmp('cli-ref');
    firstDir = tmp('cli-5');
    // The uninterrupted run and the first part of the resumed one, side by side.
    // --save-every 4 --keep-checkpoints 2: steps 4, 8 and 10 are written, two remain.
    let refRun: CliResult;
    [refRun, firstRun] = await Promise.all([
      cliOk(['train', ...TINY_FLAGS, '--max-steps', '10', '--save-every', '4', '--keep-checkpoints', '2', '--out', refDir, '--json']),
      cliOk(['train', ...TINY_FLAGS, '--max-steps', '5', '--out', firstDir, '--json']),
    ]);
    refEvents = jsonLines(refRun.stdout);
    refFinal = await finalCheckpoint(refDir, 10);
  });

  it('the uninterrupted run: 10 updates over two epochs, --keep-checkpoints prunes to 2', async () => {
    const steps = refEvents.filter((e) => e.event === 'step');
    expect(steps.map((e) => e.step)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(steps.map((e) => e.epoch)).toEqual([1, 1, 1, 1, 1, 1, 1, 2, 2, 2]);
    expect(refEvents.filter((e) => e.event === 'checkpoint').map((e) => e.step)).toEqual([4, 8, 10]);
    expect((await listCheckpoints(refDir)).map((c) => c.name)).toEqual(['ckpt-step00000008.tar', 'ckpt-step00000010.tar']);
    expect(fs.readdirSync(refDir).filter((n) => n.endsWith('.tar')).sort()).toEqual(['ckpt-step00000008.tar', 'ckpt-step00000010.tar']);
  });

  it('5 updates, then --resume <run-dir> to 10 (crossing the epoch boundary) gives the same losses and weights', async () => {
    const dir = firstDir;
    const first = jsonLines(firstRun.stdout);
    expect(first.filter((e) => e.event === 'step').map((e) => e.step)).toEqual([0, 1, 2, 3, 4]);
    expect(first[first.length - 1]).toMatchObject({ event: 'done', steps: 5, stopped_early: false });
    const second = jsonLines((await cliOk(['train', '--resume', dir, '--max-steps', '10', '--json'])).stdout);
    expect(second[0]).toMatchObject({ event: 'start', step: 5, resumed_from: join(dir, 'ckpt-step00000005.tar') });
    expect(second.filter((e) => e.event === 'step').map((e) => e.epoch)).toEqual([1, 1, 2, 2, 2]);
    expect(trainingEvents([...first, ...second])).toEqual(trainingEvents(refEvents));
    expectSameCheckpoint(await finalCheckpoint(dir, 10), refFinal);
  });

  it('--grad-accum 2: 3 updates, then --resume <checkpoint> to 6 gives the same losses and weights', async () => {
    const accum = ['--grad-accum', '2'];
    const ref = tmp('cli-accum-ref');
    const dir = tmp('cli-accum-3');
    const [refOut, firstOut] = await Promise.all([
      cliOk(['train', ...TINY_FLAGS, ...accum, '--max-steps', '6', '--out', ref, '--json']),
      cliOk(['train', ...TINY_FLAGS, ...accum, '--max-steps', '3', '--out', dir, '--json']),
    ]);
    const refRun = jsonLines(refOut.stdout);
    // 7 batches per epoch: updates of 2, 2, 2 and 1 micro-batches, 64 tokens each.
    expect(refRun.filter((e) => e.event === 'step').map((e) => [e.epoch, e.tokens_seen])).toEqual([
      [1, 128], [1, 256], [1, 384], [1, 448], [2, 576], [2, 704],
    ]);
    const first = jsonLines(firstOut.stdout);
    const out = tmp('cli-accum-resumed');
    const second = jsonLines((await cliOk(['train', '--resume', join(dir, 'ckpt-step00000003.tar'), '--out', out, '--max-steps', '6', '--json'])).stdout);
    expect(trainingEvents([...first, ...second])).toEqual(trainingEvents(refRun));
    expectSameCheckpoint(await finalCheckpoint(out, 6), await finalCheckpoint(ref, 6));
  });

  /** Starts a long run, sends SIGINT once its first update is logged, and waits for the exit. */
  async function interrupted(dir: string, extra: string[]): Promise<CliResult & { log: JsonEvent[] }> {
    const child = spawn(process.execPath, [MAIN, 'train', ...TINY_FLAGS, '--max-steps', '1000', '--out', dir, ...extra], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
    const log = join(dir, 'log.jsonl');
    const deadline = Date.now() + 60_000;
    while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('"event":"step"'))) {
      if (Date.now() > deadline || child.exitCode !== null) {
        child.kill('SIGKILL');
        throw new Error(`training did not start:\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGINT');
    const code = await exited;
    return { code, stdout, stderr, log: fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as JsonEvent) };
  }

  it('SIGINT: finishes the update, checkpoints, exits 130 (as a shell reports SIGINT) saying how to resume; resuming reaches the same weights', async () => {
    const dir = tmp('cli-sigint');
    const jsonDir = tmp('cli-sigint-json');
    const [text, json] = await Promise.all([interrupted(dir, []), interrupted(jsonDir, ['--json'])]);

    // Text mode: the notice and the resume command on stdout.
    expect(text.code, text.stderr).toBe(130);
    expect(text.stdout).toMatch(/SIGINT: finishing this step and writing a checkpoint/);
    // The hint is written the way the tool was started (here `node …/main.js`).
    expect(text.stdout).toMatch(/resume with: \S.* train --resume /);
    expect(text.stdout).toContain(`train --resume ${dir}`);
    const ckpts = await listCheckpoints(dir);
    expect(ckpts).toHaveLength(1);
    const k = ckpts[0]!.step;
    expect(k).toBeGreaterThanOrEqual(1);
    expect(text.log.filter((e) => e.event === 'step')).toHaveLength(k);
    expect(text.log[text.log.length - 1]).toMatchObject({ event: 'done', steps: k, stopped_early: true });

    // --json: stdout stays pure JSON lines; the notice and the resume command go to stderr.
    expect(json.code, json.stderr).toBe(130);
    const events = jsonLines(json.stdout);
    const jsonCkpts = await listCheckpoints(jsonDir);
    expect(jsonCkpts).toHaveLength(1);
    expect(events.filter((e) => e.event === 'checkpoint').map((e) => e.path)).toEqual([jsonCkpts[0]!.path]);
    expect(events[events.length - 1]).toMatchObject({ event: 'done', steps: jsonCkpts[0]!.step, stopped_early: true });
    expect(json.stderr).toMatch(/SIGINT/);
    expect(json.stderr).toContain(`--resume ${jsonDir}`);

    // Continue to the reference run's 10 updates (or further, should the
    // interrupt have come late, against a fresh uninterrupted run).
    const total = Math.max(10, k + 2);
    let expectedEvents = refEvents;
    let expectedFinal = refFinal;
    if (total !== 10) {
      const ref = tmp('cli-sigint-ref');
      expectedEvents = jsonLines((await cliOk(['train', ...TINY_FLAGS, '--max-steps', String(total), '--out', ref, '--json'])).stdout);
      expectedFinal = await finalCheckpoint(ref, total);
    }
    const resumed = jsonLines((await cliOk(['train', '--resume', dir, '--max-steps', String(total), '--json'])).stdout);
    expect(trainingEvents([...text.log, ...resumed])).toEqual(trainingEvents(expectedEvents));
    expectSameCheckpoint(await finalCheckpoint(dir, total), expectedFinal);
  });
});

// ---------------------------------------------------------------------------
// Damaged and foreign checkpoints

describe('loading a bad checkpoint fails clearly and returns nothing', () => {
  const SMALL: GPTConfig = { vocabSize: 64, contextLength: 8, embDim: 8, nHeads: 2, nLayers: 1, dropRate: 0.1, qkvBias: false, tieWeights: false };
  let good: string;

  beforeAll(async () => {
    good = tmp('small.tar');
    const model = new GPTModel(SMALL, { seed: 1 });
    await model.save(good);
    model.dispose();
  });

  /** Both entry points reject with a message matching every pattern. */
  async function expectRejected(path: string, ...patterns: RegExp[]): Promise<void> {
    for (const load of [() => loadCheckpoint(path), () => GPTModel.load(path)]) {
      let result: unknown;
      let error: unknown;
      try {
        result = await load();
      } catch (e) {
        error = e;
      }
      expect(result, 'nothing is returned').toBeUndefined();
      expect(error).toBeInstanceOf(Error);
      for (const p of patterns) expect((error as Error).message).toMatch(p);
    }
  }

  it('the intact checkpoint loads (the baseline for the cases below)', async () => {
    const ck = await loadCheckpoint(good);
    expect(ck.model.config).toEqual({ ...SMALL, init: SMALL.init ?? 'gpt2' });
    ck.model.dispose();
    const m = await GPTModel.load(good);
    expect(m.numParameters).toBeGreaterThan(0);
    m.dispose();
  });

  it('tensor shapes that do not match the manifest config', async () => {
    const archive = await readCheckpointArchive(good);
    const path = tmp('shape-mismatch.tar');
    const config = { ...(archive.manifest.config as Record<string, unknown>), context_length: 16 };
    await writeCheckpointArchive(path, {
      manifest: { ...archive.manifest, config },
      files: [...archive.files].map(([name, tensors]) => ({ name, tensors: [...tensors.values()] })),
    });
    await expectRejected(path, /pos_emb\.weight/, /shape \[8,8\]/, /\[16,8\]/);
  });

  it('an unknown or newer format version', async () => {
    const bytes = fs.readFileSync(good);
    const text = bytes.toString('latin1');
    const field = '"format_version": 1';
    expect(text).toContain(field);
    const newer = tmp('newer.tar');
    fs.writeFileSync(newer, Buffer.from(text.replace(field, '"format_version": 7'), 'latin1'));
    await expectRejected(newer, /format version 7 is newer/, /upgrade gptcuda/);
    const unknown = tmp('unknown.tar');
    fs.writeFileSync(unknown, Buffer.from(text.replace('"format": "gptcuda-checkpoint"', '"format": "gptcuda-checkpoinX"'), 'latin1'));
    await expectRejected(unknown, /not a gptcuda checkpoint/);
    await expect(loadCheckpoint(newer)).rejects.toBeInstanceOf(CheckpointError);
  });

  it('a truncated file', async () => {
    const bytes = fs.readFileSync(good);
    for (const keep of [Math.floor(bytes.length / 2), bytes.length - 1024 - 100, 700]) {
      const path = tmp(`truncated-${keep}.tar`);
      fs.writeFileSync(path, bytes.subarray(0, keep));
      await expectRejected(path, /truncated|cut short|incomplete/i);
    }
  });

  it('a file that is not a tar archive', async () => {
    const path = tmp('not-a-tar.tar');
    fs.writeFileSync(path, Buffer.alloc(4096, 'not a checkpoint\n'));
    let error: unknown;
    await loadCheckpoint(path).catch((e: unknown) => (error = e));
    expect(error).toBeInstanceOf(CheckpointError);
    expect((error as CheckpointError).code).toBe('NOT_TAR');
    expect((error as Error).message).toMatch(/not a gptcuda checkpoint \(not a tar archive\)/);
    // GPTModel.load detects the format first and names what it expected.
    await expect(GPTModel.load(path)).rejects.toThrow(/unrecognised weights file/);
  });
});
