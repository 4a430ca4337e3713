// Issue 11: seeded mutants of every on-disk format (byte flips, truncations,
// runs of 0xff, scribbled length fields and headers) either load exactly the
// original content (or, for formats without checksums, its structure) or are
// refused with a one-line Error naming the file. Each format runs in a child
// process (test/helpers/fuzz-parsers-child.mjs), so that a signal exit, a
// mutant that hangs, or the peak memory of the parsing is seen.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../ts/tensor/native.js';

const MUTANTS = 300;
/** A mutant slower than this counts as a hang. */
const HANG_MS = 30_000;
const MAX_RSS_BYTES = 1 << 30;
const CHILD = join(PACKAGE_ROOT, 'test', 'helpers', 'fuzz-parsers-child.mjs');
const TOY = join(PACKAGE_ROOT, 'test', 'fixtures', 'tf', 'keras-gpt2-toy');
const root = mkdtempSync(join(tmpdir(), 'gptcuda-fuzz-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface Report { format: string; mutants: number; refused: number; bad: string[]; maxRssBytes: number; slowestMs: number }

/** Runs the child for `format`; kills it when no mutant finishes within HANG_MS, naming the one that hung. */
function fuzz(format: string, seed: number): Promise<Report> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [CHILD, format, String(seed), String(MUTANTS), join(root, format), TOY], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let last = 'setup';
    let hung = false;
    let watchdog = setTimeout(() => ((hung = true), child.kill('SIGKILL')), HANG_MS);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      const m = /mutant (\d+)\n(?![\s\S]*mutant \d+\n)/.exec(stdout);
      if (m && m[1] !== last) {
        last = m[1]!;
        clearTimeout(watchdog);
        watchdog = setTimeout(() => ((hung = true), child.kill('SIGKILL')), HANG_MS);
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code, signal) => {
      clearTimeout(watchdog);
      if (hung) return rej(new Error(`${format}: mutant ${last} ran over ${HANG_MS / 1000} s (killed)`));
      if (signal || code !== 0) return rej(new Error(`${format}: child exited with ${signal ?? `status ${code}`} during mutant ${last}\n${stderr.slice(-2000)}`));
      res(JSON.parse(stdout.trim().split('\n').pop()!) as Report);
    });
  });
}

describe('fuzzed parsers: 300 seeded mutants per format', () => {
  it.each([
    ['checkpoint', 11],
    ['model-safetensors', 22],
    ['optimizer-safetensors', 23],
    ['hf-safetensors', 33],
    ['hf-config', 34],
    ['tf-index', 44],
    ['tf-data', 45],
    ['tf-hparams', 46],
    ['tok', 55],
  ] as const)('%s: no signal exit or hang, peak RSS under 1 GB, nothing corrupt accepted, every refusal one line naming the file', async (format, seed) => {
    // The child imports dist/ (plain node cannot load the .ts sources).
    expect(existsSync(join(PACKAGE_ROOT, 'dist', 'checkpoint', 'checkpoint.js')), 'run `npm run build:ts` first').toBe(true);
    const r = await fuzz(format, seed);
    expect(r.mutants).toBe(MUTANTS);
    expect(r.bad).toEqual([]);
    expect(r.maxRssBytes).toBeLessThan(MAX_RSS_BYTES);
    expect(r.slowestMs).toBeLessThan(HANG_MS);
    // The mutations are mostly destructive: a fuzz that refuses nothing is not testing the parser.
    expect(r.refused).toBeGreaterThan(MUTANTS / 4);
  }, 120_000);
});
