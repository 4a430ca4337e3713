/**
 * Reader for TensorFlow V2 checkpoints ("tensor bundles"), the format of
 * OpenAI's GPT-2 release, without TensorFlow.
 *
 * A bundle with prefix P is
 *   P.index                        a LevelDB-style sorted table: key "" holds a
 *                                  BundleHeaderProto, every other key is a
 *                                  tensor name holding a BundleEntryProto
 *                                  (dtype, shape, shard, offset, size, CRC);
 *   P.data-0000i-of-0000N          raw little-endian tensor bytes.
 *
 * The index is small and read whole; tensor bytes are read by offset with
 * positional reads on a file handle, because the 1558M data file is 6.2 GB.
 * Every block and tensor carries a masked CRC32C that is checked, so a bad
 * download is reported as such instead of surfacing later as NaN losses.
 */

import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { LITTLE_ENDIAN_HOST } from '../io/bytes.js';
import { readFully } from '../io/files.js';
import { bfloat16ToFloat32 } from '../tensor/tensor.js';
import { crc32cUpdate, unmaskCrc } from './crc32c.js';
import { OPENAI_MODEL_SIZES } from './openai-models.js';
import { SnappyError, snappyDecompress } from './snappy.js';

// ---------------------------------------------------------------------------
// Public types

export type TfDType =
  | 'float32'
  | 'float64'
  | 'int32'
  | 'uint8'
  | 'int16'
  | 'int8'
  | 'string'
  | 'complex64'
  | 'int64'
  | 'bool'
  | 'bfloat16'
  | 'uint16'
  | 'complex128'
  | 'float16'
  | 'resource'
  | 'variant'
  | 'uint32'
  | 'uint64'
  | 'unknown';

export interface TfTensorEntry {
  name: string;
  dtype: TfDType;
  /** The raw DataType enum value from the proto (1 = DT_FLOAT, ...). */
  dtypeCode: number;
  /** Dimensions; [] for a scalar. */
  shape: number[];
  shardId: number;
  /** Byte offset of the tensor inside its data shard. */
  offset: number;
  /** Byte length of the tensor inside its data shard. */
  size: number;
  /** Masked CRC32C of the tensor bytes, exactly as stored in the index. */
  crc32c: number;
  /** True for partitioned variables, whose data lives in separate slice entries (not supported for reading). */
  sliced: boolean;
}

export interface TfBundleHeader {
  numShards: number;
  endianness: 'little' | 'big';
  version: { producer: number; minConsumer: number; badConsumers: number[] };
}

export interface TfVerifyProgress {
  /** Tensor just verified. */
  name: string;
  /** 1-based count of tensors verified so far, out of `count`. */
  index: number;
  count: number;
  /** Tensor bytes hashed so far, out of `totalBytes`. */
  bytes: number;
  totalBytes: number;
}

export interface TfReadOptions {
  /** Check the tensor's CRC32C (default true). */
  verify?: boolean;
}

/** Every corruption or format problem is reported with this class; `file` names the offending file. */
export class TfCheckpointError extends Error {
  readonly file: string | undefined;
  constructor(message: string, file?: string) {
    super(message);
    this.name = 'TfCheckpointError';
    this.file = file;
  }
}

// ---------------------------------------------------------------------------
// Constants

const TABLE_MAGIC_LO = 0x8b80fb57; // 0xdb4775248b80fb57, little-endian
const TABLE_MAGIC_HI = 0xdb477524;
const FOOTER_SIZE = 48; // two max-length block handles (2 * 20) + 8-byte magic
const BLOCK_TRAILER_SIZE = 5; // compression type byte + masked CRC32C
/** TensorFlow's kTensorBundleVersion, unchanged since bundles were introduced. */
const SUPPORTED_BUNDLE_VERSION = 1;

const DTYPE_NAMES: Record<number, TfDType> = {
  1: 'float32',
  2: 'float64',
  3: 'int32',
  4: 'uint8',
  5: 'int16',
  6: 'int8',
  7: 'string',
  8: 'complex64',
  9: 'int64',
  10: 'bool',
  14: 'bfloat16',
  17: 'uint16',
  18: 'complex128',
  19: 'float16',
  20: 'resource',
  21: 'variant',
  22: 'uint32',
  23: 'uint64',
};

/** Bytes per element for the dtypes that readTensor can decode. */
const READABLE_ELEMENT_SIZE: Partial<Record<TfDType, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int32: 4,
  int64: 8,
  int8: 1,
  uint8: 1,
  int16: 2,
  uint16: 2,
  bool: 1,
};

const FLOAT_DTYPES = new Set<TfDType>(['float32', 'float64', 'float16', 'bfloat16']);

