/**
 * Crash-safe file replacement.
 *
 * Every file a user owns (checkpoints, configs, final copies of logs) is
 * written to a temporary file in the same directory, flushed to disk, and
 * renamed over the target. rename(2) within one filesystem is atomic, so a
 * reader (or a crash at any instant) sees either the complete old file or the
 * complete new one, never a mix. The temporary must live in the same
 * directory: a rename across filesystems is a copy, which is not atomic.
 *
 * The directory is fsynced after the rename because on ext4/xfs the rename
 * itself lives in the directory's metadata; without that, a power loss right
 * after we return could resurrect the old file even though we reported
 * success.
 */

import { randomBytes } from 'node:crypto';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { readdirIfExists } from '../io/files.js';

/** Name of the temporary file used while `target` is being (re)written. */
export function tempPathFor(target: string): string {
  const abs = resolve(target);
  return join(dirname(abs), `.${basename(abs)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
}

const TEMP_RE = /^\.(.+)\.tmp-(\d+)-[0-9a-f]+$/;

/** Splits a temporary file name made by {@link tempPathFor}; undefined if it is not one. */
export function parseTempName(name: string): { target: string; pid: number } | undefined {
  const m = TEMP_RE.exec(name);
  if (!m) return undefined;
  return { target: m[1]!, pid: Number(m[2]) };
}

/**
 * Flushes a directory's entries (the result of a rename) to disk. Some
 * platforms (Windows) and filesystems refuse fsync on a directory; there is
 * nothing better to do there, so those refusals are ignored.
 */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EBADF') throw err;
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

// Test-only fault injection, never for users: GPTCUDA_TEST_FAIL_WRITE=<ERRNO>:<bytes>
// (ENOSPC, EDQUOT or EROFS) makes this module's writes fail with that errno once
// the process has written <bytes> bytes through it in total, as a disk that fills
// up or is remounted read-only mid-run. ENOSPC/EDQUOT fail the write that crosses
// the limit (after writing up to it, as a full disk does); EROFS fails creating
// the next temporary file, where a read-only filesystem refuses. Read once.
interface InjectedFailure {
  code: 'ENOSPC' | 'EDQUOT' | 'EROFS';
  afterBytes: number;
}
let injected: InjectedFailure | null | undefined;
let injectedWritten = 0;

function injectedFailure(): InjectedFailure | null {
  if (injected !== undefined) return injected;
  const spec = process.env.GPTCUDA_TEST_FAIL_WRITE;
  const m = spec ? /^(ENOSPC|EDQUOT|EROFS):(\d+)$/.exec(spec) : null;
  if (spec && !m) throw new Error(`GPTCUDA_TEST_FAIL_WRITE=${spec} is malformed: use ENOSPC:<bytes>, EDQUOT:<bytes> or EROFS:<bytes> (a test-only setting; unset it)`);
  injected = m ? { code: m[1] as InjectedFailure['code'], afterBytes: Number(m[2]) } : null;
  return injected;
}

function injectedError(code: string, syscall: string): NodeJS.ErrnoException {
  const text: Record<string, string> = { ENOSPC: 'no space left on device', EDQUOT: 'disk quota exceeded', EROFS: 'read-only file system' };
  return Object.assign(new Error(`${code}: ${text[code]}, ${syscall} (GPTCUDA_TEST_FAIL_WRITE)`), { code, syscall });
}

/** Errors that mean the disk, not the data, is the problem: reported with the path and the bytes needed. */
const DISK_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS']);

/**
 * A write refused by the filesystem (full, over quota, read-only). The message
 * is one line naming the file, and for a full disk the exact size it needs.
 */
export class DiskWriteError extends Error {
  override name = 'DiskWriteError';
  constructor(
    readonly code: string,
    readonly path: string,
    /** The complete file's size, when known. */
    readonly bytesNeeded: number | undefined,
    options: { cause: unknown },
  ) {
    const dir = dirname(path);
    const need = bytesNeeded !== undefined ? `the file needs ${bytesNeeded} bytes free in ${dir}` : `the file does not fit in ${dir}`;
    super(
      code === 'EROFS'
        ? `cannot write ${path}: the directory ${dir} is on a read-only filesystem (EROFS); nothing was written there, write to another directory`
        : `cannot write ${path}: ${code === 'EDQUOT' ? 'the disk quota is exceeded (EDQUOT)' : 'no space left on the device (ENOSPC)'}; ${need}; no partial file was left, free space or write to another disk`,
      options,
    );
  }
}

// Small chunks (safetensors headers, tiny tensors, tar headers) are coalesced
// so a checkpoint with hundreds of parameters does not cost hundreds of
// syscalls; big tensors are written straight from their own memory, without
// a copy.
const STAGING_BYTES = 1 << 20;
const DIRECT_WRITE_MIN = 256 << 10;

/**
 * Sequential writer over a FileHandle that coalesces small chunks and
 * retries short writes (write(2) may write less than asked, and Linux caps a
 * single write near 2 GiB).
 */
export class ChunkWriter {
  private staging: Buffer | undefined;
  private staged = 0;
  private written = 0;

  constructor(private readonly fh: FileHandle) {}

  /** Bytes handed to this writer so far (flushed or staged). */
  get bytesWritten(): number {
    return this.written + this.staged;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (chunk.byteLength === 0) return;
    if (chunk.byteLength >= DIRECT_WRITE_MIN) {
      await this.flush();
      await this.writeFully(chunk);
      return;
    }
    this.staging ??= Buffer.allocUnsafe(STAGING_BYTES);
    if (this.staged + chunk.byteLength > this.staging.length) await this.flush();
    this.staging.set(chunk, this.staged);
    this.staged += chunk.byteLength;
  }

  async flush(): Promise<void> {
    if (this.staged === 0 || !this.staging) return;
    const n = this.staged;
    this.staged = 0;
    await this.writeFully(this.staging.subarray(0, n));
  }

  private async writeFully(chunk: Uint8Array): Promise<void> {
    let off = 0;
    const fail = injectedFailure();
    if (fail && fail.code !== 'EROFS' && injectedWritten + chunk.byteLength > fail.afterBytes) {
      const room = Math.max(0, fail.afterBytes - injectedWritten);
      if (room > 0) await this.fh.write(chunk, 0, room);
      injectedWritten += room;
      throw injectedError(fail.code, 'write');
    }
    injectedWritten += chunk.byteLength;
    while (off < chunk.byteLength) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.byteLength - off);
      if (bytesWritten <= 0) throw new Error('write returned 0 bytes (disk full?)');
      off += bytesWritten;
    }
    this.written += chunk.byteLength;
  }
}

export interface AtomicWriteOptions {
  /** File mode for a newly created file (before umask). Default 0o666. */
  mode?: number;
  /** The complete file's size in bytes, named when the disk is full. */
  size?: number;
}

/**
 * Replaces `target` with whatever `fill` writes into a fresh temporary file.
 * If `fill` throws (or anything up to the rename fails) the temporary file is
 * removed and `target` is untouched. If the process dies, the temporary file
 * (`.<name>.tmp-<pid>-<random>`) is left behind; {@link removeStaleTempFiles}
 * cleans those up.
 */
export async function atomicWriteWith(
  target: string,
  fill: (fh: FileHandle, tempPath: string) => Promise<void>,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const abs = resolve(target);
  const dir = dirname(abs);
  const tmp = tempPathFor(abs);
  // 'wx' so that we never write through a file someone else created under
  // our (random) temp name, e.g. a symlink planted in a shared directory.
  const diskError = (err: unknown): unknown => {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && DISK_CODES.has(code) ? new DiskWriteError(code, abs, options.size, { cause: err }) : err;
  };
  let fh: FileHandle;
  try {
    const fail = injectedFailure();
    if (fail?.code === 'EROFS' && injectedWritten >= fail.afterBytes) throw injectedError('EROFS', 'open');
    fh = await open(tmp, 'wx', options.mode ?? 0o666);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw Object.assign(new Error(`cannot write ${abs}: directory ${dir} does not exist`), { code: 'ENOENT' });
    }
    throw diskError(err);
  }
  let closed = false;
  let renamed = false;
  try {
    await fill(fh, tmp);
    await fh.sync();
    await fh.close();
    closed = true;
    await rename(tmp, abs);
    renamed = true;
    await fsyncDir(dir);
  } catch (err) {
    throw diskError(err);
  } finally {
    if (!closed) await fh.close().catch(() => undefined);
    if (!renamed) await rm(tmp, { force: true }).catch(() => undefined);
  }
}

/** Atomically replaces `target` with `data` (string as UTF-8, bytes, or a list of byte chunks). */
export async function atomicWriteFile(
  target: string,
  data: string | Uint8Array | readonly Uint8Array[],
  options: AtomicWriteOptions = {},
): Promise<void> {
  const chunks: readonly Uint8Array[] =
    typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  const size = chunks.reduce((n, c) => n + c.byteLength, 0);
  await atomicWriteWith(
    target,
    async (fh) => {
      const w = new ChunkWriter(fh);
      for (const c of chunks) await w.write(c);
      await w.flush();
    },
    { size, ...options },
  );
}

/** Whether a process with this pid runs on this host (EPERM: it does, as another user). */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM means it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes temporary files left in `dir` by writers that died mid-write.
 * A temp file is stale only if its writer's pid is not running here AND it
 * has not been modified for `minAgeMs`: the age test protects writers on
 * other hosts sharing the directory over a network filesystem, whose pids
 * mean nothing here. Returns the paths removed.
 */
export async function removeStaleTempFiles(
  dir: string,
  options: { minAgeMs?: number; targetFilter?: (targetName: string) => boolean } = {},
): Promise<string[]> {
  const minAge = options.minAgeMs ?? 5 * 60_000;
  const names = await readdirIfExists(dir);
  const removed: string[] = [];
  const now = Date.now();
  for (const name of names) {
    const t = parseTempName(name);
    if (!t || (options.targetFilter && !options.targetFilter(t.target))) continue;
    if (t.pid === process.pid || processIsAlive(t.pid)) continue;
    const p = join(dir, name);
    try {
      const st = await stat(p);
      if (!st.isFile() || now - st.mtimeMs < minAge) continue;
      await rm(p, { force: true });
      removed.push(p);
    } catch {
      // Raced with another cleaner, or vanished: either way it is gone.
    }
  }
  return removed;
}
