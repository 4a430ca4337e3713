/**
 * Token sources (ids in memory, a slice of another source, a token file) and
 * the book's sliding windows over them (chapter 2's GPTDatasetV1).
 *
 * Faithfulness note: windows start at `range(0, len(ids) - max_length, stride)`;
 * that range excludes the last possible window when `len(ids) - max_length` is
 * a multiple of the stride. We keep that quirk.
 */

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

export function checkRange(length: number, start: number, count: number): void {
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

export function describeToken(source: TokenSource, offset: number): string {
  return source.where ? source.where(offset) : `token ${offset} of the token ids`;
}

export function asSource(ids: TokenSource | ArrayLike<number>): TokenSource {
  return typeof (ids as TokenSource).read === 'function' ? (ids as TokenSource) : new ArrayTokenSource(ids as ArrayLike<number>);
}

// ---------------------------------------------------------------------------
// Windows (GPTDatasetV1)
// ---------------------------------------------------------------------------

export function checkPositiveInt(name: string, v: number): void {
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
