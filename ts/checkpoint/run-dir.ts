// The run directory's lifecycle: one run per directory (an O_EXCL lock file
// naming the holder's pid and host), a run id that tells this run's
// checkpoints from another's, clean-up of temp files a killed save left,
// and removal of a directory a run created but never trained in.
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { inspectCheckpoint } from './archive.js';
import { listCheckpoints } from './run-files.js';
import { processIsAlive, removeStaleTempFiles } from './atomic.js';

export const LOCK_NAME = '.gptcuda-train.lock';

export interface LockInfo {
  pid: number;
  host: string;
  started: string;
  run_id?: string;
}

export function newRunId(): string {
  return randomBytes(8).toString('hex');
}

export class RunDirectory {
  private locked = false;
  private constructor(
    readonly dir: string,
    /** True when this run made the directory (so it may remove it again). */
    readonly created: boolean,
  ) {}

  get lockPath(): string {
    return join(this.dir, LOCK_NAME);
  }

  /**
   * Creates `dir` if needed and takes its lock. A lock of a live process (or
   * of another host) is an error naming the holder; one left by a dead process
   * on this host is taken over (with `notice`). Temp files of killed saves are
   * removed once the lock is held.
   */
  static async open(dir: string, options: { runId?: string; notice?: (m: string) => void } = {}): Promise<RunDirectory> {
    const created = !existsSync(dir);
    mkdirSync(dir, { recursive: true });
    const rd = new RunDirectory(dir, created);
    try {
      rd.lock(options.runId, options.notice ?? ((m) => console.error(m)));
    } catch (err) {
      rd.removeIfUnused();
      throw err;
    }
    await removeStaleTempFiles(dir, { minAgeMs: 0 });
    return rd;
  }

  private lock(runId: string | undefined, notice: (m: string) => void): void {
    const info: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString(), ...(runId ? { run_id: runId } : {}) };
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number;
      try {
        fd = openSync(this.lockPath, 'wx', 0o644);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        let holder: Partial<LockInfo> = {};
        try {
          holder = JSON.parse(readFileSync(this.lockPath, 'utf8')) as LockInfo;
        } catch {
          // Empty or half-written lock: its writer died between open and write,
          // or is writing right now; treat as held unless it is still unreadable next try.
          if (attempt < 2) continue;
        }
        const who = `pid ${holder.pid ?? '?'} on host ${holder.host ?? '?'}`;
        if (holder.host === info.host && typeof holder.pid === 'number' && !processIsAlive(holder.pid)) {
          notice(`notice: taking over the stale lock of ${this.dir} (${who} is no longer running)`);
          rmSync(this.lockPath, { force: true });
          continue;
        }
        throw new Error(`${this.dir} is in use by another gptcuda train (${who}, since ${holder.started ?? '?'}); wait for it to finish, or train into another --out directory`);
      }
      try {
        writeSync(fd, JSON.stringify(info) + '\n');
      } finally {
        closeSync(fd);
      }
      this.locked = true;
      return;
    }
    throw new Error(`${this.dir}: could not take the run lock ${this.lockPath}`);
  }

  release(): void {
    if (!this.locked) return;
    this.locked = false;
    try {
      unlinkSync(this.lockPath);
    } catch {
      // Already gone.
    }
  }

  /** Releases the lock and, if this run created the directory and nothing but its own log is in it, removes it. */
  removeIfUnused(): void {
    this.release();
    if (!this.created) return;
    try {
      const left = readdirSync(this.dir).filter((n) => n !== 'log.jsonl');
      if (left.length === 0) {
        rmSync(join(this.dir, 'log.jsonl'), { force: true });
        rmdirSync(this.dir);
      }
    } catch {
      // Not ours to fight over.
    }
  }
}

/**
 * Checks that a new run may write into `dir`: checkpoints of another run
 * there are refused (with advice), or with `overwrite` deleted. Returns the
 * paths deleted.
 */
export async function claimForNewRun(dir: string, runId: string, overwrite: boolean): Promise<string[]> {
  const others: string[] = [];
  for (const c of await listCheckpoints(dir)) {
    let id: unknown;
    try {
      id = (await inspectCheckpoint(c.path)).manifest.run_id;
    } catch {
      id = undefined;
    }
    if (id !== runId) others.push(c.path);
  }
  if (others.length === 0) return [];
  if (!overwrite) {
    throw new Error(
      `${dir} already holds another run's checkpoints (${others.length}, e.g. ${others[others.length - 1]}): ` +
        `continue that run with --resume ${dir}, train into a new --out directory, or pass --overwrite to replace it`,
    );
  }
  for (const p of others) rmSync(p, { force: true });
  return others;
}
