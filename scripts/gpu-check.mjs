#!/usr/bin/env node
// `npm run gpu-check` on a machine with an NVIDIA GPU, in one call of at most
// 10 minutes including the build (GPU time comes in 15-minute windows):
//   1. build the addon with the CUDA backend (sm_90 unless GPTCUDA_CUDA_ARCHS);
//   2. the CUDA suites (every op in the op table on the device, the whole model, errors);
//   3. compute-sanitizer memcheck and racecheck over the small-shape benchmark
//      (the emulator models neither the memory model nor races), where installed;
//   4. our benchmark: GPT-2 124M at context 1024 (batch 8 and 16), the book's
//      model, batch-1 generation;
//   5. PyTorch on the same GPU (scripts/gpu_peer.py): the same training step in
//      fp32/TF32, bf16 autocast eager and torch.compile, and Hugging Face's
//      generate at batch 1;
//   6. the book's run on the GPU against the CPU's loss curve;
//   7. with several GPUs and mpirun: data-parallel scaling over 1..N GPUs
//      (`train --nproc k --device cuda`, NCCL), tokens/s and the speedup;
// then a one-screen table last. The full log goes to $OUT/gpu-check.log (the
// device tool brings $OUT back), else to a temporary directory.
//
//   npm run gpu-check [-- --smoke] [-- --skip-peer]
//
// --smoke: on this machine, against the emulated CUDA backend (native/cuda/emu)
// with tiny shapes: checks the script, not the GPU. --skip-peer leaves out PyTorch.
//
// On this project's lent GPU machine (no Node there): here, `npm install`
// and `bash ../shared/gpu/pack.sh`; then run through the device tool with
// carry [".gpu", "dist"] and the command `bash .gpu/remote.sh npm run gpu-check`
// (pack.sh leaves the TypeScript compiler out, so dist/ travels prebuilt).
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const smoke = argv.includes('--smoke');
const skipPeer = argv.includes('--skip-peer');
const started = performance.now();
// The whole call must end within the device tool's 10 minutes, with room to bring the log back.
const budgetS = Number(process.env.GPU_CHECK_BUDGET_S ?? 560);
const leftS = () => budgetS - (performance.now() - started) / 1000;

const outDir = process.env.OUT || mkdtempSync(join(tmpdir(), 'gpu-check-'));
mkdirSync(outDir, { recursive: true });
const logPath = join(outDir, 'gpu-check.log');
const log = (text) => {
  process.stdout.write(text);
  appendFileSync(logPath, text);
};

/** Runs one step with a wall-clock limit; its output goes to the console and the log. */
function step(what, cmd, args, { env = {}, timeoutS = leftS() } = {}) {
  const limit = Math.max(1, Math.floor(Math.min(timeoutS, leftS())));
  log(`\n== ${what} (limit ${limit} s)\n`);
  const t0 = performance.now();
  const r = spawnSync(cmd, args, {
    cwd: root, encoding: 'utf8', env: { ...process.env, ...env }, timeout: limit * 1000, killSignal: 'SIGKILL', maxBuffer: 256 << 20,
  });
  log((r.stdout ?? '') + (r.stderr ?? ''));
  const seconds = (performance.now() - t0) / 1000;
  const timedOut = r.error?.code === 'ETIMEDOUT' || (r.signal === 'SIGKILL' && seconds >= limit - 1);
  const status = r.error && !timedOut ? `could not start: ${r.error.message}` : timedOut ? `timed out after ${limit} s` : r.status === 0 ? 'passed' : `FAILED (exit ${r.status ?? r.signal})`;
  log(`-- ${what}: ${status} in ${seconds.toFixed(0)} s\n`);
  return { ok: r.status === 0, status, stdout: r.stdout ?? '' };
}

const lastJson = (text) => {
  const lines = text.split('\n').filter((l) => l.startsWith('{'));
  try {
    return lines.length ? JSON.parse(lines[lines.length - 1]) : null;
  } catch {
    return null;
  }
};

const summary = [];
const cudaEnv = {};

