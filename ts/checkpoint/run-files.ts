// A run directory's checkpoint files: their names, the listing in step
// order, the newest usable one, and pruning to the newest few. The archive
// format itself is archive.ts.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readdirIfExists } from '../io/files.js';
import { CheckpointError, inspectCheckpoint, manifestRunId, readCheckpointArchive, type CheckpointManifest } from './archive.js';
import { removeStaleTempFiles } from './atomic.js';
import { SafetensorsError } from './safetensors.js';

export interface CheckpointFile {
  step: number;
  name: string;
  path: string;
}

const CKPT_RE = /^ckpt-step(\d{8,})\.tar$/;

/** `ckpt-step00001234.tar`; zero-padded so a plain `ls` lists checkpoints in step order. */
export function checkpointFileName(step: number): string {
  if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`checkpoint step must be a non-negative integer, got ${step}`);
  return `ckpt-step${String(step).padStart(8, '0')}.tar`;
}

/** Checkpoint archives in `runDir`, oldest step first. A missing directory has none. */
export async function listCheckpoints(runDir: string): Promise<CheckpointFile[]> {
  const names = await readdirIfExists(runDir);
  const out: CheckpointFile[] = [];
  for (const name of names) {
    const m = CKPT_RE.exec(name);
    if (m) out.push({ step: Number(m[1]), name, path: join(runDir, name) });
  }
  return out.sort((a, b) => a.step - b.step);
}

export interface LatestCheckpoint extends CheckpointFile {
  manifest: CheckpointManifest;
  /** One per newer checkpoint that was skipped because it is damaged. */
  warnings: string[];
}

function isDamage(err: unknown): boolean {
  return err instanceof SafetensorsError || (err instanceof CheckpointError && err.code !== 'NEWER_VERSION');
}

/**
 * The newest checkpoint in `runDir` that passes {@link inspectCheckpoint};
 * damaged newer ones are skipped with a warning (`onWarning`, default
 * process.emitWarning). Returns null when the directory has no checkpoints.
 * Throws when checkpoints exist but none is usable (so a resume never
 * silently restarts from scratch) and when the newest was written by a newer
 * gptcuda (so an old version never resumes from, and later prunes past, a
 * newer run's progress).
 */
export async function latestCheckpoint(
  runDir: string,
  options: { onWarning?: (message: string) => void } = {},
): Promise<LatestCheckpoint | null> {
  const onWarning = options.onWarning ?? ((m: string) => process.emitWarning(m, { code: 'GPTCUDA_CHECKPOINT_SKIPPED' }));
  const all = await listCheckpoints(runDir);
  const warnings: string[] = [];
  for (let i = all.length - 1; i >= 0; i--) {
    const c = all[i]!;
    try {
      const s = await inspectCheckpoint(c.path);
      return { ...c, manifest: s.manifest, warnings };
    } catch (err) {
      if (!isDamage(err)) throw err;
      const msg = `skipping damaged checkpoint ${c.name}: ${(err as Error).message}`;
      warnings.push(msg);
      onWarning(msg);
    }
  }
  if (all.length === 0) return null;
  throw new CheckpointError('CORRUPT', `${runDir}: none of the ${all.length} checkpoints is usable:\n  ${warnings.join('\n  ')}`);
}

/**
 * Deletes all but the newest `keep` intact checkpoints in `runDir` (plus
 * temp files left by writers that died), so pruning never removes the last
 * loadable one. With `runId`, only checkpoints whose manifest carries that
 * `run_id` are candidates; another run's, a newer gptcuda's, or one whose
 * manifest is unreadable stays. A damaged candidate is deleted: the resume
 * skips it anyway. `current` is the checkpoint just written: it is always
 * kept, and candidates of a later step (a resume fell back past them, or
 * started from an older one) are fully verified, since the quick check alone
 * would let a newer one with damaged data push the good ones out. Returns the
 * deleted paths.
 */
export async function pruneCheckpoints(runDir: string, keep: number, options: { runId?: string; current?: string } = {}): Promise<string[]> {
  if (!Number.isSafeInteger(keep) || keep < 1) throw new RangeError(`keep must be a positive integer, got ${keep}`);
  const removed = await removeStaleTempFiles(runDir, { targetFilter: (n) => CKPT_RE.test(n) });
  const all = await listCheckpoints(runDir);
  const currentStep = all.find((c) => c.path === options.current)?.step;
  const intact: CheckpointFile[] = [];
  const damaged: CheckpointFile[] = [];
  for (const c of all) {
    if (c.path === options.current) {
      intact.push(c);
      continue;
    }
    let runId: unknown;
    let ok = true;
    try {
      runId = (await inspectCheckpoint(c.path)).manifest.run_id;
      if (currentStep !== undefined && c.step > currentStep) await readCheckpointArchive(c.path);
    } catch (err) {
      if (!isDamage(err)) {
        if (err instanceof CheckpointError && err.code === 'NEWER_VERSION') continue;
        throw err;
      }
      ok = false;
      runId ??= await manifestRunId(c.path);
    }
    if (options.runId !== undefined && runId !== options.runId) continue;
    (ok ? intact : damaged).push(c);
  }
  const kept = new Set(intact.slice(-keep).map((c) => c.path));
  if (options.current !== undefined) kept.add(options.current);
  for (const c of [...intact, ...damaged]) {
    if (kept.has(c.path)) continue;
    await rm(c.path, { force: true });
    removed.push(c.path);
  }
  return removed;
}
