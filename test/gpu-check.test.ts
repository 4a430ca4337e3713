// `npm run gpu-check -- --smoke --skip-peer` against the emulated CUDA backend:
// the script the GPU window depends on builds, benchmarks, writes its log under
// $OUT and prints its summary and table last (so a broken gpu-check is found
// here, not in the 15 minutes of a lent GPU).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect, it } from 'vitest';

const REPO = resolve(import.meta.dirname, '..');

it('gpu-check --smoke runs on the emulator, logs to $OUT and ends with the table', () => {
  const out = fs.mkdtempSync(join(tmpdir(), 'gpu-check-test-'));
  try {
    const r = spawnSync(process.execPath, [join(REPO, 'scripts', 'gpu-check.mjs'), '--smoke', '--skip-peer'], {
      cwd: REPO, encoding: 'utf8', env: { ...process.env, OUT: out }, timeout: 600_000,
    });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    const table = lines.slice(lines.findIndex((l) => l.startsWith('| what')));
    expect(table[0]).toMatch(/\| what +\| ours tokens\/s +\| PyTorch tokens\/s +\| ours\/PyTorch/);
    expect(table.some((l) => /^\| tiny 2x32 fp32\/TF32 +\| \d/.test(l))).toBe(true);
    expect(table.some((l) => /^\| generation batch 1 \(KV cache\) +\| \d/.test(l))).toBe(true);
    expect(table.some((l) => /^\| tiny 2x32 bf16, GELU unfused +\| \d.*fused: \d/.test(l))).toBe(true);
    expect(r.stdout).toContain('our benchmark: passed');
    expect(r.stdout).toContain('bf16 with GELU unfused: passed');
    expect(fs.readFileSync(join(out, 'gpu-check.log'), 'utf8')).toContain('== our GPU benchmark');
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}, 600_000);