/** Reused buffer size for streaming CRC checks over whole data files. */
const VERIFY_CHUNK = 8 << 20;

// ---------------------------------------------------------------------------
// Hints

/**
 * Suggestion appended to corruption errors. A folder named like an OpenAI
 * model size was almost certainly made by `gptcuda download`, so we can name
 * the exact command.
 */
function fixHint(file: string): string {
  const dirName = path.basename(path.dirname(path.resolve(file)));
  const alias: Record<string, string> = { '117M': '124M', '345M': '355M' };
  const size = alias[dirName] ?? dirName;
  if ((OPENAI_MODEL_SIZES as readonly string[]).includes(size)) {
    return `Re-download it with \`gptcuda download --model ${size}\` (partial files resume; corrupt ones are fetched again).`;
  }
  return `Restore the checkpoint from its source (for OpenAI GPT-2 weights: \`gptcuda download --model <${OPENAI_MODEL_SIZES.join('|')}>\`).`;
}

// ---------------------------------------------------------------------------
// Byte-level readers

/** Cursor over a byte range with varint / fixed-width decoding; errors name `what`. */
class ByteReader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number,
    readonly fail: (msg: string) => never,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  byte(what: string): number {
    if (this.pos >= this.end) this.fail(`unexpected end of data while reading ${what}`);
    return this.buf[this.pos++]!;
  }

  /** Unsigned varint up to 64 bits, exact. */
  varint64(what: string): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; ; i++) {
      if (i >= 10) this.fail(`varint for ${what} is longer than 10 bytes`);
      const b = this.byte(what);
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) break;
      shift += 7n;
    }
    return result & 0xffffffffffffffffn;
  }

  /** Varint interpreted as int64 and required to fit a JS number exactly. */
  varintNumber(what: string): number {
    const v = BigInt.asIntN(64, this.varint64(what));
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
      this.fail(`${what} = ${v} does not fit in a JavaScript number`);
    }
    return Number(v);
  }

  /** Non-negative varint (lengths, offsets, sizes). */
  varintUnsigned(what: string): number {
    const v = this.varintNumber(what);
    if (v < 0) this.fail(`${what} is negative (${v})`);
    return v;
  }

  fixed32(what: string): number {
    if (this.pos + 4 > this.end) this.fail(`unexpected end of data while reading ${what}`);
    const b = this.buf;
    const p = this.pos;
    this.pos += 4;
    return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
  }

  bytes(n: number, what: string): Uint8Array {
    if (n < 0 || this.pos + n > this.end) {
      this.fail(`${what} of ${n} bytes runs past the end of its ${this.end - this.pos} remaining bytes`);
    }
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A protobuf field key: field number and wire type. */
  tag(what: string): { field: number; wire: number } {
    const t = this.varintUnsigned(what);
    return { field: Math.floor(t / 8), wire: t & 7 };
  }

  /** The length-delimited field that follows, as a reader of its own; this one moves past it. */
  message(lengthWhat: string, overrun: string): ByteReader {
    const len = this.varintUnsigned(lengthWhat);
    const end = this.pos + len;
    if (end > this.end) this.fail(overrun);
    const sub = new ByteReader(this.buf, this.pos, end, this.fail);
    this.pos = end;
    return sub;
  }

  /** Skips one protobuf field of the given wire type. */
  skipField(wireType: number, field: number): void {
    switch (wireType) {
      case 0:
        this.varint64(`field ${field}`);
        return;
      case 1:
        this.bytes(8, `field ${field}`);
        return;
      case 2:
        this.bytes(this.varintUnsigned(`length of field ${field}`), `field ${field}`);
        return;
      case 5:
        this.bytes(4, `field ${field}`);
        return;
      default:
        this.fail(`field ${field} has unsupported wire type ${wireType}`);
    }
  }
}

const utf8 = new TextDecoder('utf-8');

// ---------------------------------------------------------------------------
// SSTable (.index) parsing

interface BlockHandle {
  offset: number;
  size: number;
}

export interface TableEntry {
  key: string;
  value: Uint8Array;
}

