// A run directory's lifecycle, through the CLI as a user runs it
// (`node dist/cli/main.js train`): one run per directory (lock, other runs'
// checkpoints refused or --overwrite, pruning only this run's), signals and a
// dead stdout reader never losing the checkpoint, non-finite training
// stopping with the last good weights saved, and SIGKILLs during saves.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { latestCheckpoint, listCheckpoints } from '../ts/checkpoint/run-files.js';
import { loadCheckpoint, saveCheckpoint } from '../ts/checkpoint/checkpoint.js';
import { LOCK_NAME } from '../ts/checkpoint/run-dir.js';
import { TOKEN_FILE_HEADER_BYTES, TOKEN_FILE_MAGIC, TOKEN_FILE_VERSION } from '../ts/data/token-file.js';
import { textToTokenIds } from '../ts/data/tokenizer.js';
import { GPTModel } from '../ts/model/gpt.js';

const REPO = resolve(import.meta.dirname, '..');
const MAIN = join(REPO, 'dist', 'cli', 'main.js');
const TINY = [
  '--n-layers', '2', '--emb-dim', '32', '--n-heads', '4', '--context-length', '32', '--batch-size', '2', '--drop-rate', '0.1',
  '--device', 'cpu', '--eval-freq', '100000', '--eval-iter', '1',
];
/** Runs long enough to be interrupted. */
const LONG = ['--epochs', '1000', '--max-steps', '100000'];

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-lifecycle-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

interface CliResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

// npm_command=exec, as under `npx gptcuda`: the resume hints then read `npx gptcuda ...` whether the
// suite runs under npx, `npm test` or a CI script (the prefix follows how the CLI was started).
function start(args: string[], detached = false, env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [MAIN, ...args], { cwd: root, detached, env: { ...process.env, GPTCUDA_DEBUG: '', npm_command: 'exec', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

function finish(child: ChildProcess): Promise<CliResult> {
  return new Promise((res, rej) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => (stdout += d));
    child.stderr?.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code, signal) => res({ code, signal, stdout, stderr }));
  });
}

const cli = (args: string[], env: Record<string, string> = {}) => finish(start(args, false, env));

