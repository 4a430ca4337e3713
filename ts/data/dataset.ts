/**
 * The book's data pipeline (chapter 2's GPTDatasetV1 / create_dataloader_v1 and
 * chapter 5's train/validation split), plus a binary token file for corpora too
 * large to tokenize on every run.
 *
 * Faithfulness notes:
 *  - Text is split into train/validation by *characters* (Python code points),
 *    and each part is tokenized separately, exactly as chapter 5 does. For
 *    the-verdict.txt that gives 4,612 + 534 tokens (one more than the 5,145 of
 *    the whole text, because the split falls inside a word).
 *  - Windows start at `range(0, len(ids) - max_length, stride)`; note that this
 *    range excludes the last possible window when `len(ids) - max_length` is a
 *    multiple of the stride. We keep that quirk.
 *  - Files are read like Python's `open(path, "r", encoding="utf-8")`: invalid
 *    UTF-8 is an error and newlines are translated (`\r\n` and `\r` → `\n`).
 *
 * Shuffling uses our own seeded Rng, not PyTorch's, so the shuffled order
 * differs from the book's; batch counts and contents per window do not.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Rng, type RngState } from '../tensor/rng.js';
import { EOT_ID, EOT_TEXT, VOCAB_SIZE, textToTokenIds, textToTokenIdsAsync } from './tokenizer.js';

// ---------------------------------------------------------------------------
// Reading text
// ---------------------------------------------------------------------------

/** Python's universal-newlines mode, so CRLF files tokenize as in the book. */
export function normalizeNewlines(text: string): string {
  return text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
}

function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    // ignoreBOM keeps a leading U+FEFF, as Python's "utf-8" codec does.
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    const where = at >= 0 ? ` at byte ${at} (0x${bytes[at]!.toString(16).padStart(2, '0')})` : '';
    throw new Error(
      `${file}: not valid UTF-8 text${where}; convert it first, e.g. iconv -f latin1 -t utf-8 ${file} > ${file.replace(/(\.[^./]*)?$/, '.utf8$1')}`,
    );
  }
}

/** Byte offset of the first byte that does not start or continue a valid UTF-8 sequence; -1 if none. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    let n: number;
    let min: number;
    if (c < 0x80) { i++; continue; }
    else if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

/**
 * Expand the inputs to a list of text files: a file stands for itself, a
 * directory for its `.txt` files sorted by name (not recursive).
 */
export function resolveInputs(inputs: string | string[]): string[] {
  const list = typeof inputs === 'string' ? [inputs] : inputs;
  if (list.length === 0) throw new Error('No input text given: pass a .txt file, several files, or a directory of .txt files');
  const files: string[] = [];
  for (const input of list) {
    let st: fs.Stats;
    try {
      st = fs.statSync(input);
    } catch {
      throw new Error(`Input not found: ${input}`);
    }
    if (st.isDirectory()) {
      const entries = fs.readdirSync(input, { withFileTypes: true });
      if (entries.length === 0) throw new Error(`Input directory is empty: ${input}`);
      // Code-unit order rather than localeCompare, so the order (and thus the
      // token stream) is the same on every machine.
      const txt = entries
        .filter((e) => /\.txt$/i.test(e.name) && isFileFollowingLinks(path.join(input, e.name)))
        .map((e) => e.name)
        .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      if (txt.length === 0) throw new Error(`Input directory has no .txt files: ${input}`);
      for (const name of txt) files.push(path.join(input, name));
    } else if (st.isFile()) {
      files.push(input);
    } else {
      throw new Error(`Input is neither a file nor a directory: ${input}`);
    }
  }
  return files;
}

function isFileFollowingLinks(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Read one UTF-8 text file the way Python's `open(path, encoding="utf-8").read()` would. */
export function readTextFile(file: string): string {
  return normalizeNewlines(decodeUtf8(fs.readFileSync(file), file));
}

/**
 * Load a text file, several files, or a directory of `.txt` files (sorted by
 * name). Several files are joined with `<|endoftext|>`, which the tokenizer
 * turns into the single id 50256.
 */
export function loadText(inputs: string | string[]): string {
  return resolveInputs(inputs).map(readTextFile).join(EOT_TEXT);
}

// ---------------------------------------------------------------------------
// Train/validation split
// ---------------------------------------------------------------------------

/** Length in Unicode code points, i.e. Python's `len(str)`. */
export function codePointLength(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** UTF-16 index of code point number `cp` (clamped to the end). */
function codePointToIndex(text: string, cp: number): number {
  let i = 0;
  let k = 0;
  while (k < cp && i < text.length) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      i += d >= 0xdc00 && d <= 0xdfff ? 2 : 1;
    } else {
      i++;
    }
    k++;
  }
  return i;
}

