// The CUDA kernels one by one against float64 references, on the CPU: the
// kernel sections of native/cuda/*.cu compiled against the SIMT emulator
// (native/cuda/emu/run.sh). Complements the cuda-emulated projects (the whole
// backend against the CPU backend) with exact references, both tensor-core
// attention variants with and without TF32 rounding, and the row-major to
// cuBLAS argument mapping.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { expect, it } from 'vitest';

it('CUDA kernels match float64 references on the SIMT emulator', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gptcuda-emu-'));
  try {
    let output = '';
    try {
      output = execFileSync('bash', ['native/cuda/emu/run.sh', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string };
      expect.fail(`native/cuda/emu/run.sh failed:\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
    }
    const failed = output.split('\n').filter((l) => l.startsWith('FAIL'));
    expect(failed, output).toEqual([]);
    expect(output).toMatch(/ALL OK\s*$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
