// Seeded fuzz of the native addon's JS surface (test/helpers/fuzz-native-child.mjs):
// thousands of random and perturbed calls to every op and Tensor member must
// each either work or throw an Error, and never crash the process. It runs in
// a child process so that a SIGSEGV/SIGABRT is seen as the child's exit signal.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { PACKAGE_ROOT } from '../ts/tensor/native.js';

const child = join(PACKAGE_ROOT, 'test', 'helpers', 'fuzz-native-child.mjs');

describe('native fuzz', () => {
  it.each([1, 2, 3])('seed %i: 3,000 random calls, no signal exit and only Errors thrown', (seed) => {
    // The child imports dist/ (plain node cannot load the .ts sources).
    expect(existsSync(join(PACKAGE_ROOT, 'dist', 'tensor', 'index.js')), 'run `npm run build:ts` first').toBe(true);
    const r = spawnSync(process.execPath, [child, String(seed), '3000'], { encoding: 'utf8', timeout: 60_000 });
    const report = `signal ${r.signal}, status ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr.slice(-2000)}`;
    expect(r.signal, report).toBeNull();
    expect(r.status, report).toBe(0);
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as { calls: number; refused: number; bad: string[] };
    expect(result.bad).toEqual([]);
    expect(result.calls).toBeGreaterThanOrEqual(3000);
    // Most calls are malformed on purpose, but not all: some must get through.
    expect(result.refused).toBeGreaterThan(result.calls / 4);
    expect(result.refused).toBeLessThan(result.calls);
  });
});
