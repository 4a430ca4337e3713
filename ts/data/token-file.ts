/**
 * A binary token file (`gptcuda tokenize`) for corpora too large to tokenize
 * on every run: writing one from text, and streaming one as a token source.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { LITTLE_ENDIAN_HOST } from '../io/bytes.js';
import { fileHasMagic, readFullySync } from '../io/files.js';
import { normalizeNewlines, resolveInputs } from './text.js';
import { EOT_ID, VOCAB_SIZE, textToTokenIdsAsync } from './tokenizer.js';
import { checkPositiveInt, checkRange, type TokenSource } from './windows.js';

// ---------------------------------------------------------------------------
// Binary token files
// ---------------------------------------------------------------------------

/*
 * Token file format (all integers little-endian):
 *
 *   offset  size  field
 *   0       8     magic, ASCII "GPTCTOK1"
 *   8       4     version, u32 = 1
 *   12      8     token count N, u64
 *   20      2·N   tokens, u16 each (GPT-2 ids are < 65,536)
 *
 * The file size must be exactly 20 + 2·N bytes.
 */
export const TOKEN_FILE_MAGIC = 'GPTCTOK1';
export const TOKEN_FILE_VERSION = 1;
export const TOKEN_FILE_HEADER_BYTES = 20;

/** True when `file` is a regular file that starts with the token-file magic. */
export function isTokenFile(file: string): boolean {
  try {
    return fs.statSync(file).isFile() && fileHasMagic(file, TOKEN_FILE_MAGIC);
  } catch {
    return false;
  }
}

function encodeHeader(count: number): Buffer {
  const h = Buffer.alloc(TOKEN_FILE_HEADER_BYTES);
  h.write(TOKEN_FILE_MAGIC, 0, 'ascii');
  h.writeUInt32LE(TOKEN_FILE_VERSION, 8);
  h.writeBigUInt64LE(BigInt(count), 12);
  return h;
}

/**
 * Last index `p` in `text` at which the text can be cut without changing its
 * GPT-2 tokens: encode(text[:p]) + encode(text[p:]) == encode(text). Returns -1
 * if there is none.
 *
 * Two kinds of cut are safe with GPT-2's pre-tokenizer regex
 * `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`:
 *  - after a lone "\n" between two non-space characters ("x\n|y"): no piece
 *    runs across a newline unless it is a run of whitespace, and this run is
 *    exactly "\n" with or without what follows;
 *  - before a single space between ASCII letters/digits ("a| b"): the letter
 *    run stops at the space either way and " b..." begins the next piece.
 * Neither can fall inside `<|endoftext|>`.
 */
export function findSafeCut(text: string, from = 0): number {
  const isWs = (c: string | undefined): boolean => c === undefined || /\s/u.test(c);
  const isAlnum = (code: number): boolean => (code >= 48 && code <= 57) || (code >= 65 && code <= 90) || (code >= 97 && code <= 122);
  for (let p = text.length - 1; p >= Math.max(from, 2); p--) {
    const c = text.charCodeAt(p);
    if (text.charCodeAt(p - 1) === 10 && !isWs(text[p - 2]) && !isWs(text[p])) return p;
    if (c === 32 && p + 1 < text.length && isAlnum(text.charCodeAt(p - 1)) && isAlnum(text.charCodeAt(p + 1))) return p;
  }
  return -1;
}

export interface PretokenizeProgress {
  file: string;
  fileIndex: number;
  files: number;
  bytesDone: number;
  bytesTotal: number;
  tokens: number;
}

export interface PretokenizeOptions {
  /** Bytes read per step (default 4 MiB); small values are for tests. */
  chunkBytes?: number;
  onProgress?: (p: PretokenizeProgress) => void;
}

export interface PretokenizeResult {
  path: string;
  tokens: number;
  bytes: number;
  files: string[];
}

/**
 * Tokenize text files into a token file without holding the text in memory:
 * each file is streamed, decoded and tokenized in pieces cut only where
 * cutting cannot change the tokens (see findSafeCut), so the result equals
 * `textToTokenIds(loadText(inputs))`. Written to a temporary file first and
 * renamed, so an interrupted run never leaves a half-written token file.
 */