export interface TextSplit {
  train: string;
  val: string;
  /** Split position in code points: `int(train_ratio * len(text))`. */
  splitIndex: number;
}

/**
 * The book's split: `split_idx = int(train_ratio * len(text_data))`, then
 * `text_data[:split_idx]` and `text_data[split_idx:]`. Counting is in code
 * points so that non-ASCII text splits where Python would split it (a JS string
 * index counts UTF-16 units, and would cut emoji in half).
 */
export function splitText(text: string, trainRatio = 0.9): TextSplit {
  checkRatio(trainRatio);
  const splitIndex = Math.floor(trainRatio * codePointLength(text));
  const at = codePointToIndex(text, splitIndex);
  return { train: text.slice(0, at), val: text.slice(at), splitIndex };
}

function checkRatio(trainRatio: number): void {
  if (!(typeof trainRatio === 'number' && trainRatio > 0 && trainRatio < 1)) {
    throw new Error(`train ratio must be a number strictly between 0 and 1, got ${trainRatio}`);
  }
}

// ---------------------------------------------------------------------------
// Token sources
// ---------------------------------------------------------------------------

/** A read-only sequence of token ids that can be read in ranges. */
export interface TokenSource {
  readonly length: number;
  /** Tokens `[start, start + count)` as a fresh array the caller may keep. */
  read(start: number, count: number): Int32Array;
  /** Where token `offset` lives, for error messages (a file and its token offset). */
  where?(offset: number): string;
}

function checkRange(length: number, start: number, count: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > length) {
    throw new RangeError(`token range [${start}, ${start + count}) is outside [0, ${length})`);
  }
}

/** Token ids held in memory. */
export class ArrayTokenSource implements TokenSource {
  private readonly ids: Int32Array;

  constructor(
    ids: ArrayLike<number>,
    /** Where the ids came from, for error messages: "the training split of notes.txt". */
    private readonly label?: string,
  ) {
    this.ids = ids instanceof Int32Array ? ids : Int32Array.from(ids);
  }

  where(offset: number): string {
    return `token ${offset} of ${this.label ?? 'the token ids'}`;
  }

  get length(): number {
    return this.ids.length;
  }

  read(start: number, count: number): Int32Array {
    checkRange(this.ids.length, start, count);
    return this.ids.slice(start, start + count);
  }
}

/** A contiguous part `[start, end)` of another source, e.g. the validation tail of a token file. */
export class SliceTokenSource implements TokenSource {
  readonly length: number;

  constructor(
    private readonly base: TokenSource,
    private readonly start: number,
    end: number,
  ) {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > base.length) {
      throw new RangeError(`slice [${start}, ${end}) is outside the source's [0, ${base.length})`);
    }
    this.length = end - start;
  }

  read(start: number, count: number): Int32Array {
    checkRange(this.length, start, count);
    return this.base.read(this.start + start, count);
  }

  where(offset: number): string {
    return describeToken(this.base, this.start + offset);
  }
}

function describeToken(source: TokenSource, offset: number): string {
  return source.where ? source.where(offset) : `token ${offset} of the token ids`;
}

function asSource(ids: TokenSource | ArrayLike<number>): TokenSource {
  return typeof (ids as TokenSource).read === 'function' ? (ids as TokenSource) : new ArrayTokenSource(ids as ArrayLike<number>);
}

// ---------------------------------------------------------------------------
// Windows (GPTDatasetV1)
// ---------------------------------------------------------------------------

function checkPositiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
}

/** Number of windows the book's loop produces: `len(range(0, n - T, stride))`. */
export function countWindows(numTokens: number, contextLength: number, stride: number): number {
  const span = numTokens - contextLength;
  return span > 0 ? Math.ceil(span / stride) : 0;
}

/** Fewest tokens for which the book's loop yields `k` windows. */
export function tokensForWindows(k: number, contextLength: number, stride: number): number {
  return (k - 1) * stride + contextLength + 1;
}

/**
 * The book's GPTDatasetV1: window i starts at token `i * stride`; its input is
 * `ids[s : s+T]` and its target `ids[s+1 : s+T+1]`, for
 * `s in range(0, len(ids) - T, stride)`. Windows are read lazily from the
 * source, so a token file is never loaded whole.
 */
export class TokenWindows {
  readonly source: TokenSource;
  readonly contextLength: number;
  readonly stride: number;
  readonly length: number;