if (smoke) {
  const emu = join(root, 'build', 'emu');
  const built = step('build the emulated CUDA backend', 'bash', [join(root, 'native/cuda/emu/backend.sh'), emu]);
  summary.push(['build (emulated CUDA)', built.status]);
  if (!built.ok) finish(1);
  cudaEnv.GPTCUDA_CUDA_LIBRARY = join(emu, 'gptcuda_cuda.so');
} else {
  const built = step('build with CUDA', process.execPath, ['scripts/build-native.mjs'], { env: { GPTCUDA_CUDA: 'on', GPTCUDA_CUDA_ARCHS: process.env.GPTCUDA_CUDA_ARCHS ?? '90' }, timeoutS: 300 });
  summary.push(['build (sm_90)', built.status]);
  if (!built.ok) finish(1);
}
step('info', process.execPath, ['dist/cli/main.js', 'info'], { env: cudaEnv, timeoutS: 30 });

if (!smoke) {
  const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
  const suites = ['test/op-table.test.ts', 'test/cuda-model.test.ts', 'test/cuda-errors.test.ts', 'test/cuda-bf16.test.ts'];
  summary.push(['parity suites', step('CUDA parity suites', process.execPath, [vitest, 'run', '--project', 'main', ...suites], { timeoutS: 150 }).status]);
  const sanitizer = findSanitizer();
  for (const tool of ['memcheck', 'racecheck']) {
    if (!sanitizer) summary.push([`compute-sanitizer ${tool}`, 'not installed']);
    else if (leftS() < 330) summary.push([`compute-sanitizer ${tool}`, 'skipped (time)']);
    else summary.push([`compute-sanitizer ${tool}`, step(`compute-sanitizer --tool ${tool}`, sanitizer, ['--tool', tool, '--error-exitcode', '1', process.execPath, 'dist/bench/gpu.js', '--smoke'], { timeoutS: 60 }).status]);
  }
}

const ours = step('our GPU benchmark', process.execPath, ['dist/bench/gpu.js', ...(smoke ? ['--smoke'] : [])], { env: cudaEnv, timeoutS: smoke ? 600 : 150 });
const oursJson = lastJson(ours.stdout);
summary.push(['our benchmark', ours.status]);

// The bf16 step again with GELU in its own kernels: what the GEMM epilogues (GELU_AUX_BIAS, DGELU) save.
let unfusedJson = null;
if (!smoke && leftS() < 240) summary.push(['bf16 with GELU unfused', 'skipped (time)']);
else {
  const unfused = step('our bf16 step with GELU in its own kernels (GPTCUDA_GELU_FUSION=0)', process.execPath, ['dist/bench/gpu.js', '--bf16-only', ...(smoke ? ['--smoke'] : [])],
    { env: { ...cudaEnv, GPTCUDA_GELU_FUSION: '0' }, timeoutS: smoke ? 300 : 60 });
  unfusedJson = lastJson(unfused.stdout);
  summary.push(['bf16 with GELU unfused', unfused.status]);
}

let peerJson = null;
if (skipPeer) summary.push(['PyTorch peer', 'skipped (--skip-peer)']);
else if (leftS() < 60) summary.push(['PyTorch peer', 'skipped (time)']);
else {
  const peer = step('PyTorch on the same GPU (scripts/gpu_peer.py)', 'python3', ['scripts/gpu_peer.py', ...(smoke ? ['--smoke'] : ['--compile-timeout', String(Math.max(30, Math.min(180, leftS() - 150)))])], { timeoutS: leftS() - (smoke ? 0 : 40) });
  peerJson = lastJson(peer.stdout);
  summary.push(['PyTorch peer', peer.status + (peerJson?.notes?.length ? `; ${peerJson.notes.join('; ')}` : '')]);
}

if (smoke) summary.push(['book run', 'skipped (--smoke)']);
else if (leftS() < 40) summary.push(['book run', 'skipped (time)']);
else summary.push(['book run', bookRun()]);

if (smoke) summary.push(['multi-GPU scaling', 'skipped (--smoke)']);
else summary.push(['multi-GPU scaling', multiGpuScaling()]);

finish(summary.every(([, s]) => !/FAILED|timed out|could not start/.test(s)) ? 0 : 1);

/** GPUs the driver lists (nvidia-smi -L), 0 when it cannot say. */
function gpuCount() {
  const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n').filter((l) => /^GPU \d+/.test(l)).length : 0;
}

function onPath(cmd) {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, cmd)));
}

