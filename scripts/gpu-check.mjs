#!/usr/bin/env node
// `npm run gpu-check` on a machine with an NVIDIA GPU: builds the addon with
// the CUDA backend, runs the CUDA tests (the op table, the whole model),
// then the GPU benchmark, then the book's run on the GPU (timed, its loss
// curve against the CPU's), and prints a short summary last.
//
// On this project's lent GPU machine (no Node there): here, `npm install`
// and `bash ../shared/gpu/pack.sh`; then run through the device tool with
// carry [".gpu", "dist"] and the command `bash .gpu/remote.sh npm run gpu-check`
// (pack.sh leaves the TypeScript compiler out, so dist/ travels prebuilt).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
const parity = run('CUDA parity tests', process.execPath, [vitest, 'run', '--project', 'main', 'test/op-table.test.ts', 'test/cuda-model.test.ts', 'test/cuda-errors.test.ts']);
const bench = run('GPU benchmark', process.execPath, ['dist/bench/gpu.js']);
const book = bookRun();
console.log(`\ngpu-check: parity ${parity ? 'passed' : 'FAILED'}, benchmark ${bench ? 'done' : 'FAILED'}, book run ${book}`);
process.exit(parity && bench && book.startsWith('done') ? 0 : 1);

// The book's default run on the GPU (`gptcuda train --device cuda`), timed, and
// its loss curve against the CPU run recorded in bench/book-run-cpu.json.
function bookRun() {
  console.log('\n== book run: gptcuda train --device cuda');
  const out = mkdtempSync(join(tmpdir(), 'gptcuda-book-'));
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['dist/cli/main.js', 'train', '--device', 'cuda', '--json', '--out', out], {
    cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20,
  });
  const wall = (performance.now() - t0) / 1000;
  rmSync(out, { recursive: true, force: true });
  if (r.status !== 0) return `FAILED (exit ${r.status})`;
  const events = r.stdout.trim().split('\n').flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } });
  const evals = new Map(events.filter((e) => e.event === 'eval').map((e) => [e.step, e]));
  const done = events.find((e) => e.event === 'done');
  const cpu = JSON.parse(readFileSync(join(root, 'bench', 'book-run-cpu.json'), 'utf8'));
  console.log('| step | train (cuda) | train (cpu) | val (cuda) | val (cpu) |');
  console.log('| ---: | ---: | ---: | ---: | ---: |');
  let worst = 0;
  for (const c of cpu.evals) {
    const g = evals.get(c.step);
    if (!g) continue;
    worst = Math.max(worst, Math.abs(g.train_loss - c.train), Math.abs(g.val_loss - c.val));
    console.log(`| ${c.step} | ${g.train_loss.toFixed(3)} | ${c.train.toFixed(3)} | ${g.val_loss.toFixed(3)} | ${c.val.toFixed(3)} |`);
  }
  const line = `done in ${wall.toFixed(1)} s wall (${done?.seconds?.toFixed(1)} s training; CPU ${cpu.seconds} s), largest |loss difference| vs CPU ${worst.toFixed(3)}`;
  console.log(line);
  return line;
}