  constructor(ids: TokenSource | ArrayLike<number>, contextLength: number, stride = contextLength) {
    checkPositiveInt('context length', contextLength);
    checkPositiveInt('stride', stride);
    this.source = asSource(ids);
    this.contextLength = contextLength;
    this.stride = stride;
    this.length = countWindows(this.source.length, contextLength, stride);
  }

  /** First token of window `i`. */
  start(i: number): number {
    return i * this.stride;
  }

  /** The `T + 1` tokens of window `i`: input is `[0, T)`, target is `[1, T]`. */
  readSpan(i: number): Int32Array {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new RangeError(`window ${i} is outside [0, ${this.length})`);
    return this.source.read(i * this.stride, this.contextLength + 1);
  }

  get(i: number): { input: Int32Array; target: Int32Array } {
    const span = this.readSpan(i);
    return { input: span.subarray(0, this.contextLength), target: span.subarray(1) };
  }
}

// ---------------------------------------------------------------------------
// DataLoader
// ---------------------------------------------------------------------------

/** One batch, row-major `[batchSize, contextLength]`. */
export interface Batch {
  inputs: Int32Array;
  targets: Int32Array;
  batchSize: number;
  contextLength: number;
}

/**
 * Where a loader stands. `rngState` is the shuffle generator's state at the
 * *start* of `epoch`, so the epoch's order can be regenerated on resume.
 */
export interface DataLoaderState {
  epoch: number;
  batchIndex: number;
  rngState: RngState;
  /** Window count when saved; checked on restore to catch a changed corpus. */
  numWindows?: number;
}

export interface DataLoaderOptions {
  batchSize: number;
  shuffle?: boolean;
  dropLast?: boolean;
  /** Seed for the shuffle generator (ignored without shuffle); default 123 as in the book. */
  seed?: number;
}

/**
 * PyTorch's DataLoader over TokenWindows: with `shuffle` a fresh permutation of
 * all windows every epoch, batched in order; `dropLast` drops a final partial
 * batch.
 *
 * Iterating (`for (const b of loader)`) yields the rest of the current epoch and
 * then moves to the next one, so the book's
 * `for epoch in ...: for batch in train_loader:` reads the same. The position
 * advances as each batch is handed out, and moves to the next epoch as soon as
 * the last batch of an epoch is handed out, so `getState()` taken after any
 * batch resumes with the batch that would have come next.
 */
export class DataLoader implements Iterable<Batch> {
  readonly windows: TokenWindows;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  /**
   * Ids at or above this are refused with their source and offset when a
   * batch is read (the Trainer sets the model's), so a bad id deep in a corpus
   * is reported where it lives, not as an index into a batch.
   */
  vocabSize: number | undefined;

  private readonly rng: Rng;
  private epochStart: RngState;
  private order: Uint32Array;
  private _epoch = 0;
  private _batchIndex = 0;

  constructor(windows: TokenWindows, options: DataLoaderOptions) {
    checkPositiveInt('batch size', options.batchSize);
    this.windows = windows;
    this.batchSize = options.batchSize;
    this.shuffle = options.shuffle ?? false;
    this.dropLast = options.dropLast ?? false;
    this.rng = new Rng(options.seed ?? 123);
    this.order = new Uint32Array(windows.length);
    this.epochStart = this.rng.getState();
    this.makeOrder();
  }

  get numWindows(): number {
    return this.windows.length;
  }

  get contextLength(): number {
    return this.windows.contextLength;
  }