/** Resolves once the run's log shows `n` completed steps. */
async function stepsLogged(dir: string, n: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    let count = 0;
    try {
      count = fs.readFileSync(join(dir, 'log.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"event":"step"')).length;
    } catch {
      // not yet
    }
    if (count >= n) return;
    if (child.exitCode !== null) throw new Error(`train exited ${child.exitCode} before ${n} steps`);
    if (Date.now() > deadline) throw new Error(`no ${n} steps in ${dir} after 20 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A pid that is certainly not running any more. */
async function deadPid(): Promise<number> {
  const c = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => c.on('close', r));
  return c.pid!;
}

describe('one run per directory', () => {
  it('a locked directory is refused at once, naming the holder; the lock is left alone', async () => {
    const dir = join(root, 'locked');
    fs.mkdirSync(dir);
    const lock = JSON.stringify({ pid: process.pid, host: hostname(), started: new Date().toISOString() });
    fs.writeFileSync(join(dir, LOCK_NAME), lock);
    const r = await cli(['train', ...TINY, '--max-steps', '1', '--out', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`in use by another gptcuda train \\(pid ${process.pid} on host `));
    expect(fs.readFileSync(join(dir, LOCK_NAME), 'utf8')).toBe(lock);
    expect(await listCheckpoints(dir)).toEqual([]);
  });

  it('a stale lock of a dead process is taken over with a notice, and released at the end', async () => {
    const dir = join(root, 'stale');
    fs.mkdirSync(dir);
    const pid = await deadPid();
    fs.writeFileSync(join(dir, LOCK_NAME), JSON.stringify({ pid, host: hostname(), started: new Date().toISOString() }));
    const r = await cli(['train', ...TINY, '--max-steps', '1', '--out', dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`taking over the stale lock .*pid ${pid}`));
    expect(fs.existsSync(join(dir, LOCK_NAME))).toBe(false);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([1]);
  });

  it("--out at another run's directory is refused with advice; --overwrite replaces it", async () => {
    const dir = join(root, 'taken');
    expect((await cli(['train', ...TINY, '--max-steps', '2', '--out', dir])).code).toBe(0);
    const before = fs.readFileSync(join(dir, 'ckpt-step00000002.tar'));
    const r = await cli(['train', ...TINY, '--max-steps', '1', '--out', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/already holds another run's checkpoints/);
    expect(r.stderr).toContain(`--resume ${dir}`);
    expect(r.stderr).toMatch(/--overwrite/);
    expect(fs.readFileSync(join(dir, 'ckpt-step00000002.tar')).equals(before)).toBe(true);

    const o = await cli(['train', ...TINY, '--max-steps', '1', '--seed', '7', '--out', dir, '--overwrite']);
    expect(o.code, o.stderr).toBe(0);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([1]);
  });

  it("pruning deletes only this run's checkpoints", async () => {
    const other = join(root, 'prune-other');
    const dir = join(root, 'prune-mine');
    expect((await cli(['train', ...TINY, '--max-steps', '1', '--out', other])).code).toBe(0);
    expect((await cli(['train', ...TINY, '--max-steps', '2', '--seed', '5', '--out', dir])).code).toBe(0);
    // Another run's checkpoint that sorts before this run's.
    fs.copyFileSync(join(other, 'ckpt-step00000001.tar'), join(dir, 'ckpt-step00000001.tar'));
    const r = await cli(['train', '--resume', dir, '--max-steps', '4', '--save-every', '1', '--keep-checkpoints', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([1, 4]);
  });

  it('pruning keeps the last intact checkpoint when newer ones of this run are damaged, and deletes those', async () => {
    const dir = join(root, 'prune-damaged');
    expect((await cli(['train', ...TINY, '--max-steps', '6', '--save-every', '2', '--out', dir])).code).toBe(0);
    const path = (step: number) => join(dir, `ckpt-step${String(step).padStart(8, '0')}.tar`);
    // Step 6: a flipped byte in the tensor data (the quick header check passes); step 4: cut short.
    const six = fs.readFileSync(path(6));
    six[six.length - 2048] ^= 0xff;
    fs.writeFileSync(path(6), six);
    fs.truncateSync(path(4), fs.statSync(path(4)).size - 4096);
    const r = await cli(['train', '--resume', dir, '--max-steps', '3', '--save-every', '1', '--keep-checkpoints', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('at step 2');
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([3]);
    const again = await cli(['train', '--resume', dir, '--max-steps', '4']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('at step 3');
  });

  it('a train that fails before its first step leaves no directory it created', async () => {
    const dir = join(root, 'never-trained');
    const short = join(root, 'short.txt');
    fs.writeFileSync(short, 'too short');
    const r = await cli(['train', ...TINY, '--data', short, '--out', dir]);
    expect(r.code).toBe(1);
    expect(fs.existsSync(dir)).toBe(false);
  });
});

describe('signals and broken pipes never lose work', () => {
  it('SIGINT to the process group whose stdout/stderr reader died: checkpoint written, exit 130', async () => {
    const dir = join(root, 'sigint');
    const child = start(['train', ...TINY, ...LONG, '--out', dir], true);
    const done = finish(child);
    await stepsLogged(dir, 2, child);
    // As `gptcuda train 2>&1 | tee log` on Ctrl-C: the reader goes first.
    child.stdout!.destroy();
    child.stderr!.destroy();
    process.kill(-child.pid!, 'SIGINT');
    const r = await done;
    expect(r.code).toBe(130);
    const latest = await latestCheckpoint(dir);
    expect(latest?.step).toBeGreaterThanOrEqual(2);
    expect(fs.existsSync(join(dir, LOCK_NAME))).toBe(false);
  });

  it('a stdout reader that goes away without a signal (`train --json | head -1`): the run stops and writes its checkpoint', async () => {
    const dir = join(root, 'epipe');
    const child = start(['train', ...TINY, ...LONG, '--json', '--out', dir]);
    const done = finish(child);
    await stepsLogged(dir, 1, child);
    // Each step's JSON line now meets a closed pipe (EPIPE).
    child.stdout!.destroy();
    const r = await done;
    expect(r.signal, r.stderr).toBeNull();
    const latest = await latestCheckpoint(dir);
    expect(latest?.step).toBeGreaterThanOrEqual(1);
    (await loadCheckpoint(latest!.path)).model.dispose();
    expect(fs.existsSync(join(dir, LOCK_NAME))).toBe(false);
  });

  it.each([['SIGTERM', 143], ['SIGHUP', 129]] as const)('%s: checkpoint written, exit %i', async (sig, code) => {
    const dir = join(root, sig.toLowerCase());
    const child = start(['train', ...TINY, ...LONG, '--out', dir]);
    const done = finish(child);
    await stepsLogged(dir, 1, child);
    child.kill(sig);
    const r = await done;
    expect(r.code, r.stderr).toBe(code);
    expect((await latestCheckpoint(dir))?.step).toBeGreaterThanOrEqual(1);
  });
});

describe('non-finite training', () => {
  it('stops naming the step and what was non-finite, with the last good weights saved', async () => {
    const dir = join(root, 'nan');
    const r = await cli(['train', ...TINY, '--max-steps', '20', '--save-every', '1', '--lr', '1e6', '--out', dir]);
    expect(r.code).toBe(1);
    const m = /training stopped at step (\d+): (loss|gradient norm) is (NaN|-?Infinity)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const step = Number(m![1]);
    const latest = await latestCheckpoint(dir);
    expect(latest?.step).toBe(step);
    expect(r.stderr).toContain(latest!.path);
    // Loading refuses NaN/Inf weights by default: these are good.
    const ck = await loadCheckpoint(latest!.path);
    expect(ck.trainState?.step).toBe(step);
    ck.model.dispose();
  });

  it('--skip-nonfinite skips such updates and finishes', async () => {
    const dir = join(root, 'nan-skip');
    const r = await cli(['train', ...TINY, '--epochs', '1', '--max-steps', '4', '--lr', '1e6', '--skip-nonfinite', '--out', dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/update skipped \(--skip-nonfinite\)/);
    const ck = await loadCheckpoint((await latestCheckpoint(dir))!.path);
    ck.model.dispose();
  });
});

/** A token file of `ids`, written here byte by byte (not by the code under test). */
function writeTokenFile(path: string, ids: number[]): void {
  const b = Buffer.alloc(TOKEN_FILE_HEADER_BYTES + 2 * ids.length);
  b.write(TOKEN_FILE_MAGIC, 0, 'latin1');
  b.writeUInt32LE(TOKEN_FILE_VERSION, 8);
  b.writeBigUInt64LE(BigInt(ids.length), 12);
  ids.forEach((id, i) => b.writeUInt16LE(id, TOKEN_FILE_HEADER_BYTES + 2 * i));
  fs.writeFileSync(path, b);
}

/** A 2-layer checkpoint whose vocabulary (1000) is smaller than GPT-2's, so GPT-2 ids can be out of its range. */
async function vocab1000Weights(): Promise<string> {
  const weights = join(root, 'vocab-1000.tar');
  if (fs.existsSync(weights)) return weights;
  const model = new GPTModel({ vocabSize: 1000, contextLength: 32, embDim: 32, nHeads: 4, nLayers: 2, dropRate: 0, qkvBias: false, tieWeights: false, init: 'gpt2' }, { device: 'cpu', seed: 1 });
  await saveCheckpoint(weights, { model });
  model.dispose();
  return weights;
}
const VOCAB_1000_RUN = ['--context-length', '32', '--batch-size', '2', '--no-shuffle', '--max-steps', '10', '--device', 'cpu', '--eval-freq', '100000', '--eval-iter', '1'];

describe('a token id beyond the model vocabulary', () => {
  it('in a .tok file: refused when the file is opened, before training, naming the file and token offset', async () => {
    const dir = join(root, 'bad-token');
    // GPT-2's tokenizer made the file, so its ids pass the file's own check; this model's vocabulary is smaller.
    const ids = Array.from({ length: 400 }, (_, i) => (i * 37) % 1000);
    ids[200] = 5000;
    const tok = join(root, 'bad-token.tok');
    writeTokenFile(tok, ids);
    const r = await cli(['train', '--init-from', await vocab1000Weights(), '--data', tok, ...VOCAB_1000_RUN, '--out', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`gptcuda: ${tok}: token 200 (byte offset ${TOKEN_FILE_HEADER_BYTES + 400}) is id 5000, not below the vocabulary size 1000`);
    expect(r.stdout).not.toMatch(/Step|loss/);
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('deep in a text corpus: one line naming the file and token offset, with the last completed step saved', async () => {
    const dir = join(root, 'bad-text-token');
    // Words GPT-2 encodes below id 1000, then one it does not, at token 200: step 3's batch reads it first
    // (windows of 33 tokens every 32, batches of 2, in order).
    const common = [' the', ' a', ' and', ' to', ' of', ' in'];
    const words = Array.from({ length: 400 }, (_, i) => common[i % common.length]!);
    words[200] = ' house';
    const ids = textToTokenIds(words.join(''));
    expect(ids.findIndex((id) => id >= 1000)).toBe(200);
    const text = join(root, 'bad-token.txt');
    fs.writeFileSync(text, words.join(''));
    const r = await cli(['train', '--init-from', await vocab1000Weights(), '--data', text, ...VOCAB_1000_RUN, '--out', dir]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toContain(`token 200 of the training split of ${text} is id ${ids[200]}, not below the model's vocabulary size 1000`);
    const latest = await latestCheckpoint(dir);
    expect(latest?.step).toBe(3);
    expect(lines[0]).toMatch(new RegExp(`; the checkpoint of step 3 \\(the last completed\\) was written to ${latest!.path}; resume with: (npx )?gptcuda train --resume ${dir}$`));
    const ck = await loadCheckpoint(latest!.path);
    expect(ck.trainState?.step).toBe(3);
    expect(ck.trainState?.tokensSeen).toBe(3 * 2 * 32);
    ck.model.dispose();
  });
});

