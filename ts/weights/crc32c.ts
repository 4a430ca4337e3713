/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by LevelDB
 * tables and TensorFlow tensor bundles.
 *
 * Node's zlib only offers the IEEE CRC32, so this is a plain TypeScript
 * implementation. It uses "slicing-by-16": sixteen 256-entry tables let the
 * loop consume sixteen bytes per iteration with independent lookups, and on
 * little-endian hosts the input is read as aligned 32-bit words. Together
 * that is about 1-1.5 GB/s in V8 versus ~150 MB/s for the byte-at-a-time
 * loop; it matters because verifying the 1558M checkpoint hashes 6.2 GB.
 */

import { LITTLE_ENDIAN_HOST } from '../io/bytes.js';

const POLY = 0x82f63b78;
const SLICES = 16;

/** TABLES[k*256 + b] = CRC contribution of byte b followed by k zero bytes. */
const TABLES: Uint32Array = buildTables();

function buildTables(): Uint32Array {
  const t = new Uint32Array(SLICES * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i]!;
    for (let k = 1; k < SLICES; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + i] = c >>> 0;
    }
  }
  return t;
}

/**
 * Extends a running CRC32C with `data[start, end)`. Start with crc = 0; the
 * pre/post inversion is handled inside, so `crc32cUpdate(crc32cUpdate(0, a), b)`
 * equals `crc32c(a ++ b)`, which lets callers hash huge files chunk by chunk.
 */
export function crc32cUpdate(crc: number, data: Uint8Array, start = 0, end = data.length): number {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > data.length || start > end) {
    throw new RangeError(`crc32cUpdate: range [${start}, ${end}) outside buffer of ${data.length} bytes`);
  }
  const t = TABLES;
  let c = ~crc | 0;
  let i = start;
  if (LITTLE_ENDIAN_HOST && end - start >= 64) {
    // Byte loop up to a 4-byte aligned address so an Int32Array view can be
    // taken over the middle; reading words is what makes V8 fast here.
    while ((data.byteOffset + i) & 3) c = t[(c ^ data[i++]!) & 0xff]! ^ (c >>> 8);
    const nWords = ((end - i) >>> 4) << 2;
    const w = new Int32Array(data.buffer, data.byteOffset + i, nWords);
    for (let j = 0; j < nWords; j += 4) {
      const a = c ^ w[j]!;
      const b = w[j + 1]!;
      const d = w[j + 2]!;
      const e = w[j + 3]!;
      c =
        t[3840 + (a & 0xff)]! ^ t[3584 + ((a >>> 8) & 0xff)]! ^ t[3328 + ((a >>> 16) & 0xff)]! ^ t[3072 + (a >>> 24)]! ^
        t[2816 + (b & 0xff)]! ^ t[2560 + ((b >>> 8) & 0xff)]! ^ t[2304 + ((b >>> 16) & 0xff)]! ^ t[2048 + (b >>> 24)]! ^
        t[1792 + (d & 0xff)]! ^ t[1536 + ((d >>> 8) & 0xff)]! ^ t[1280 + ((d >>> 16) & 0xff)]! ^ t[1024 + (d >>> 24)]! ^
        t[768 + (e & 0xff)]! ^ t[512 + ((e >>> 8) & 0xff)]! ^ t[256 + ((e >>> 16) & 0xff)]! ^ t[e >>> 24]!;
    }
    i += nWords * 4;
  } else {
    // Portable path (big-endian hosts, short inputs): assemble the first word
    // from bytes so the result never depends on host byte order.
    const end16 = i + ((end - i) & ~15);
    for (; i < end16; i += 16) {
      const a = c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
      c =
        t[3840 + (a & 0xff)]! ^ t[3584 + ((a >>> 8) & 0xff)]! ^ t[3328 + ((a >>> 16) & 0xff)]! ^ t[3072 + (a >>> 24)]! ^
        t[2816 + data[i + 4]!]! ^ t[2560 + data[i + 5]!]! ^ t[2304 + data[i + 6]!]! ^ t[2048 + data[i + 7]!]! ^
        t[1792 + data[i + 8]!]! ^ t[1536 + data[i + 9]!]! ^ t[1280 + data[i + 10]!]! ^ t[1024 + data[i + 11]!]! ^
        t[768 + data[i + 12]!]! ^ t[512 + data[i + 13]!]! ^ t[256 + data[i + 14]!]! ^ t[data[i + 15]!]!;
    }
  }
  while (i < end) c = t[(c ^ data[i++]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC32C of a whole buffer (or string, hashed as UTF-8). */
export function crc32c(data: Uint8Array | string): number {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  return crc32cUpdate(0, bytes);
}

const MASK_DELTA = 0xa282ead8;

/**
 * LevelDB/TensorFlow store CRCs "masked": hashing data that itself contains
 * CRCs gives poor results, so stored values are rotated right by 15 bits and
 * offset by a constant.
 */
export function maskCrc(crc: number): number {
  const rot = ((crc >>> 15) | (crc << 17)) >>> 0;
  return (rot + MASK_DELTA) >>> 0;
}

/** Inverse of {@link maskCrc}. */
export function unmaskCrc(masked: number): number {
  const rot = (masked - MASK_DELTA) >>> 0;
  return ((rot >>> 17) | (rot << 15)) >>> 0;
}
