/**
 * Corpora at llm.c's scale: its token shards (`*.bin`), globs of shards or of
 * token files, and one token source that streams them end to end.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { fileHasMagic } from '../io/files.js';
import { TokenFile, Uint16TokenReader, isTokenFile, readExactly } from './token-file.js';
import { checkRange, type TokenSource } from './windows.js';

/*
 * llm.c's shard format (what its dev/data/*.py scripts write), little-endian:
 *
 *   offset  size  field
 *   0       1024  header: 256 int32; [0] magic 20240520, [1] version 1, [2] token count N
 *   1024    2·N   tokens, uint16 each
 *
 * Version 2 (uint32 tokens, for Llama 3's vocabulary) is not GPT-2 data and is refused.
 */
export const LLMC_SHARD_MAGIC = 20240520;
export const LLMC_SHARD_VERSION = 1;
export const LLMC_SHARD_HEADER_BYTES = 256 * 4;

/** The magic as the file's first four bytes (a little-endian int32). */
const LLMC_MAGIC_BYTES = (() => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(LLMC_SHARD_MAGIC);
  return b.toString('latin1');
})();

/** True when `file` is a regular file whose first int32 is llm.c's shard magic. */
export function isLlmcShard(file: string): boolean {
  try {
    return fs.statSync(file).isFile() && fileHasMagic(file, LLMC_MAGIC_BYTES);
  } catch {
    return false;
  }
}

/**
 * One llm.c shard opened for positioned reads. The header is checked against
 * the file's size at open; token ids are checked where they are read (the
 * DataLoader refuses ids at or above the model's vocabulary with this file and
 * offset), so opening a multi-gigabyte shard costs nothing.
 */
export class LlmcShard extends Uint16TokenReader {
  private constructor(file: string, fd: number, length: number) {
    super(file, fd, length, LLMC_SHARD_HEADER_BYTES);
  }

  static open(file: string): LlmcShard {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      throw new Error(`llm.c shard not found or not readable: ${file}`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < LLMC_SHARD_HEADER_BYTES)
        throw new Error(`${file}: not an llm.c shard (only ${size} bytes; the header alone is ${LLMC_SHARD_HEADER_BYTES})`);
      const h = Buffer.alloc(12);
      readExactly(fd, h, 0);
      const magic = h.readInt32LE(0);
      if (magic !== LLMC_SHARD_MAGIC) throw new Error(`${file}: not an llm.c shard (magic ${magic}, expected ${LLMC_SHARD_MAGIC})`);
      const version = h.readInt32LE(4);
      if (version !== LLMC_SHARD_VERSION)
        throw new Error(`${file}: llm.c shard version ${version} is not GPT-2 data (this build reads version ${LLMC_SHARD_VERSION}: uint16 tokens)`);
      const count = h.readInt32LE(8);
      const expected = LLMC_SHARD_HEADER_BYTES + 2 * count;
      if (count < 0 || expected !== size)
        throw new Error(`${file}: truncated or corrupt llm.c shard: the header says ${count} tokens (${expected} bytes) but the file has ${size} bytes`);
      return new LlmcShard(file, fd, count);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }
}

/** Several token sources read as one, in order (shards of one corpus). */
export class ConcatTokenSource implements TokenSource {
  readonly length: number;
  /** starts[i] = first token of part i; starts[parts.length] = length. */
  private readonly starts: number[];

  constructor(readonly parts: readonly TokenSource[]) {
    if (parts.length === 0) throw new Error('ConcatTokenSource: no sources');
    this.starts = [0];
    for (const p of parts) this.starts.push(this.starts[this.starts.length - 1]! + p.length);
    this.length = this.starts[parts.length]!;
  }

  /** Index of the part holding token `offset` (binary search: thousands of shards stay cheap). */
  private partOf(offset: number): number {
    let lo = 0;
    let hi = this.parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  read(start: number, count: number): Int32Array {
    checkRange(this.length, start, count);
    const out = new Int32Array(count);
    let done = 0;
    for (let p = this.partOf(start); done < count; p++) {
      const from = start + done - this.starts[p]!;
      const n = Math.min(count - done, this.parts[p]!.length - from);
      if (n > 0) out.set(this.parts[p]!.read(from, n), done);
      done += Math.max(n, 0);
    }
    return out;
  }

  where(offset: number): string {
    const p = this.partOf(offset);
    const part = this.parts[p]!;
    const local = offset - this.starts[p]!;
    return part.where ? part.where(local) : `token ${offset} of the token ids`;
  }

  close(): void {
    for (const p of this.parts) (p as { close?: () => void }).close?.();
  }
}

const GLOB_CHARS = /[*?]/;

/**
 * Expands `*` and `?` in the last path component of each input (the shell's
 * job, done here too so a quoted `--data 'shards/train_*.bin'` works the same);
 * matches sort in code-unit order, so the corpus order is the same on every
 * machine. An input without glob characters stands for itself.
 */
export function expandDataGlobs(inputs: readonly string[]): string[] {
  const out: string[] = [];
  for (const input of inputs) {
    // A path that exists is itself, even with * or ? in its name.
    if (!GLOB_CHARS.test(input) || fs.existsSync(input)) {
      out.push(input);
      continue;
    }
    const base = path.basename(input);
    const dir = path.dirname(input);
    if (GLOB_CHARS.test(dir)) throw new Error(`--data ${input}: only the file name may hold * or ? (not the directories)`);
    const re = new RegExp('^' + base.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      throw new Error(`--data ${input}: directory ${dir} not found`);
    }
    const matches = names.filter((n) => re.test(n)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (matches.length === 0) throw new Error(`--data ${input}: no file matches`);
    for (const n of matches) out.push(path.join(dir, n));
  }
  return out;
}

/** What a --data path holds, by its first bytes: a token file, an llm.c shard, or (anything else) text. */
export function dataKind(file: string): 'tok' | 'shard' | 'text' {
  return isTokenFile(file) ? 'tok' : isLlmcShard(file) ? 'shard' : 'text';
}

/**
 * The token source for `--data` when every path is a token file (`gptcuda
 * tokenize`) or an llm.c shard, streamed end to end; null when the paths are
 * text. Mixing text with token data is an error (text would need tokenizing
 * into the same stream). `vocabSize` is checked in token files at open.
 */
export function openTokenData(paths: readonly string[], options: { vocabSize?: number } = {}): TokenSource | null {
  const kinds = paths.map(dataKind);
  if (kinds.every((k) => k === 'text')) return null;
  const text = kinds.indexOf('text');
  if (text >= 0)
    throw new Error(`--data mixes token data with ${paths[text]}, which is neither a token file nor an llm.c shard; tokenize the text first (gptcuda tokenize) or pass only text`);
  const parts: TokenSource[] = [];
  try {
    for (let i = 0; i < paths.length; i++) parts.push(kinds[i] === 'tok' ? TokenFile.open(paths[i]!, options) : LlmcShard.open(paths[i]!));
  } catch (err) {
    for (const p of parts) (p as { close?: () => void }).close?.();
    throw err;
  }
  return parts.length === 1 ? parts[0]! : new ConcatTokenSource(parts);
}
