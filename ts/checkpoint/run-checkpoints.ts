// A training run's checkpoints: where a resume starts from (a checkpoint file
// or a run directory's latest), restoring a Trainer from one, and the saving
// hook that writes, prunes and remembers the last one written.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { GPTModel } from '../model/gpt.js';
import type { Device, Precision } from '../tensor/tensor.js';
import type { Trainer, TrainOptions } from '../train/trainer.js';
import { DiskWriteError } from './atomic.js';
import { loadCheckpoint, loadLatestCheckpoint, saveCheckpoint, type LoadedCheckpoint } from './checkpoint.js';
import { checkpointFileName, pruneCheckpoints } from './run-files.js';

export interface ResumePoint {
  path: string;
  checkpoint: LoadedCheckpoint;
}

/**
 * The checkpoint `resume` names (a .tar, or a run directory's latest complete
 * one), loaded; refuses a weights-only checkpoint. `flag` names the option in errors.
 */
export async function loadResumePoint(
  resume: string,
  options: { device: Device; dtype?: Precision; onWarning?: (m: string) => void; flag?: string },
): Promise<ResumePoint> {
  const flag = options.flag ?? '--resume';
  let resumePath: string;
  let resumed: LoadedCheckpoint;
  const target = resolve(resume);
  if (!existsSync(target)) throw new Error(`${flag} ${resume}: no such file or directory`);
  if (statSync(target).isDirectory()) {
    const latest = await loadLatestCheckpoint(target, { device: options.device, dtype: options.dtype, onWarning: options.onWarning });
    if (!latest) throw new Error(`${flag} ${resume}: the run directory has no checkpoints yet`);
    resumePath = latest.path;
    resumed = latest;
  } else {
    resumePath = target;
    resumed = await loadCheckpoint(resumePath, { device: options.device, dtype: options.dtype });
  }
  if (!resumed.trainState) throw new Error(`${flag}: ${resumePath} holds weights only (no training state); use --init-from to start a new run from it`);
  return { path: resumePath, checkpoint: resumed };
}

export interface RunCheckpointerOptions {
  runDir: string;
  model: GPTModel;
  options: TrainOptions;
  seed: number;
  loaderConfig: Record<string, unknown>;
  /** Stored in each manifest; pruning then touches only this run's checkpoints. */
  runId?: string;
  keep: number;
  /**
   * The full AdamW moments to save (default: the optimizer's own), and the full
   * master weights where the model keeps only its part; called on every rank, so it may gather.
   */
  moments?: (t: Trainer) => { m: Float32Array; v: Float32Array; master?: Float32Array };
  /** The training options to save (default `options`). */
  trainOptions?: TrainOptions;
  /** false on the ranks of a data-parallel job other than rank 0: they record the step but write nothing. */
  writes?: boolean;
  /** After each checkpoint is written and older ones pruned. */
  onSaved?: (record: { event: 'checkpoint'; step: number; path: string }) => Promise<void> | void;
}

/** The Trainer's onCheckpoint hook for a run directory. */
export class RunCheckpointer {
  /** The final checkpoint is not written twice when --save-every divides the last step. */
  savedStep = -1;
  lastSaved: string | undefined;

  constructor(private readonly o: RunCheckpointerOptions) {}

  /** The error of a save that failed (a full or read-only disk is not retried). */
  saveFailure: unknown;

  readonly save = async (t: Trainer, why: 'interval' | 'end' | 'stop'): Promise<void> => {
    const { runDir, model, options, runId } = this.o;
    if (why !== 'interval' && this.savedStep === t.state.step) return;
    const { m, v, master } = this.o.moments?.(t) ?? { m: t.optimizer.m.toFloat32Array(), v: t.optimizer.v.toFloat32Array() };
    if (this.o.writes === false) {
      this.savedStep = t.state.step;
      return;
    }
    const path = join(runDir, checkpointFileName(t.state.step));
    try {
      await saveCheckpoint(path, {
        model,
        optimizer: { step: t.optimizer.step, m, v, hyper: options.optimizer },
        ...(master ? { master } : {}),
        train: { state: t.state, options: this.o.trainOptions ?? options, seed: this.o.seed, loaderConfig: this.o.loaderConfig },
        ...(runId !== undefined ? { extra: { run_id: runId } } : {}),
      });
    } catch (err) {
      this.saveFailure = err;
      // A refusal by the disk already names the file and the exact bytes it needs.
      if (err instanceof DiskWriteError) throw err;
      throw new Error(`cannot write checkpoint ${path}: ${(err as Error).message}`, { cause: err });
    }
    this.savedStep = t.state.step;
    this.lastSaved = path;
    await pruneCheckpoints(runDir, this.o.keep, { current: path, ...(runId !== undefined ? { runId } : {}) });
    await this.o.onSaved?.({ event: 'checkpoint', step: t.state.step, path });
  };
}