describe('the disk refuses a save (GPTCUDA_TEST_FAIL_WRITE, a test-only fault injection)', () => {
  /** Parameters of the TINY model, counted here from its shapes. */
  const tinyParameters = () =>
    GPTModel.parameterSpecs({ vocabSize: 50257, contextLength: 32, embDim: 32, nHeads: 4, nLayers: 2, dropRate: 0.1, qkvBias: false, tieWeights: false, init: 'pytorch' })
      .reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  const ckpt = (dir: string, step: number) => join(dir, `ckpt-step${String(step).padStart(8, '0')}.tar`);
  const noTemps = (dir: string) => expect(fs.readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);

  it('ENOSPC after the first step: one line naming the file and its exact size; no partial file; step 1 intact and resumable', async () => {
    const dir = join(root, 'enospc');
    // Weights and two AdamW moments of 4 bytes: the disk fills up halfway through the second checkpoint.
    const limit = Math.floor(1.5 * 12 * tinyParameters());
    const r = await cli(['train', ...TINY, '--max-steps', '3', '--save-every', '1', '--out', dir], { GPTCUDA_TEST_FAIL_WRITE: `ENOSPC:${limit}` });
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.includes('ckpt-step'));
    expect(lines, r.stderr).toHaveLength(1);
    const m = new RegExp(`^gptcuda: cannot write ${ckpt(dir, 2)}: no space left on the device \\(ENOSPC\\); the file needs (\\d+) bytes free in ${dir};`).exec(lines[0]!);
    expect(m, lines[0]).not.toBeNull();
    expect(lines[0]).toMatch(new RegExp(`; the last checkpoint is ${ckpt(dir, 1)} \\(step 1\\); resume with: (npx )?gptcuda train --resume ${dir}$`));
    noTemps(dir);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([1]);
    (await loadCheckpoint(ckpt(dir, 1))).model.dispose();

    const again = await cli(['train', '--resume', dir, '--save-every', '1']);
    expect(again.code, again.stderr).toBe(0);
    // The same step-2 checkpoint, written now that the disk has room, has exactly the size the error named.
    expect(fs.statSync(ckpt(dir, 2)).size).toBe(Number(m![1]));
  });

  it('EROFS: one line saying the directory is read-only and suggesting --out elsewhere; the run continues there', async () => {
    const dir = join(root, 'erofs');
    expect((await cli(['train', ...TINY, '--max-steps', '1', '--out', dir])).code).toBe(0);
    const r = await cli(['train', '--resume', dir, '--max-steps', '3', '--save-every', '1'], { GPTCUDA_TEST_FAIL_WRITE: 'EROFS:0' });
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.includes('ckpt-step'));
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]!.replace('npx gptcuda', 'gptcuda')).toBe(
      `gptcuda: cannot write ${ckpt(dir, 2)}: the directory ${dir} is on a read-only filesystem (EROFS); nothing was written there, write to another directory; ` +
        `the last checkpoint is ${ckpt(dir, 1)} (step 1); resume with: gptcuda train --resume ${dir} --out <a writable directory>`,
    );
    noTemps(dir);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([1]);
    // Resumed from a checkpoint outside --out: the hint resumes from that checkpoint, not from the empty --out.
    const fromFile = await cli(['train', '--resume', ckpt(dir, 1), '--out', join(root, 'erofs-too'), '--max-steps', '3', '--save-every', '1'], { GPTCUDA_TEST_FAIL_WRITE: 'EROFS:0' });
    expect(fromFile.code).toBe(1);
    expect(fromFile.stderr.trim().replace('npx gptcuda', 'gptcuda')).toMatch(
      new RegExp(`; the last checkpoint is ${ckpt(dir, 1)} \\(step 1\\); resume with: gptcuda train --resume ${ckpt(dir, 1)} --out <a writable directory>$`),
    );
    const elsewhere = join(root, 'erofs-elsewhere');
    const moved = await cli(['train', '--resume', dir, '--out', elsewhere, '--max-steps', '3']);
    expect(moved.code, moved.stderr).toBe(0);
    expect((await listCheckpoints(elsewhere)).map((c) => c.step)).toEqual([3]);
  });
});