/** Parses a whole LevelDB-format table held in memory and returns its entries in order. */
export function parseTable(buf: Uint8Array, file: string): TableEntry[] {
  const hint = fixHint(file);
  const corrupt = (msg: string): never => {
    throw new TfCheckpointError(`${file}: corrupt checkpoint index: ${msg}. ${hint}`, file);
  };

  if (buf.length < FOOTER_SIZE) {
    throw new TfCheckpointError(
      `${file}: checkpoint index is truncated: ${buf.length} bytes, shorter than the ${FOOTER_SIZE}-byte table footer. ${hint}`,
      file,
    );
  }
  const m = buf.length - 8;
  const magicLo = (buf[m]! | (buf[m + 1]! << 8) | (buf[m + 2]! << 16) | (buf[m + 3]! << 24)) >>> 0;
  const magicHi = (buf[m + 4]! | (buf[m + 5]! << 8) | (buf[m + 6]! << 16) | (buf[m + 7]! << 24)) >>> 0;
  if (magicLo !== TABLE_MAGIC_LO || magicHi !== TABLE_MAGIC_HI) {
    const got = magicHi.toString(16).padStart(8, '0') + magicLo.toString(16).padStart(8, '0');
    throw new TfCheckpointError(
      `${file}: bad magic number 0x${got} in the last 8 bytes (expected 0xdb4775248b80fb57): ` +
        `the file (${buf.length} bytes) is truncated, corrupt, or not a TensorFlow checkpoint .index file. ${hint}`,
      file,
    );
  }

  const footer = new ByteReader(buf, buf.length - FOOTER_SIZE, buf.length - 8, (msg) => corrupt(`footer: ${msg}`));
  const readHandle = (r: ByteReader, what: string): BlockHandle => ({
    offset: r.varintUnsigned(`${what} offset`),
    size: r.varintUnsigned(`${what} size`),
  });
  readHandle(footer, 'metaindex handle'); // the metaindex (filters, stats) carries nothing we need
  const indexHandle = readHandle(footer, 'index handle');

  const readBlock = (h: BlockHandle, what: string): Uint8Array => {
    const blocksEnd = buf.length - FOOTER_SIZE;
    if (h.offset + h.size + BLOCK_TRAILER_SIZE > blocksEnd) {
      throw new TfCheckpointError(
        `${file}: checkpoint index is truncated or corrupt: ${what} at offset ${h.offset} (${h.size} bytes + ` +
          `${BLOCK_TRAILER_SIZE}-byte trailer) extends past the block area, which ends at byte ${blocksEnd}. ${hint}`,
        file,
      );
    }
    const contents = buf.subarray(h.offset, h.offset + h.size);
    const type = buf[h.offset + h.size]!;
    const t = h.offset + h.size + 1;
    const stored = (buf[t]! | (buf[t + 1]! << 8) | (buf[t + 2]! << 16) | (buf[t + 3]! << 24)) >>> 0;
    // The CRC covers the (possibly compressed) contents plus the type byte.
    const actual = crc32cUpdate(crc32cUpdate(0, contents), buf, h.offset + h.size, h.offset + h.size + 1);
    if (unmaskCrc(stored) !== actual) {
      throw new TfCheckpointError(
        `${file}: checkpoint index is corrupt: CRC32C mismatch in ${what} at offset ${h.offset} ` +
          `(stored 0x${unmaskCrc(stored).toString(16)}, computed 0x${actual.toString(16)}). ${hint}`,
        file,
      );
    }
    if (type === 0) return contents;
    if (type === 1) {
      try {
        return snappyDecompress(contents, { maxOutputLength: 256 << 20 });
      } catch (e) {
        if (e instanceof SnappyError) corrupt(`${what} at offset ${h.offset}: ${e.message}`);
        throw e;
      }
    }
    return corrupt(`${what} at offset ${h.offset} uses unknown compression type ${type} (only 0 = none and 1 = Snappy exist)`);
  };

  const index = readBlockEntries(readBlock(indexHandle, 'index block'), (msg) => corrupt(`index block: ${msg}`));
  const entries: TableEntry[] = [];
  let prevKey: string | undefined;
  for (const ie of index) {
    const r = new ByteReader(ie.value, 0, ie.value.length, (msg) => corrupt(`index block entry: ${msg}`));
    const h = readHandle(r, 'data block handle');
    const what = `data block at offset ${h.offset}`;
    for (const e of readBlockEntries(readBlock(h, 'data block'), (msg) => corrupt(`${what}: ${msg}`))) {
      const key = utf8.decode(e.key);
      // Keys are sorted; anything else means the table is damaged in a way the CRCs did not catch.
      if (prevKey !== undefined && !(key > prevKey)) corrupt(`keys out of order ("${prevKey}" then "${key}")`);
      prevKey = key;
      entries.push({ key, value: e.value });
    }
  }
  return entries;
}

