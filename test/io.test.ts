// ts/io: the shared read loops must survive short reads (pipes, network
// filesystems) and report where a file ended; the magic sniffer must not
// accept a file too short to hold the magic.
import * as fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatBytes } from '../ts/io/bytes.js';
import { fileHasMagic, readdirIfExists, readFully, readFullySync } from '../ts/io/files.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gptcuda-io-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A FileHandle over `data` that returns at most `step` bytes per read, as a slow pipe would. */
function trickle(data: Uint8Array, step: number): FileHandle {
  return {
    async read(buf: Uint8Array, offset: number, length: number, position: number) {
      const n = Math.max(0, Math.min(step, length, data.length - position));
      buf.set(data.subarray(position, position + n), offset);
      return { bytesRead: n, buffer: buf };
    },
  } as unknown as FileHandle;
}

describe('readFully', () => {
  const data = Uint8Array.from({ length: 100 }, (_, i) => (i * 7 + 3) & 0xff);

  it('fills the buffer through short reads, from the given position', async () => {
    const buf = new Uint8Array(40);
    expect(await readFully(trickle(data, 3), buf, 17)).toBe(40);
    expect([...buf]).toEqual([...data.subarray(17, 57)]);
  });

  it('returns the bytes read when the file ends first', async () => {
    const buf = new Uint8Array(40);
    expect(await readFully(trickle(data, 7), buf, 80)).toBe(20);
    expect([...buf.subarray(0, 20)]).toEqual([...data.subarray(80)]);
  });

  it('readFullySync reads a real file the same way', () => {
    const p = path.join(tmp, 'data.bin');
    fs.writeFileSync(p, data);
    const fd = fs.openSync(p, 'r');
    try {
      const buf = new Uint8Array(30);
      expect(readFullySync(fd, buf, 5)).toBe(30);
      expect([...buf]).toEqual([...data.subarray(5, 35)]);
      expect(readFullySync(fd, buf, 90)).toBe(10);
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('fileHasMagic', () => {
  it('matches the magic at its offset only, and not in a file cut inside it', () => {
    const p = path.join(tmp, 'magic.bin');
    fs.writeFileSync(p, Buffer.concat([Buffer.alloc(10), Buffer.from('ustar'), Buffer.alloc(3)]));
    expect(fileHasMagic(p, 'ustar', 10)).toBe(true);
    expect(fileHasMagic(p, 'ustar', 9)).toBe(false);
    expect(fileHasMagic(p, 'ustar', 0)).toBe(false);
    // POSIX tar's magic ends in a NUL: a file cut just before it must not match through zero padding.
    fs.writeFileSync(p, Buffer.concat([Buffer.alloc(10), Buffer.from('ustar')]));
    expect(fileHasMagic(p, 'ustar', 10)).toBe(true);
    expect(fileHasMagic(p, 'ustar\0', 10)).toBe(false);
    // Bytes that differ from the magic only in the high bit are not the magic.
    fs.writeFileSync(p, Buffer.from([0x75 | 0x80, 0x73, 0x74, 0x61, 0x72]));
    expect(fileHasMagic(p, 'ustar', 0)).toBe(false);
  });

  it('throws for a file that cannot be opened (callers decide what that means)', () => {
    expect(() => fileHasMagic(path.join(tmp, 'missing'), 'x')).toThrow(/ENOENT/);
  });
});

describe('readdirIfExists', () => {
  it('lists a folder, and gives no names for a missing one', async () => {
    const d = path.join(tmp, 'dir');
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'a'), '');
    expect(await readdirIfExists(d)).toEqual(['a']);
    expect(await readdirIfExists(path.join(tmp, 'nope'))).toEqual([]);
    await expect(readdirIfExists(path.join(d, 'a'))).rejects.toThrow(/ENOTDIR/);
  });
});

describe('formatBytes', () => {
  it('uses binary units with three significant digits', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(42 * 2 ** 20)).toBe('42.0 MiB');
    expect(formatBytes(6.2 * 2 ** 30)).toBe('6.20 GiB');
    expect(formatBytes(-2048)).toBe('-2.00 KiB');
    expect(formatBytes(Number.NaN)).toBe('--');
  });
});
