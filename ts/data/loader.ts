/**
 * The book's DataLoader (chapter 2's create_dataloader_v1) and the
 * train/validation loaders of chapter 5.
 *
 * Shuffling uses our own seeded Rng, not PyTorch's, so the shuffled order
 * differs from the book's; batch counts and contents per window do not.
 */
import { Rng, type RngState } from '../tensor/rng.js';
import { checkRatio, splitText } from './text.js';
import { textToTokenIds } from './tokenizer.js';
import { ArrayTokenSource, SliceTokenSource, TokenWindows, asSource, checkPositiveInt, describeToken, tokensForWindows, type TokenSource } from './windows.js';

// ---------------------------------------------------------------------------
// DataLoader
// ---------------------------------------------------------------------------

/** One batch, row-major `[batchSize, contextLength]`. */
export interface Batch {
  readonly inputs: Int32Array;
  readonly targets: Int32Array;
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

  /**
   * Batch `b` of the current epoch's order; does not move the position. The
   * tokens are read when `inputs` or `targets` is first used, so a rank of a
   * data-parallel job that skips the other ranks' micro-batches never reads them.
   */
  batch(b: number): Batch {
    const nb = this.numBatches;
    if (!Number.isInteger(b) || b < 0 || b >= nb) throw new RangeError(`batch ${b} is outside [0, ${nb})`);
    const T = this.windows.contextLength;
    const first = b * this.batchSize;
    const size = Math.min(this.batchSize, this.order.length - first);
    // The window indices are taken now: the order changes when the next epoch starts.
    const rows = this.order.slice(first, first + size);
    let tokens: { inputs: Int32Array; targets: Int32Array } | undefined;
    const read = () => (tokens ??= this.readRows(rows));
    return {
      get inputs() {
        return read().inputs;
      },
      get targets() {
        return read().targets;
      },
      batchSize: size,
      contextLength: T,
    };
  }

  private readRows(rows: Uint32Array): { inputs: Int32Array; targets: Int32Array } {
    const T = this.windows.contextLength;
    const inputs = new Int32Array(rows.length * T);
    const targets = new Int32Array(rows.length * T);
    for (let r = 0; r < rows.length; r++) {
      const w = rows[r]!;
      const span = this.windows.readSpan(w);
      if (this.vocabSize !== undefined) this.checkIds(span, this.windows.start(w));
      inputs.set(span.subarray(0, T), r * T);
      targets.set(span.subarray(1), r * T);
    }
    return { inputs, targets };
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