/** Decodes one block: prefix-compressed entries followed by the restart array and its count. */
function readBlockEntries(block: Uint8Array, fail: (msg: string) => never): { key: Uint8Array; value: Uint8Array }[] {
  if (block.length < 4) fail(`block of ${block.length} bytes is too short for its restart count`);
  const numRestarts = new ByteReader(block, block.length - 4, block.length, fail).fixed32('restart count');
  const restartsStart = block.length - 4 - numRestarts * 4;
  if (numRestarts === 0 || restartsStart < 0) {
    fail(`restart count ${numRestarts} does not fit in a block of ${block.length} bytes`);
  }
  const r = new ByteReader(block, 0, restartsStart, fail);
  const out: { key: Uint8Array; value: Uint8Array }[] = [];
  let prev = new Uint8Array(0);
  while (!r.done) {
    const shared = r.varintUnsigned('shared key length');
    const nonShared = r.varintUnsigned('unshared key length');
    const valueLen = r.varintUnsigned('value length');
    if (shared > prev.length) fail(`entry shares ${shared} key bytes but the previous key has ${prev.length}`);
    const suffix = r.bytes(nonShared, 'key');
    const key = new Uint8Array(shared + nonShared);
    key.set(prev.subarray(0, shared), 0);
    key.set(suffix, shared);
    const value = r.bytes(valueLen, 'value');
    out.push({ key, value });
    prev = key;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Protobuf messages

function parseHeader(value: Uint8Array, fail: (msg: string) => never): TfBundleHeader {
  const r = new ByteReader(value, 0, value.length, fail);
  const header: TfBundleHeader = {
    numShards: 0,
    endianness: 'little',
    version: { producer: 0, minConsumer: 0, badConsumers: [] },
  };
  while (!r.done) {
    const { field, wire } = r.tag('field tag');
    if (field === 1 && wire === 0) header.numShards = r.varintNumber('num_shards');
    else if (field === 2 && wire === 0) {
      const e = r.varintNumber('endianness');
      if (e !== 0 && e !== 1) fail(`unknown endianness ${e}`);
      header.endianness = e === 0 ? 'little' : 'big';
    } else if (field === 3 && wire === 2) {
      const v = r.message('version length', 'version message runs past the end of the header');
      while (!v.done) {
        const t = v.tag('version tag');
        if (t.field === 1 && t.wire === 0) header.version.producer = v.varintNumber('producer');
        else if (t.field === 2 && t.wire === 0) header.version.minConsumer = v.varintNumber('min_consumer');
        else if (t.field === 3 && t.wire === 0) header.version.badConsumers.push(v.varintNumber('bad_consumers'));
        else v.skipField(t.wire, t.field);
      }
    } else r.skipField(wire, field);
  }
  if (header.numShards < 0) fail(`num_shards is negative (${header.numShards})`);
  return header;
}

function parseShape(s: ByteReader): number[] {
  const dims: number[] = [];
  while (!s.done) {
    const { field, wire } = s.tag('shape tag');
    if (field === 2 && wire === 2) {
      const d = s.message('dim length', 'shape dim runs past the end of the shape');
      let size = 0; // omitted when zero
      while (!d.done) {
        const t = d.tag('dim tag');
        if (t.field === 1 && t.wire === 0) size = d.varintNumber('dim size');
        else d.skipField(t.wire, t.field); // dim name
      }
      dims.push(size);
    } else s.skipField(wire, field); // unknown_rank etc.
  }
  return dims;
}

function parseEntry(name: string, value: Uint8Array, fail: (msg: string) => never): TfTensorEntry {
  const r = new ByteReader(value, 0, value.length, fail);
  // Proto3: fields equal to their default are omitted, so start from zeros.
  const e: TfTensorEntry = {
    name,
    dtype: 'unknown',
    dtypeCode: 0,
    shape: [],
    shardId: 0,
    offset: 0,
    size: 0,
    crc32c: 0,
    sliced: false,
  };
  while (!r.done) {
    const { field, wire } = r.tag('field tag');
    if (field === 1 && wire === 0) e.dtypeCode = r.varintNumber('dtype');
    else if (field === 2 && wire === 2) e.shape = parseShape(r.message('shape length', 'shape runs past the end of the entry'));
    else if (field === 3 && wire === 0) e.shardId = r.varintNumber('shard_id');
    else if (field === 4 && wire === 0) e.offset = r.varintUnsigned('offset');
    else if (field === 5 && wire === 0) e.size = r.varintUnsigned('size');
    else if (field === 6 && wire === 5) e.crc32c = r.fixed32('crc32c');
    else if (field === 7 && wire === 2) {
      e.sliced = true;
      r.skipField(wire, field);
    } else r.skipField(wire, field);
  }
  e.dtype = DTYPE_NAMES[e.dtypeCode] ?? 'unknown';
  return e;
}

// ---------------------------------------------------------------------------
// Locating the checkpoint

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}

/** Turns a folder, a prefix, an .index path or a data-file path into the bundle prefix. */
export async function resolveCheckpointPrefix(prefixOrDir: string): Promise<string> {
  const p = path.resolve(prefixOrDir);
  let isDir = false;
  try {
    isDir = (await fsp.stat(p)).isDirectory();
  } catch {
    /* not a directory: treat as a prefix below */
  }
  if (isDir) {
    const ckptFile = path.join(p, 'checkpoint');
    if (await exists(ckptFile)) {
      // The "checkpoint" file is a text proto: model_checkpoint_path: "model.ckpt"
      const text = await fsp.readFile(ckptFile, 'utf8');
      const m = /model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"/.exec(text);
      if (m) {
        const named = m[1]!.replace(/\\(.)/g, '$1');
        const candidates = [path.isAbsolute(named) ? named : path.join(p, named)];
        // Checkpoints are often moved after saving, leaving a stale absolute path.
        candidates.push(path.join(p, path.basename(named)));
        for (const c of candidates) if (await exists(`${c}.index`)) return c;
      }
    }
    if (await exists(path.join(p, 'model.ckpt.index'))) return path.join(p, 'model.ckpt');
    const indexFiles = (await fsp.readdir(p)).filter((f) => f.endsWith('.index'));
    if (indexFiles.length === 1) return path.join(p, indexFiles[0]!.slice(0, -'.index'.length));
    if (indexFiles.length > 1) {
      throw new TfCheckpointError(
        `${p}: several checkpoints in this folder (${indexFiles.join(', ')}); pass the prefix of the one to read, e.g. ${path.join(p, indexFiles[0]!.slice(0, -6))}`,
        p,
      );
    }
    throw new TfCheckpointError(
      `${p}: no TensorFlow checkpoint here (no "checkpoint" file naming one, no model.ckpt.index, no *.index). ` +
        'Download OpenAI GPT-2 weights with `gptcuda download --model 124M`.',
      p,
    );
  }
  if (p.endsWith('.index')) return p.slice(0, -'.index'.length);
  const dataMatch = /^(.*)\.data-\d{5}-of-\d{5}$/.exec(p);
  if (dataMatch) return dataMatch[1]!;
  return p;
}

export function dataFileName(prefix: string, shard: number, numShards: number): string {
  const pad = (n: number) => String(n).padStart(5, '0');
  return `${prefix}.data-${pad(shard)}-of-${pad(numShards)}`;
}

// ---------------------------------------------------------------------------
// The checkpoint object

export class TfCheckpoint {
  readonly entries: TfTensorEntry[];
  readonly dataFiles: string[];
  private readonly byName: Map<string, TfTensorEntry>;
  private readonly handles = new Map<number, Promise<{ fh: FileHandle; size: number }>>();
  private closed = false;

  constructor(
    readonly prefix: string,
    readonly indexPath: string,
    readonly header: TfBundleHeader,
    entries: TfTensorEntry[],
  ) {
    this.entries = entries;
    this.byName = new Map(entries.map((e) => [e.name, e]));
    const n = Math.max(1, header.numShards);
    // Every shard holds at least one tensor: a larger count is corruption, refused before it sizes anything.
    if (n > Math.max(1, entries.length)) throw new Error(`${indexPath}: num_shards is ${header.numShards} but the index lists only ${entries.length} tensors; the index is corrupted`);
    this.dataFiles = Array.from({ length: n }, (_, i) => dataFileName(prefix, i, n));
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The entry for `name`; throws listing similar names when it is absent. */
  entry(name: string): TfTensorEntry {
    const e = this.byName.get(name);
    if (!e) {
      const leaf = name.split('/').pop() ?? name;
      const similar = this.entries.filter((x) => x.name.endsWith(leaf)).slice(0, 5).map((x) => x.name);
      throw new TfCheckpointError(
        `${this.indexPath}: no tensor named "${name}" in this checkpoint (${this.entries.length} tensors` +
          (similar.length ? `; similar: ${similar.join(', ')}` : '') +
          ')',
        this.indexPath,
      );
    }
    return e;
  }

  /**
   * Reads one tensor. Floating dtypes (float32/float16/bfloat16/float64) come
   * back as Float32Array, small integer dtypes and int32 as Int32Array, int64
   * as BigInt64Array. Only this tensor's bytes are read from disk.
   */
  async readTensor(name: string, options: TfReadOptions = {}): Promise<Float32Array | Int32Array | BigInt64Array> {
    const e = this.entry(name);
    const elem = this.checkReadable(e);
    if (FLOAT_DTYPES.has(e.dtype)) return this.readFloat32(name, undefined, options);
    const raw = new Uint8Array(e.size);
    await this.readInto(e, raw, options.verify ?? true);
    if (e.dtype === 'int32' || e.dtype === 'int64') {
      this.toHostOrder(raw, elem);
      return e.dtype === 'int32' ? new Int32Array(raw.buffer, 0, e.size / 4) : new BigInt64Array(raw.buffer, 0, e.size / 8);
    }
    const n = e.size / elem;
    const out = new Int32Array(n);
    if (e.dtype === 'uint8' || e.dtype === 'bool') for (let i = 0; i < n; i++) out[i] = raw[i]!;
    else if (e.dtype === 'int8') for (let i = 0; i < n; i++) out[i] = (raw[i]! << 24) >> 24;
    else {
      const dv = new DataView(raw.buffer);
      const le = this.header.endianness === 'little';
      for (let i = 0; i < n; i++) out[i] = e.dtype === 'int16' ? dv.getInt16(2 * i, le) : dv.getUint16(2 * i, le);
    }
    return out;
  }

  /**
   * Reads a floating-point tensor as float32. With `into`, the values are
   * written there (it must have exactly the tensor's element count); for
   * float32 tensors the bytes go straight from the file into `into`, with no
   * intermediate copy, so weights can be loaded into a flat parameter buffer.
   */
  async readFloat32(name: string, into?: Float32Array, options: TfReadOptions = {}): Promise<Float32Array> {
    const e = this.entry(name);
    const elem = this.checkReadable(e);
    if (!FLOAT_DTYPES.has(e.dtype)) {
      throw new TfCheckpointError(`${this.indexPath}: tensor "${name}" has dtype ${e.dtype}, not a floating-point type`);
    }
    const n = e.size / elem;
    if (into && into.length !== n) {
      throw new RangeError(
        `readFloat32("${name}"): destination has ${into.length} elements but the tensor [${e.shape.join(', ')}] has ${n}`,
      );
    }
    const verify = options.verify ?? true;
    const out = into ?? new Float32Array(n);
    if (e.dtype === 'float32') {
      const bytes = new Uint8Array(out.buffer, out.byteOffset, e.size);
      await this.readInto(e, bytes, verify);
      this.toHostOrder(bytes, 4);
      return out;
    }
    const raw = new Uint8Array(e.size);
    await this.readInto(e, raw, verify);
    this.toHostOrder(raw, elem);
    if (e.dtype === 'float64') {
      const src = new Float64Array(raw.buffer, 0, n);
      for (let i = 0; i < n; i++) out[i] = src[i]!;
    } else if (e.dtype === 'float16') float16ToFloat32(new Uint16Array(raw.buffer, 0, n), out);
    else bfloat16ToFloat32(new Uint16Array(raw.buffer, 0, n), out);
    return out;
  }

  /** The tensor's bytes exactly as stored (file byte order); works for every dtype, strings included. */
  async readRaw(name: string, options: TfReadOptions = {}): Promise<Uint8Array> {
    const e = this.entry(name);
    if (e.sliced) {
      throw new TfCheckpointError(
        `${this.indexPath}: tensor "${name}" is a partitioned variable stored as slices, which this reader does not support`,
        this.indexPath,
      );
    }
    const raw = new Uint8Array(e.size);
    await this.readInto(e, raw, options.verify ?? true);
    return raw;
  }

  /**
   * Checks that every shard exists and is long enough for the tensors it
   * holds. Cheap (one stat per shard); readTensor and verifyAll do the same
   * checks lazily, this gives all problems up front.
   */
  async checkDataFiles(): Promise<void> {
    const needed = new Array<number>(this.dataFiles.length).fill(0);
    for (const e of this.entries) {
      if (e.sliced) continue;
      this.checkShardId(e);
      needed[e.shardId] = Math.max(needed[e.shardId]!, e.offset + e.size);
    }
    for (let i = 0; i < this.dataFiles.length; i++) {
      const { size } = await this.shard(i);
      if (size < needed[i]!) throw this.truncatedError(i, size, needed[i]!);
    }
  }

  /**
   * Recomputes the CRC32C of every tensor, streaming each shard through a
   * fixed buffer so memory stays flat even for the 6.2 GB 1558M file. Throws
   * one error listing every tensor that fails.
   */
  async verifyAll(onProgress?: (p: TfVerifyProgress) => void): Promise<void> {
    await this.checkDataFiles();
    const todo = this.entries.filter((e) => !e.sliced);
    // Visit tensors in file order so the disk reads sequentially.
    const order = [...todo].sort((a, b) => a.shardId - b.shardId || a.offset - b.offset);
    const totalBytes = order.reduce((s, e) => s + e.size, 0);
    const chunk = new Uint8Array(VERIFY_CHUNK);
    const bad: string[] = [];
    let bytes = 0;
    let index = 0;
    for (const e of order) {
      const { fh } = await this.shard(e.shardId);
      let crc = 0;
      for (let done = 0; done < e.size; ) {
        const n = Math.min(chunk.length, e.size - done);
        await this.readExactly(fh, chunk.subarray(0, n), e.offset + done, e);
        crc = crc32cUpdate(crc, chunk, 0, n);
        done += n;
      }
      if (crc !== unmaskCrc(e.crc32c)) bad.push(e.name);
      bytes += e.size;
      onProgress?.({ name: e.name, index: ++index, count: order.length, bytes, totalBytes });
    }
    if (bad.length) {
      const file = this.dataFiles.length === 1 ? this.dataFiles[0]! : `${this.prefix}.data-*`;
      throw new TfCheckpointError(
        `${file}: checkpoint data is corrupt: CRC32C mismatch in ${bad.length} of ${order.length} tensors ` +
          `(${bad.slice(0, 8).join(', ')}${bad.length > 8 ? ', ...' : ''}). ${fixHint(file)}`,
        file,
      );
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const hs = [...this.handles.values()];
    this.handles.clear();
    for (const h of hs) {
      try {
        await (await h).fh.close();
      } catch {
        /* a shard that failed to open has nothing to close */
      }
    }
  }

  // -- internals ------------------------------------------------------------

  /** Validates the entry for numeric reading and returns its element size. */
  private checkReadable(e: TfTensorEntry): number {
    if (e.sliced) {
      throw new TfCheckpointError(
        `${this.indexPath}: tensor "${e.name}" is a partitioned variable stored as slices, which this reader does not support`,
        this.indexPath,
      );
    }
    const elem = READABLE_ELEMENT_SIZE[e.dtype];
    if (elem === undefined) {
      throw new TfCheckpointError(
        `${this.indexPath}: tensor "${e.name}" has dtype ${e.dtype} (code ${e.dtypeCode}), which cannot be read as numbers` +
          (e.dtype === 'string' ? ' (use readRaw for the encoded bytes)' : ''),
        this.indexPath,
      );
    }
    const numel = e.shape.reduce((a, b) => a * b, 1);
    if (e.shape.some((d) => d < 0) || numel * elem !== e.size) {
      throw new TfCheckpointError(
        `${this.indexPath}: corrupt index entry for "${e.name}": shape [${e.shape.join(', ')}] of ${e.dtype} ` +
          `needs ${numel * elem} bytes but the entry says ${e.size}. ${fixHint(this.indexPath)}`,
        this.indexPath,
      );
    }
    return elem;
  }

  private checkShardId(e: TfTensorEntry): void {
    if (!Number.isInteger(e.shardId) || e.shardId < 0 || e.shardId >= this.dataFiles.length) {
      throw new TfCheckpointError(
        `${this.indexPath}: corrupt index entry for "${e.name}": shard ${e.shardId}, but the header declares ` +
          `${this.dataFiles.length} shard(s). ${fixHint(this.indexPath)}`,
        this.indexPath,
      );
    }
  }

  private shard(i: number): Promise<{ fh: FileHandle; size: number }> {
    if (this.closed) throw new Error(`TfCheckpoint ${this.prefix} is closed`);
    let h = this.handles.get(i);
    if (!h) {
      const file = this.dataFiles[i]!;
      h = (async () => {
        let fh: FileHandle;
        try {
          fh = await fsp.open(file, 'r');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') {
            throw new TfCheckpointError(
              `${file}: missing data shard ${i + 1} of ${this.dataFiles.length} for checkpoint ${this.prefix} ` +
                `(the .index is present but this data file is not). ${fixHint(file)}`,
              file,
            );
          }
          throw new TfCheckpointError(`${file}: cannot open data shard: ${(err as Error).message}`, file);
        }
        const { size } = await fh.stat();
        return { fh, size };
      })();
      // A failed open must not be cached, or fixing the file would need a new reader.
      h.catch(() => this.handles.delete(i));
      this.handles.set(i, h);
    }
    return h;
  }

  private truncatedError(shard: number, size: number, needed: number, tensor?: string): TfCheckpointError {
    const file = this.dataFiles[shard]!;
    return new TfCheckpointError(
      `${file}: data file is truncated: it is ${size} bytes but ` +
        (tensor ? `tensor "${tensor}" ends at byte ${needed}` : `its tensors need ${needed} bytes`) +
        ` (an interrupted download or copy?). ${fixHint(file)}`,
      file,
    );
  }

  /** Reads the entry's bytes into `dst` (exactly e.size bytes) and checks the CRC. */
  private async readInto(e: TfTensorEntry, dst: Uint8Array, verify: boolean): Promise<void> {
    this.checkShardId(e);
    const { fh, size } = await this.shard(e.shardId);
    if (e.offset + e.size > size) throw this.truncatedError(e.shardId, size, e.offset + e.size, e.name);
    await this.readExactly(fh, dst.subarray(0, e.size), e.offset, e);
    if (verify) {
      const crc = crc32cUpdate(0, dst, 0, e.size);
      if (crc !== unmaskCrc(e.crc32c)) {
        const file = this.dataFiles[e.shardId]!;
        throw new TfCheckpointError(
          `${file}: checkpoint data is corrupt: CRC32C mismatch in tensor "${e.name}" ` +
            `(bytes ${e.offset}..${e.offset + e.size}; expected 0x${unmaskCrc(e.crc32c).toString(16)}, ` +
            `computed 0x${crc.toString(16)}). ${fixHint(file)}`,
          file,
        );
      }
    }
  }

  private async readExactly(fh: FileHandle, dst: Uint8Array, position: number, e: TfTensorEntry): Promise<void> {
    const got = await readFully(fh, dst, position);
    // The file shrank after we checked its size.
    if (got < dst.length) throw this.truncatedError(e.shardId, position + got, e.offset + e.size, e.name);
  }

  /** Tensor bytes are stored in the bundle's declared byte order; flip them if that is not the host's. */
  private toHostOrder(bytes: Uint8Array, elem: number): void {
    const fileLittle = this.header.endianness === 'little';
    if (elem === 1 || fileLittle === LITTLE_ENDIAN_HOST) return;
    for (let i = 0; i + elem <= bytes.length; i += elem) bytes.subarray(i, i + elem).reverse();
  }
}

/**
 * Opens a checkpoint: reads and validates the whole .index (block CRCs,
 * header), but no tensor data. Data shards are opened on first read, so an
 * index without its data file can still be listed.
 */
export async function openTfCheckpoint(prefixOrDir: string): Promise<TfCheckpoint> {
  const prefix = await resolveCheckpointPrefix(prefixOrDir);
  const indexPath = `${prefix}.index`;
  let buf: Uint8Array;
  try {
    buf = await fsp.readFile(indexPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TfCheckpointError(
        `${indexPath}: checkpoint index not found (looked for the TensorFlow checkpoint prefix ${prefix}). ${fixHint(indexPath)}`,
        indexPath,
      );
    }
    throw new TfCheckpointError(`${indexPath}: cannot read checkpoint index: ${(err as Error).message}`, indexPath);
  }

  const table = parseTable(buf, indexPath);
  const hint = fixHint(indexPath);
  const fail = (what: string) => (msg: string): never => {
    throw new TfCheckpointError(`${indexPath}: corrupt checkpoint index: ${what}: ${msg}. ${hint}`, indexPath);
  };
  if (table.length === 0 || table[0]!.key !== '') {
    throw new TfCheckpointError(
      `${indexPath}: not a TensorFlow tensor bundle: the table has no header entry (empty key). ${hint}`,
      indexPath,
    );
  }
  const header = parseHeader(table[0]!.value, fail('bundle header'));
  // TensorFlow refuses bundles whose writer demands a newer reader; so do we,
  // rather than misreading a layout we do not know.
  if (header.version.minConsumer > SUPPORTED_BUNDLE_VERSION || header.version.badConsumers.includes(SUPPORTED_BUNDLE_VERSION)) {
    throw new TfCheckpointError(
      `${indexPath}: this checkpoint needs a newer reader (bundle version: producer ${header.version.producer}, ` +
        `min_consumer ${header.version.minConsumer}; this reader implements version ${SUPPORTED_BUNDLE_VERSION})`,
      indexPath,
    );
  }
  const entries = table.slice(1).map((t) => parseEntry(t.key, t.value, fail(`entry "${t.key}"`)));
  return new TfCheckpoint(prefix, indexPath, header, entries);
}

// ---------------------------------------------------------------------------
// Half-precision conversion

let halfTable: Float32Array | undefined;

/** IEEE binary16 -> float32, via a 64K-entry table built on first use. */
export function float16ToFloat32(src: Uint16Array, dst: Float32Array): void {
  if (dst.length < src.length) throw new RangeError('float16ToFloat32: destination too short');
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >>> 10) & 0x1f;
      const frac = h & 0x3ff;
      halfTable[h] =
        exp === 0
          ? sign * frac * 2 ** -24 // subnormal
          : exp === 31
            ? frac
              ? NaN
              : sign * Infinity
            : sign * (1 + frac / 1024) * 2 ** (exp - 15);
    }
  }
  const t = halfTable;
  for (let i = 0; i < src.length; i++) dst[i] = t[src[i]!]!;
}
