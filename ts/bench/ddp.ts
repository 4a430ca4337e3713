// Data-parallel throughput on the CPU (`npm run bench -- --ddp`): the same
// small training run with 1 rank and with `train --nproc 2`, each rank at the
// same --batch-size, so 2 ranks process twice the tokens per step. Tokens/s
// over all ranks from the step events' arrival, so start-up, the first
// evaluation and the closing sample do not count.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export interface DdpResult {
  ranks: number;
  steps: number;
  tokensPerStep: number;
  msPerStep: number;
  tokensPerSecond: number;
}

const CLI = resolve(import.meta.dirname, '..', 'cli', 'main.js');
const MODEL = ['--n-layers', '2', '--emb-dim', '64', '--n-heads', '4', '--context-length', '64', '--batch-size', '4', '--no-shuffle'];

/** Null with the reason where mpirun is missing. */
export function ddpUnavailable(): string | null {
  const v = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  return v.error || v.status !== 0 ? 'mpirun is not on the PATH (apt-get install openmpi-bin libopenmpi-dev)' : null;
}

function run(ranks: number, steps: number, data: string, out: string): Promise<DdpResult> {
  const args = [CLI, 'train', ...MODEL, '--data', data, '--max-steps', String(steps + 2), '--eval-freq', String(10 * steps), '--json', '--out', out, ...(ranks > 1 ? ['--nproc', String(ranks)] : [])];
  // OpenMPI refuses root without these (CI, containers).
  const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const seen: { t: number; tokens: number }[] = [];
    let pending = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const l of lines) {
        if (!l.includes('"event":"step"')) continue;
        seen.push({ t: performance.now(), tokens: (JSON.parse(l) as { tokens_seen: number }).tokens_seen });
      }
    });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code) => {
      // The first two steps (and the evaluation after the first) are the warm-up.
      if (code !== 0 || seen.length < 3) return rej(new Error(`train with ${ranks} rank(s) failed (status ${code}):\n${stderr}`));
      const first = seen[1]!, last = seen[seen.length - 1]!;
      const seconds = (last.t - first.t) / 1000;
      const n = seen.length - 2;
      res({ ranks, steps: n, tokensPerStep: (last.tokens - first.tokens) / n, msPerStep: (seconds * 1000) / n, tokensPerSecond: (last.tokens - first.tokens) / seconds });
    });
  });
}

export async function benchDdp(steps: number, worlds: number[] = [1, 2]): Promise<DdpResult[]> {
  const root = mkdtempSync(join(tmpdir(), 'gptcuda-bench-ddp-'));
  try {
    // The bundled text, repeated so that no epoch (and its sample) ends inside the timed steps.
    const data = join(root, 'text.txt');
    const verdict = readFileSync(resolve(import.meta.dirname, '..', '..', 'data', 'the-verdict.txt'), 'utf8');
    writeFileSync(data, Array.from({ length: Math.ceil((steps + 2) / 4) + 2 }, () => verdict).join('\n'));
    const results: DdpResult[] = [];
    for (const n of worlds) results.push(await run(n, steps, data, join(root, `ranks-${n}`)));
    return results;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
