// Token shards at llm.c's scale: `--data` takes llm.c's `.bin` shards (a
// 256 x int32 header: magic 20240520, version 1, token count; then uint16
// tokens) and globs of shards or gptcuda `.tok` files, read as one stream of
// tokens in the order of their names. Windows are read on demand with
// positioned reads, so no shard is loaded whole.
import * as fs from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { TokenFile, type TokenSource } from './dataset.js';

export const LLMC_MAGIC = 20240520;
export const LLMC_VERSION = 1;
export const LLMC_HEADER_BYTES = 256 * 4;

/** One llm.c token shard, validated on open (header and size; ids are checked as batches are read). */
export class LlmcShard implements TokenSource {
  readonly length: number;
  private fd: number | null;

  private constructor(readonly path: string, fd: number, length: number) {
    this.fd = fd;
    this.length = length;
  }

  static open(file: string): LlmcShard {
    const fd = (() => {
      try {
        return fs.openSync(file, 'r');
      } catch {
        throw new Error(`token shard not found or not readable: ${file}`);
      }
    })();
    try {
      return new LlmcShard(file, fd, llmcTokenCount(file, fd));
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  read(start: number, count: number): Int32Array {
    if (this.fd === null) throw new Error(`${this.path}: shard is closed`);
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > this.length)
      throw new RangeError(`token range [${start}, ${start + count}) is outside [0, ${this.length})`);
    const bytes = new Uint8Array(count * 2);
    for (let done = 0; done < bytes.length; ) {
      const n = fs.readSync(this.fd, bytes, done, bytes.length - done, LLMC_HEADER_BYTES + start * 2 + done);
      if (n === 0) throw new Error(`${this.path}: unexpected end of shard`);
      done += n;
    }
    const dv = new DataView(bytes.buffer);
    const out = new Int32Array(count);
    for (let i = 0; i < count; i++) out[i] = dv.getUint16(i * 2, true);
    return out;
  }

  where(offset: number): string {
    return `${this.path}: token ${offset} (byte offset ${LLMC_HEADER_BYTES + offset * 2})`;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

/** The token count of an llm.c shard's header, checked against the file's size. */
function llmcTokenCount(file: string, fd: number): number {
  const size = fs.fstatSync(fd).size;
  if (size < LLMC_HEADER_BYTES) throw new Error(`${file}: not an llm.c token shard (${size} bytes; its header alone is ${LLMC_HEADER_BYTES})`);
  const h = Buffer.alloc(12);
  fs.readSync(fd, h, 0, 12, 0);
  const magic = h.readInt32LE(0), version = h.readInt32LE(4), count = h.readInt32LE(8);
  if (magic !== LLMC_MAGIC) throw new Error(`${file}: not an llm.c token shard (magic ${magic}, expected ${LLMC_MAGIC}); make shards with llm.c's dev/data scripts or \`gptcuda tokenize\``);
  if (version !== LLMC_VERSION) throw new Error(`${file}: llm.c shard version ${version}; this build reads version ${LLMC_VERSION} (uint16 GPT-2 tokens)`);
  const expected = LLMC_HEADER_BYTES + 2 * count;
  if (count < 0 || expected !== size) throw new Error(`${file}: truncated or corrupt llm.c shard: the header says ${count} tokens (${expected} bytes) but the file has ${size} bytes`);
  return count;
}

/** Several sources read as one, back to back. */
export class ConcatTokenSource implements TokenSource {
  readonly length: number;
  private readonly starts: number[] = [];

  constructor(readonly parts: TokenSource[]) {
    let n = 0;
    for (const p of parts) {
      this.starts.push(n);
      n += p.length;
    }
    this.length = n;
  }

  private partOf(offset: number): number {
    let lo = 0, hi = this.parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  read(start: number, count: number): Int32Array {
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > this.length)
      throw new RangeError(`token range [${start}, ${start + count}) is outside [0, ${this.length})`);
    const out = new Int32Array(count);
    let done = 0;
    for (let p = this.partOf(start); done < count; p++) {
      const from = start + done - this.starts[p]!;
      const take = Math.min(count - done, this.parts[p]!.length - from);
      if (take > 0) out.set(this.parts[p]!.read(from, take), done);
      done += Math.max(take, 0);
    }
    return out;
  }

  where(offset: number): string {
    const p = this.partOf(offset);
    const part = this.parts[p]!;
    return part.where ? part.where(offset - this.starts[p]!) : `token ${offset - this.starts[p]!} of shard ${p}`;
  }
}

const GLOB = /[*?[]/;

/** `dir/name*.bin`: the files of dir whose names match (wildcards in the last part only), sorted. */
export function expandGlob(pattern: string): string[] {
  if (!GLOB.test(pattern)) return [pattern];
  const dir = dirname(pattern);
  if (GLOB.test(dir)) throw new Error(`--data ${pattern}: wildcards are supported in the file name only, not in its folders`);
  const re = new RegExp(
    '^' +
      basename(pattern)
        .replace(/[.+^${}()|\\]/g, '\\$&')
        .replace(/\*/g, '[^/]*')
        .replace(/\?/g, '[^/]') +
      '$',
  );
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    throw new Error(`--data ${pattern}: no folder ${dir}`);
  }
  const files = names.filter((n) => re.test(n)).sort().map((n) => join(dir, n));
  if (!files.length) throw new Error(`--data ${pattern}: no file matches`);
  return files;
}

function hasMagic(file: string, check: (head: Buffer) => boolean): boolean {
  try {
    if (!fs.statSync(file).isFile()) return false;
    const fd = fs.openSync(file, 'r');
    try {
      const head = Buffer.alloc(8);
      return fs.readSync(fd, head, 0, 8, 0) === 8 && check(head);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

const isLlmcShard = (f: string) => hasMagic(f, (h) => h.readInt32LE(0) === LLMC_MAGIC);

/**
 * The token source for `--data` when every path (globs expanded) is an llm.c
 * shard or a gptcuda token file; null when they are text. A single `.tok` file
 * opens as before (TokenFile, ids validated on open).
 */
export function openTokenShards(paths: string[], isTokenFile: (file: string) => boolean): TokenSource | null {
  const files = paths.flatMap(expandGlob);
  const kinds = files.map((f) => (isLlmcShard(f) ? 'llmc' : isTokenFile(f) ? 'tok' : 'text'));
  if (kinds.every((k) => k === 'text')) {
    if (paths.some((p) => GLOB.test(p))) throw new Error(`--data ${paths.join(' ')}: globs name token shards (llm.c .bin or gptcuda .tok); ${files[0]} is neither`);
    return null;
  }
  const text = files.find((_, i) => kinds[i] === 'text');
  if (text) throw new Error(`--data mixes token shards and text (${text}); give shards only, or tokenize the text with \`gptcuda tokenize\``);
  const parts = files.map((f, i) => (kinds[i] === 'llmc' ? LlmcShard.open(f) : TokenFile.open(f)));
  return parts.length === 1 ? parts[0]! : new ConcatTokenSource(parts);
}
