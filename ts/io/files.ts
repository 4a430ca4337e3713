// File reads that fill their buffer: fs reads may return fewer bytes than
// asked for (pipes, network filesystems, files past 2 GiB), so every reader of
// a binary format loops; the loop lives here once.
import * as fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/** Node rejects single reads of 2 GiB or more; tensors can be larger. */
const MAX_READ = 1 << 30;

/** Fills `buf` from byte `position` of the file; returns the bytes read, fewer only at the end of the file. */
export async function readFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, Math.min(MAX_READ, buf.length - done), position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** readFully for a synchronous file descriptor. */
export function readFullySync(fd: number, buf: Uint8Array, position: number): number {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, Math.min(MAX_READ, buf.length - done), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** Whether the file holds `magic` (latin1) at byte `offset`; a shorter file does not. Throws when it cannot be read. */
export function fileHasMagic(file: string, magic: string, offset = 0): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(magic.length);
    return readFullySync(fd, buf, offset) === buf.length && buf.toString('latin1') === magic;
  } finally {
    fs.closeSync(fd);
  }
}

/** The names in `dir`; none when it does not exist. */
export async function readdirIfExists(dir: string): Promise<string[]> {
  try {
    return await fs.promises.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