// GPT-2 124M, context 1024, batch 8 per rank, over k = 1, 2, 4, ... N GPUs
// (`train --nproc k`: one rank per GPU, gradients all-reduced by NCCL), on the
// bundled text repeated until every rank has windows.
function multiGpuScaling() {
  const n = gpuCount();
  if (n < 2) return `skipped (${n} GPU${n === 1 ? '' : 's'})`;
  if (!onPath('mpirun')) return `skipped (${n} GPUs, but no mpirun on PATH)`;
  const dir = mkdtempSync(join(tmpdir(), 'gptcuda-ddp-'));
  const text = readFileSync(join(root, 'data', 'the-verdict.txt'), 'utf8');
  const data = join(dir, 'repeated.txt');
  writeFileSync(data, Array.from({ length: 8 * n }, () => text).join('\n'));
  const rates = [];
  let oneGpu = 0;
  try {
    for (let k = 1; k <= n; k *= 2) {
      if (leftS() < 45) break;
      const r = step(`data parallel on ${k} GPU(s)`, process.execPath, ['dist/cli/main.js', 'train', '--nproc', String(k), '--device', 'cuda', '--model', 'gpt2-small',
        '--data', data, '--batch-size', '8', '--max-steps', '6', '--eval-freq', '1000', '--sample-prompt', '', '--json', '--out', join(dir, `run${k}`)], { timeoutS: 90 });
      const done = r.stdout.trim().split('\n').flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } }).find((e) => e.event === 'done');
      if (!r.ok || !done) { rates.push(`${k}: ${r.status}`); break; }
      if (k === 1) oneGpu = done.tokens_per_s;
      rates.push(`${k}: ${Math.round(done.tokens_per_s).toLocaleString('en-US')} tok/s${k > 1 ? ` (${(done.tokens_per_s / oneGpu).toFixed(2)}x)` : ''}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rates.join(', ');
}

function findSanitizer() {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/local/cuda/bin', '/usr/local/cuda/compute-sanitizer']) {
    const p = join(dir, 'compute-sanitizer');
    if (dir && existsSync(p)) return p;
  }
  return null;
}

// The book's default run on the GPU (`gptcuda train --device cuda`), timed, and
// its loss curve against the CPU run recorded in bench/book-run-cpu.json.
function bookRun() {
  const out = mkdtempSync(join(tmpdir(), 'gptcuda-book-'));
  const t0 = performance.now();
  const r = step('book run: gptcuda train --device cuda', process.execPath, ['dist/cli/main.js', 'train', '--device', 'cuda', '--json', '--out', out], { timeoutS: leftS() - 10 });
  const wall = (performance.now() - t0) / 1000;
  rmSync(out, { recursive: true, force: true });
  if (!r.ok) return r.status;
  const events = r.stdout.trim().split('\n').flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } });
  const evals = new Map(events.filter((e) => e.event === 'eval').map((e) => [e.step, e]));
  const done = events.find((e) => e.event === 'done');
  const cpu = JSON.parse(readFileSync(join(root, 'bench', 'book-run-cpu.json'), 'utf8'));
  log('| step | train (cuda) | train (cpu) | val (cuda) | val (cpu) |\n| ---: | ---: | ---: | ---: | ---: |\n');
  let worst = 0;
  for (const c of cpu.evals) {
    const g = evals.get(c.step);
    if (!g) continue;
    worst = Math.max(worst, Math.abs(g.train_loss - c.train), Math.abs(g.val_loss - c.val));
    log(`| ${c.step} | ${g.train_loss.toFixed(3)} | ${c.train.toFixed(3)} | ${g.val_loss.toFixed(3)} | ${c.val.toFixed(3)} |\n`);
  }
  return `done in ${wall.toFixed(1)} s wall (${done?.seconds?.toFixed(1)} s training; CPU ${cpu.seconds} s), largest |loss difference| vs CPU ${worst.toFixed(3)}`;
}

/** Dense bf16 tensor-core peak (TFLOP/s) by GPU name. */
function bf16Peak(name) {
  const table = [[/H200|H100.*(SXM|HBM3)/, 989.4], [/H100/, 756], [/A100/, 312]];
  return table.find(([re]) => re.test(name ?? ''))?.[1];
}

function finish(code) {
  const fmt = (x) => (x === undefined || x === null ? 'n/a' : Math.round(x).toLocaleString('en-US'));
  const ratio = (a, b) => (a && b ? (a / b).toFixed(2) + 'x' : 'n/a');
  const gib = (x) => (x === undefined || x === null ? '' : `${x.toFixed(1)} GiB`);
  const rows = [];
  const peerRow = (mode, B) => peerJson?.train?.find((t) => t.mode === mode && t.B === B);
  for (const r of (oursJson?.train ?? []).filter((r) => (r.dtype ?? 'fp32') === 'fp32')) {
    const torch = r.T === 1024 || smoke ? peerRow('fp32', r.B) : undefined;
    rows.push([`${r.name} ${r.B}x${r.T} fp32/TF32`, fmt(r.tokensPerS), torch ? `${fmt(torch.tokens_per_s)} (eager)` : 'n/a', ratio(r.tokensPerS, torch?.tokens_per_s), `${r.tflops.toFixed(1)} TFLOP/s`, `${gib(r.peakGiB)} / ${gib(torch?.peak_gib) || 'n/a'}`]);
  }
  const peak = bf16Peak(oursJson?.gpu);
  const fractionOfPeak = (who, tokensPerS, flopsPerToken) => (peak && flopsPerToken && tokensPerS ? `${who} ${((100 * tokensPerS * flopsPerToken) / 1e12 / peak).toFixed(1)}%` : '');
  for (const B of smoke ? [2] : [8, 16]) {
    const best = peerRow('bf16-compile', B) ?? peerRow('bf16', B);
    const mine = oursJson?.train?.find((r) => r.dtype === 'bf16' && r.B === B);
    const failed = oursJson?.failed?.find((r) => r.dtype === 'bf16' && r.B === B);
    if (!best && !mine && !failed) continue;
    const T = mine?.T ?? best?.T ?? failed?.T;
    const flopsPerToken = smoke ? undefined : 6 * 124.4e6 + 6 * 12 * 1024 * 768;
    const ofPeak = [fractionOfPeak('ours', mine?.tokensPerS, flopsPerToken), fractionOfPeak('torch', best?.tokens_per_s, flopsPerToken)].filter(Boolean).join(', ');
    rows.push([
      `${smoke ? 'tiny' : 'gpt2-124M'} ${B}x${T} bf16`,
      mine ? fmt(mine.tokensPerS) : `n/a (${failed ? failed.error.slice(0, 60) : 'not run'})`,
      best ? `${fmt(best.tokens_per_s)} (${best.mode === 'bf16-compile' ? 'compile' : 'eager'})` : 'n/a',
      ratio(mine?.tokensPerS, best?.tokens_per_s),
      ofPeak ? `${ofPeak} of bf16 peak` : '',
      `${gib(mine?.peakGiB) || '-'} / ${gib(best?.peak_gib) || 'n/a'}`,
    ]);
  }
  const unfused = unfusedJson?.train?.[0];
  if (unfused) {
    const fused = oursJson?.train?.find((r) => r.dtype === 'bf16' && r.B === unfused.B);
    rows.push([`${unfused.name} ${unfused.B}x${unfused.T} bf16, GELU unfused`, fmt(unfused.tokensPerS), 'n/a', fused ? `fused: ${ratio(fused.tokensPerS, unfused.tokensPerS)}` : 'n/a', '', `${gib(unfused.peakGiB)}`]);
  }
  if (oursJson) rows.push(['generation batch 1 (KV cache)', fmt(oursJson.generation_tokens_per_s), peerJson?.generate ? `${fmt(peerJson.generate.tokens_per_s)} (HF)` : 'n/a', ratio(oursJson.generation_tokens_per_s, peerJson?.generate?.tokens_per_s), '', '']);
  if (oursJson) rows.push(['generation batch 1, bf16', fmt(oursJson.generation_bf16_tokens_per_s), 'n/a', oursJson.generation_bf16_tokens_per_s ? `${ratio(oursJson.generation_bf16_tokens_per_s, oursJson.generation_tokens_per_s)} of fp32` : 'n/a', '', '']);
  const headers = ['what', 'ours tokens/s', 'PyTorch tokens/s', 'ours/PyTorch', 'rate', 'peak memory (ours / torch)'];
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => '| ' + cells.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |\n';
  log(`\n== gpu-check${smoke ? ' --smoke (emulated CUDA, tiny shapes: checks the script, not the GPU)' : ''}: ${oursJson?.gpu ?? 'no GPU result'}, ${((performance.now() - started) / 1000).toFixed(0)} s, log ${logPath}\n`);
  for (const [what, status] of summary) log(`${what}: ${status}\n`);
  log('\n' + line(headers) + line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) log(line(r));
  process.exit(code);
}
