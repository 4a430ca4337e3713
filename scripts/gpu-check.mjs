#!/usr/bin/env node
// `npm run gpu-check` on a machine with an NVIDIA GPU: builds the addon with
// the CUDA backend, runs the CUDA parity tests (every op, the whole model),
// then the GPU benchmark, and prints a short table last.
//
// On this project's lent GPU machine (no Node there): here, `npm install`
// and `bash ../shared/gpu/pack.sh`; then run through the device tool with
// carry [".gpu", "dist"] and the command `bash .gpu/remote.sh npm run gpu-check`
// (pack.sh leaves the TypeScript compiler out, so dist/ travels prebuilt).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (what, cmd, args, env = {}) => {
  console.log(`\n== ${what}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  return r.status === 0;
};

const built = run('build with CUDA', process.execPath, ['scripts/build-native.mjs'], { GPTCUDA_CUDA: 'on', GPTCUDA_CUDA_ARCHS: process.env.GPTCUDA_CUDA_ARCHS ?? '90' });
if (!built) process.exit(1);
run('info', process.execPath, ['dist/cli/main.js', 'info']);
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
const parity = run('CUDA parity tests', process.execPath, [vitest, 'run', 'test/cuda-parity.test.ts', 'test/cuda-model.test.ts']);
const bench = run('GPU benchmark', process.execPath, ['dist/bench/gpu.js']);
console.log(`\ngpu-check: parity ${parity ? 'passed' : 'FAILED'}, benchmark ${bench ? 'done' : 'FAILED'}`);
process.exit(parity && bench ? 0 : 1);