export async function pretokenize(inputs: string | string[], outPath: string, options: PretokenizeOptions = {}): Promise<PretokenizeResult> {
  const files = resolveInputs(inputs);
  const chunkBytes = options.chunkBytes ?? 4 << 20;
  checkPositiveInt('chunk bytes', chunkBytes);
  const bytesTotal = files.reduce((s, f) => s + fs.statSync(f).size, 0);

  const dir = path.dirname(path.resolve(outPath));
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(outPath)}.${process.pid}.${Date.now()}.tmp`);
  const out = await fs.promises.open(tmp, 'w');
  let tokens = 0;
  let bytesDone = 0;
  const buf = new Uint16Array(1 << 20);
  let fill = 0;
  const flush = async (): Promise<void> => {
    if (fill === 0) return;
    let bytes: Buffer;
    if (LITTLE_ENDIAN_HOST) {
      bytes = Buffer.from(buf.buffer, buf.byteOffset, fill * 2);
    } else {
      bytes = Buffer.alloc(fill * 2);
      for (let i = 0; i < fill; i++) bytes.writeUInt16LE(buf[i]!, i * 2);
    }
    await out.write(bytes, 0, bytes.length, TOKEN_FILE_HEADER_BYTES + (tokens - fill) * 2);
    fill = 0;
  };
  const emit = async (ids: ArrayLike<number>): Promise<void> => {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id < 0 || id > 0xffff) throw new Error(`token id ${id} does not fit in 16 bits`);
      buf[fill++] = id;
      tokens++;
      if (fill === buf.length) await flush();
    }
  };

  try {
    await out.write(encodeHeader(0), 0, TOKEN_FILE_HEADER_BYTES, 0);
    for (let fi = 0; fi < files.length; fi++) {
      const file = files[fi]!;
      if (fi > 0) await emit([EOT_ID]);
      const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
      const input = await fs.promises.open(file, 'r');
      try {
        const raw = Buffer.alloc(chunkBytes);
        let text = '';
        let heldCR = false;
        // Text before this index was already searched for a cut in vain;
        // without it a long stretch with no cut point would be rescanned quadratically.
        let searched = 0;
        for (;;) {
          const { bytesRead } = await input.read(raw, 0, chunkBytes, null);
          const last = bytesRead === 0;
          let piece: string;
          try {
            piece = decoder.decode(raw.subarray(0, bytesRead), { stream: !last });
          } catch {
            throw new Error(`${file}: not valid UTF-8 text`);
          }
          if (heldCR) piece = '\r' + piece;
          // A "\r" at the end may be the first half of "\r\n"; decide next round.
          heldCR = !last && piece.endsWith('\r');
          if (heldCR) piece = piece.slice(0, -1);
          text += normalizeNewlines(piece);
          bytesDone += bytesRead;
          if (last) {
            if (text.length > 0) await emit(await textToTokenIdsAsync(text));
            text = '';
          } else {
            const cut = findSafeCut(text, searched);
            if (cut > 0) {
              await emit(await textToTokenIdsAsync(text.slice(0, cut)));
              text = text.slice(cut);
            }
            // The cut found is the last one, so what is left has been searched
            // except for its last characters, which lacked their lookahead.
            searched = Math.max(0, text.length - 2);
          }
          options.onProgress?.({ file, fileIndex: fi, files: files.length, bytesDone, bytesTotal, tokens });
          if (last) break;
        }
      } finally {
        await input.close();
      }
    }
    await flush();
    await out.write(encodeHeader(tokens), 0, TOKEN_FILE_HEADER_BYTES, 0);
    await out.sync();
    await out.close();
    fs.renameSync(tmp, outPath);
  } catch (err) {
    await out.close().catch(() => undefined);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  return { path: outPath, tokens, bytes: bytesDone, files };
}

/**
 * Little-endian uint16 token ids after a fixed-size header, read on demand
 * with positioned reads (a token file's layout, and llm.c's shards'), so a
 * corpus of any size costs no memory; call close() when done (or rely on
 * process exit).
 */
export class Uint16TokenReader implements TokenSource {
  private fd: number | null;

  protected constructor(
    readonly path: string,
    fd: number,
    readonly length: number,
    private readonly headerBytes: number,
  ) {
    this.fd = fd;
  }

  read(start: number, count: number): Int32Array {
    if (this.fd === null) throw new Error(`${this.path}: token file is closed`);
    checkRange(this.length, start, count);
    const bytes = new Uint8Array(count * 2);
    readExactly(this.fd, bytes, this.headerBytes + start * 2);
    const outArr = new Int32Array(count);
    if (LITTLE_ENDIAN_HOST) {
      outArr.set(new Uint16Array(bytes.buffer, 0, count));
    } else {
      const dv = new DataView(bytes.buffer);
      for (let i = 0; i < count; i++) outArr[i] = dv.getUint16(i * 2, true);
    }
    return outArr;
  }

  where(offset: number): string {
    return `${this.path}: token ${offset} (byte offset ${this.headerBytes + offset * 2})`;
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** A token file (`gptcuda tokenize`) opened for random access. */
export class TokenFile extends Uint16TokenReader {
  private constructor(file: string, fd: number, length: number) {
    super(file, fd, length, TOKEN_FILE_HEADER_BYTES);
  }

  /**
   * Opens and validates a token file: magic, version, header count against the
   * file size, and every token id < `vocabSize` (default: GPT-2's 50,257), so a
   * bad id fails here, with the file and the token offset, not mid-training.
   */
  static open(file: string, options: { vocabSize?: number } = {}): TokenFile {
    const vocabSize = options.vocabSize ?? VOCAB_SIZE;
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      throw new Error(`Token file not found or not readable: ${file}`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < TOKEN_FILE_HEADER_BYTES) {
        throw new Error(`${file}: not a token file (only ${size} bytes; the header alone is ${TOKEN_FILE_HEADER_BYTES})`);
      }
      const h = Buffer.alloc(TOKEN_FILE_HEADER_BYTES);
      readExactly(fd, h, 0);
      const magic = h.toString('latin1', 0, 8);
      if (magic !== TOKEN_FILE_MAGIC) {
        throw new Error(`${file}: not a token file (magic ${JSON.stringify(magic)}, expected ${JSON.stringify(TOKEN_FILE_MAGIC)}); create one with pretokenize`);
      }
      const version = h.readUInt32LE(8);
      if (version !== TOKEN_FILE_VERSION) {
        throw new Error(`${file}: unsupported token file version ${version} (this build reads version ${TOKEN_FILE_VERSION})`);
      }
      const count = h.readBigUInt64LE(12);
      const expected = BigInt(TOKEN_FILE_HEADER_BYTES) + 2n * count;
      if (expected !== BigInt(size)) {
        throw new Error(
          `${file}: truncated or corrupt token file: the header says ${count} tokens (${expected} bytes) but the file has ${size} bytes`,
        );
      }
      const n = Number(count);
      const CHUNK = 1 << 20;
      const bytes = new Uint8Array(Math.min(n, CHUNK) * 2);
      const dv = new DataView(bytes.buffer);
      for (let start = 0; start < n; start += CHUNK) {
        const len = Math.min(CHUNK, n - start);
        readExactly(fd, bytes.subarray(0, len * 2), TOKEN_FILE_HEADER_BYTES + start * 2);
        for (let i = 0; i < len; i++) {
          const id = dv.getUint16(i * 2, true);
          if (id >= vocabSize) {
            throw new Error(`${file}: ${options.vocabSize === undefined ? 'corrupt token file: ' : ''}token ${start + i} (byte offset ${TOKEN_FILE_HEADER_BYTES + (start + i) * 2}) is id ${id}, not below the vocabulary size ${vocabSize}`);
          }
        }
      }
      return new TokenFile(file, fd, n);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }
}

export function readExactly(fd: number, into: Uint8Array, position: number): void {
  if (readFullySync(fd, into, position) < into.length) throw new Error('unexpected end of token file');
}