  /** Batches per epoch (PyTorch's `len(loader)`). */
  get numBatches(): number {
    const n = this.windows.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** Zero-based epoch the next batch belongs to. */
  get epoch(): number {
    return this._epoch;
  }

  /** Index within the epoch of the next batch. */
  get batchIndex(): number {
    return this._batchIndex;
  }

  /** Window indices of the current epoch, in the order they are served. */
  epochOrder(): Uint32Array {
    return this.order.slice();
  }

  private makeOrder(): void {
    for (let i = 0; i < this.order.length; i++) this.order[i] = i;
    if (this.shuffle) this.rng.shuffle(this.order);
  }

  private startNextEpoch(): void {
    this._epoch++;
    this._batchIndex = 0;
    this.epochStart = this.rng.getState();
    this.makeOrder();
  }

  /** Batch `b` of the current epoch's order; does not move the position. */
  batch(b: number): Batch {
    const nb = this.numBatches;
    if (!Number.isInteger(b) || b < 0 || b >= nb) throw new RangeError(`batch ${b} is outside [0, ${nb})`);
    const T = this.windows.contextLength;
    const first = b * this.batchSize;
    const size = Math.min(this.batchSize, this.order.length - first);
    const inputs = new Int32Array(size * T);
    const targets = new Int32Array(size * T);
    for (let r = 0; r < size; r++) {
      const w = this.order[first + r]!;
      const span = this.windows.readSpan(w);
      if (this.vocabSize !== undefined) this.checkIds(span, this.windows.start(w));
      inputs.set(span.subarray(0, T), r * T);
      targets.set(span.subarray(1), r * T);
    }
    return { inputs, targets, batchSize: size, contextLength: T };
  }

  private checkIds(span: Int32Array, start: number): void {
    const v = this.vocabSize!;
    for (let i = 0; i < span.length; i++) {
      const id = span[i]!;
      if (id < 0 || id >= v) throw new RangeError(`${describeToken(this.windows.source, start + i)} is id ${id}, not below the model's vocabulary size ${v}; fix or re-tokenize that data`);
    }
  }

  /**
   * The first `numBatches` batches (all by default) of the current epoch's
   * order without moving the position: the book's `calc_loss_loader`, which
   * for the shuffled train loader therefore uses the current epoch's order
   * rather than drawing a new permutation and disturbing the training order.
   */
  *peek(numBatches?: number): Generator<Batch> {
    const n = numBatches === undefined ? this.numBatches : Math.min(numBatches, this.numBatches);
    for (let b = 0; b < n; b++) yield this.batch(b);
  }

  *[Symbol.iterator](): Generator<Batch> {
    const epoch = this._epoch;
    while (this._epoch === epoch && this._batchIndex < this.numBatches) {
      const b = this.batch(this._batchIndex);
      this._batchIndex++;
      if (this._batchIndex === this.numBatches) this.startNextEpoch();
      yield b;
    }
    // An epoch with nothing left (no batches at all, or restored at its end)
    // still counts as done.
    if (this._epoch === epoch) this.startNextEpoch();
  }

  getState(): DataLoaderState {
    return { epoch: this._epoch, batchIndex: this._batchIndex, rngState: this.epochStart, numWindows: this.windows.length };
  }

  setState(state: DataLoaderState): void {
    if (state === null || typeof state !== 'object') throw new Error('DataLoader.setState: state must be an object');
    if (!Number.isInteger(state.epoch) || state.epoch < 0) throw new Error(`DataLoader.setState: bad epoch ${state.epoch}`);
    if (state.numWindows !== undefined && state.numWindows !== this.windows.length) {
      throw new Error(
        `DataLoader.setState: the saved position is for ${state.numWindows} windows but this loader has ${this.windows.length}; ` +
          'the data, context length or stride changed since the checkpoint',
      );
    }
    if (!Number.isInteger(state.batchIndex) || state.batchIndex < 0 || state.batchIndex > this.numBatches) {
      throw new Error(`DataLoader.setState: batch index ${state.batchIndex} is outside [0, ${this.numBatches}]`);
    }
    this.rng.setState(state.rngState);
    this.epochStart = this.rng.getState();
    this.makeOrder();
    this._epoch = state.epoch;
    this._batchIndex = state.batchIndex;
  }
}

// ---------------------------------------------------------------------------
// Train/validation loaders
// ---------------------------------------------------------------------------

export interface CreateLoadersOptions {
  /** Raw text: split by characters, then each part tokenized (the book's way). */
  text?: string;
  /** The text's files, named with a token's offset when its id is refused. */
  textSource?: string;
  /** Token ids or a token source (e.g. a TokenFile): split by tokens. */
  ids?: ArrayLike<number> | TokenSource;
  trainRatio?: number;
  contextLength: number;
  /** Default: contextLength (non-overlapping windows, as in chapter 5). */
  stride?: number;
  batchSize: number;
  /** Shuffle the training loader (default true, as in the book). */
  shuffle?: boolean;
  /** Drop the last partial training batch (default true, as in the book). */
  dropLast?: boolean;
  seed?: number;
}

export interface Loaders {
  train: DataLoader;
  val: DataLoader;
  trainTokens: number;
  valTokens: number;
  /** Where the data was split, in `splitUnit`s. */
  splitIndex: number;
  splitUnit: 'chars' | 'tokens';
}

/**
 * The book's chapter 5 loaders: train (shuffle, drop_last) and validation (in
 * order, keep the last partial batch), both with the same context length,
 * stride and batch size.
 */
export function createLoaders(options: CreateLoadersOptions): Loaders {
  const trainRatio = options.trainRatio ?? 0.9;
  checkRatio(trainRatio);
  checkPositiveInt('context length', options.contextLength);
  checkPositiveInt('batch size', options.batchSize);
  const T = options.contextLength;
  const stride = options.stride ?? T;
  checkPositiveInt('stride', stride);

  let trainSrc: TokenSource;
  let valSrc: TokenSource;
  let splitIndex: number;
  let splitUnit: 'chars' | 'tokens';
  if ((options.text === undefined) === (options.ids === undefined)) {
    throw new Error('createLoaders: give exactly one of `text` or `ids`');
  }
  if (options.text !== undefined) {
    const split = splitText(options.text, trainRatio);
    const of = (part: string) => (options.textSource ? `the ${part} split of ${options.textSource}` : undefined);
    trainSrc = new ArrayTokenSource(textToTokenIds(split.train), of('training'));
    valSrc = new ArrayTokenSource(textToTokenIds(split.val), of('validation'));
    splitIndex = split.splitIndex;
    splitUnit = 'chars';
  } else {
    const all = asSource(options.ids!);
    splitIndex = Math.floor(trainRatio * all.length);
    trainSrc = new SliceTokenSource(all, 0, splitIndex);
    valSrc = new SliceTokenSource(all, splitIndex, all.length);
    splitUnit = 'tokens';
  }

  const trainWindows = new TokenWindows(trainSrc, T, stride);
  const valWindows = new TokenWindows(valSrc, T, stride);
  const dropLast = options.dropLast ?? true;
  const trainNeedsWindows = dropLast ? options.batchSize : 1;
  if (trainWindows.length < trainNeedsWindows) {
    const need = tokensForWindows(trainNeedsWindows, T, stride);
    const what =
      trainNeedsWindows === 1
        ? `one window of context length ${T} needs at least ${need} tokens (context length + 1, for the shifted targets)`
        : `one full batch of ${trainNeedsWindows} windows with context length ${T} and stride ${stride} needs at least ${need} tokens`;
    throw new Error(
      `Not enough text for training: the training split has ${trainSrc.length} tokens, but ${what}. ` +
        `Lower --context-length${trainNeedsWindows > 1 ? ' or --batch-size' : ''}, raise --train-ratio (now ${trainRatio}), or give more text.`,
    );
  }
  if (valWindows.length < 1) {
    const need = tokensForWindows(1, T, stride);
    throw new Error(
      `Not enough text for validation: the validation split has ${valSrc.length} tokens, but one window of context length ${T} ` +
        `needs at least ${need} tokens (context length + 1, for the shifted targets). ` +
        `Lower --context-length, lower --train-ratio (now ${trainRatio}), or give more text.`,
    );
  }

  return {
    train: new DataLoader(trainWindows, { batchSize: options.batchSize, shuffle: options.shuffle ?? true, dropLast, seed: options.seed }),
    val: new DataLoader(valWindows, { batchSize: options.batchSize, shuffle: false, dropLast: false }),
    trainTokens: trainSrc.length,
    valTokens: valSrc.length,
    splitIndex,
    splitUnit,
  };
}

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

const LITTLE_ENDIAN = os.endianness() === 'LE';

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
    if (LITTLE_ENDIAN) {
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
 * A token file opened for random access. Windows are read on demand with
 * positioned reads, so a corpus of any size costs no memory; call close() when
 * done (or rely on process exit).
 */
export class TokenFile implements TokenSource {
  readonly path: string;
  readonly length: number;
  private fd: number | null;

  private constructor(file: string, fd: number, length: number) {
    this.path = file;
    this.fd = fd;
    this.length = length;
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
      readFully(fd, h, 0);
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
        readFully(fd, bytes.subarray(0, len * 2), TOKEN_FILE_HEADER_BYTES + start * 2);
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

  read(start: number, count: number): Int32Array {
    if (this.fd === null) throw new Error(`${this.path}: token file is closed`);
    checkRange(this.length, start, count);
    const bytes = new Uint8Array(count * 2);
    readFully(this.fd, bytes, TOKEN_FILE_HEADER_BYTES + start * 2);
    const outArr = new Int32Array(count);
    if (LITTLE_ENDIAN) {
      outArr.set(new Uint16Array(bytes.buffer, 0, count));
    } else {
      const dv = new DataView(bytes.buffer);
      for (let i = 0; i < count; i++) outArr[i] = dv.getUint16(i * 2, true);
    }
    return outArr;
  }

  where(offset: number): string {
    return tokenLocation(this.path, offset);
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

function tokenLocation(file: string, offset: number): string {
  return `${file}: token ${offset} (byte offset ${TOKEN_FILE_HEADER_BYTES + offset * 2})`;
}

function readFully(fd: number, into: Uint8Array, position: number): void {
  let done = 0;
  while (done < into.length) {
    const n = fs.readSync(fd, into, done, into.length - done, position + done);
    if (n === 0) throw new Error('unexpected end of token file');
    done += n;
  }
}
