/**
 * Decompressor for Snappy's raw block format (not the framed/stream format).
 * TensorFlow's checkpoint index tables may store blocks Snappy-compressed
 * (table compression type 1), so reading them needs this and nothing more.
 *
 * Format: a varint with the uncompressed length, then a sequence of elements
 * whose tag byte's low two bits select
 *   0: literal (length in the tag, or in 1-4 following bytes),
 *   1: copy, length 4..11, 11-bit offset (3 bits in the tag + 1 byte),
 *   2: copy, length 1..64, 2-byte little-endian offset,
 *   3: copy, length 1..64, 4-byte little-endian offset.
 * Copies may overlap their own output (offset < length), which is how Snappy
 * encodes runs, so those are copied byte by byte.
 *
 * Every read and write is bounds-checked: corrupt input throws a
 * SnappyError instead of producing garbage or reading out of range.
 */

export class SnappyError extends Error {
  constructor(message: string) {
    super(`Snappy: ${message}`);
    this.name = 'SnappyError';
  }
}

/** Upper bound accepted for the declared length, so a corrupt preamble cannot make us allocate gigabytes. */
const DEFAULT_MAX_OUTPUT = 1 << 30;

/** Reads the uncompressed length from the preamble without decompressing. */
export function snappyUncompressedLength(input: Uint8Array): number {
  return readPreamble(input).length;
}

function readPreamble(input: Uint8Array): { length: number; pos: number } {
  let result = 0;
  let shift = 0;
  let pos = 0;
  for (;;) {
    if (pos >= input.length) throw new SnappyError('input ends inside the length preamble');
    if (shift > 28) throw new SnappyError('length preamble is longer than 5 bytes');
    const b = input[pos++]!;
    // Multiplication instead of << keeps values above 2^31 positive.
    result += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
    shift += 7;
  }
  if (result > 0xffffffff) throw new SnappyError(`declared length ${result} exceeds 2^32-1`);
  return { length: result, pos };
}

export interface SnappyOptions {
  /** Refuse streams that declare more output than this many bytes (default 1 GiB). */
  maxOutputLength?: number;
}

export function snappyDecompress(input: Uint8Array, options: SnappyOptions = {}): Uint8Array {
  const { length: outLen, pos: start } = readPreamble(input);
  const maxOut = options.maxOutputLength ?? DEFAULT_MAX_OUTPUT;
  if (outLen > maxOut) {
    throw new SnappyError(`declared length ${outLen} exceeds the limit of ${maxOut} bytes (corrupt input?)`);
  }
  const out = new Uint8Array(outLen);
  let op = 0;
  let ip = start;
  const n = input.length;

  while (ip < n) {
    const tagPos = ip;
    const tag = input[ip++]!;
    const kind = tag & 3;
    if (kind === 0) {
      let len = tag >>> 2;
      if (len >= 60) {
        const extra = len - 59; // 1..4 bytes of little-endian (length - 1)
        if (ip + extra > n) throw new SnappyError(`literal length at byte ${tagPos} runs past the end of input`);
        len = 0;
        for (let k = 0; k < extra; k++) len += input[ip + k]! * 2 ** (8 * k);
        ip += extra;
      }
      len += 1;
      if (ip + len > n) {
        throw new SnappyError(`literal of ${len} bytes at byte ${tagPos} runs past the end of input (${n} bytes)`);
      }
      if (op + len > outLen) {
        throw new SnappyError(`literal at byte ${tagPos} overflows the declared length ${outLen}`);
      }
      out.set(input.subarray(ip, ip + len), op);
      ip += len;
      op += len;
      continue;
    }

    let len: number;
    let offset: number;
    if (kind === 1) {
      if (ip + 1 > n) throw new SnappyError(`copy at byte ${tagPos} is missing its offset byte`);
      len = ((tag >>> 2) & 7) + 4;
      offset = ((tag >>> 5) << 8) | input[ip]!;
      ip += 1;
    } else if (kind === 2) {
      if (ip + 2 > n) throw new SnappyError(`copy at byte ${tagPos} is missing its 2-byte offset`);
      len = (tag >>> 2) + 1;
      offset = input[ip]! | (input[ip + 1]! << 8);
      ip += 2;
    } else {
      if (ip + 4 > n) throw new SnappyError(`copy at byte ${tagPos} is missing its 4-byte offset`);
      len = (tag >>> 2) + 1;
      offset = (input[ip]! | (input[ip + 1]! << 8) | (input[ip + 2]! << 16) | (input[ip + 3]! << 24)) >>> 0;
      ip += 4;
    }
    if (offset === 0) throw new SnappyError(`copy at byte ${tagPos} has offset 0`);
    if (offset > op) {
      throw new SnappyError(`copy at byte ${tagPos} reaches back ${offset} bytes but only ${op} have been produced`);
    }
    if (op + len > outLen) {
      throw new SnappyError(`copy at byte ${tagPos} overflows the declared length ${outLen}`);
    }
    const from = op - offset;
    if (offset >= len) {
      out.copyWithin(op, from, from + len);
    } else {
      // Overlapping copy: each byte may depend on one written in this copy.
      for (let k = 0; k < len; k++) out[op + k] = out[from + k]!;
    }
    op += len;
  }

  if (op !== outLen) {
    throw new SnappyError(`input ended after ${op} bytes of output, but the preamble declared ${outLen}`);
  }
  return out;
}