describe('kill -9 during saves', () => {
  it('10 SIGKILLs with --save-every 1: each time the directory resumes from its newest intact checkpoint', async () => {
    const dir = join(root, 'kill9');
    let lastStep = 0;
    for (let i = 0; i < 10; i++) {
      const args = i === 0 ? ['train', ...TINY, ...LONG, '--save-every', '1', '--out', dir] : ['train', '--resume', dir, '--save-every', '1'];
      const child = start(args);
      const done = finish(child);
      const stepsBefore = i === 0 ? 0 : fs.readFileSync(join(dir, 'log.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"event":"step"')).length;
      // A step is logged before its checkpoint is saved: two steps mean one checkpoint done.
      await stepsLogged(dir, stepsBefore + 2, child);
      await new Promise((r) => setTimeout(r, Math.random() * 400));
      child.kill('SIGKILL');
      const r = await done;
      expect(r.signal, r.stderr).toBe('SIGKILL');
      const latest = await latestCheckpoint(dir, { onWarning: () => undefined });
      expect(latest, `after kill ${i + 1}`).not.toBeNull();
      expect(latest!.step).toBeGreaterThanOrEqual(lastStep);
      lastStep = latest!.step;
    }
    const r = await cli(['train', '--resume', dir, '--max-steps', String(lastStep + 1)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`at step ${lastStep}`);
    expect(fs.readdirSync(dir).filter((n) => n.includes('.tmp-'))).toEqual([]);
    expect(fs.existsSync(join(dir, LOCK_NAME))).toBe(false);
  }, 120_000);
});
