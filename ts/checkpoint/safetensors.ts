/**
 * The safetensors format (https://github.com/huggingface/safetensors):
 *
 *   u64 little-endian N | N bytes of UTF-8 JSON header | data section
 *
 * The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}`
 * (offsets relative to the start of the data section) plus an optional
 * `"__metadata__": {string: string}`. Tensors must tile the data section
 * exactly: no gaps, no overlaps, no trailing bytes. We follow the reference
 * (Rust) implementation's rules so that files we write load in Hugging Face
 * tooling and files HF writes load here; validation is strict because a file
 * that is subtly wrong would otherwise surface as garbage weights much later.
 */

import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { LITTLE_ENDIAN_HOST } from '../io/bytes.js';
import { readFully } from '../io/files.js';
import { atomicWriteFile } from './atomic.js';

export type SafetensorsDtype = 'F32' | 'I32' | 'F16' | 'BF16' | 'I64';

/**
 * Element storage per dtype: F32 → Float32Array, I32 → Int32Array,
 * F16/BF16 → Uint16Array (raw bit patterns), I64 → BigInt64Array. A
 * Uint8Array is accepted by the encoder as the raw little-endian bytes of any
 * dtype; decoders always return the typed array for the dtype.
 */
export type TensorData = Float32Array | Int32Array | Uint16Array | BigInt64Array | Uint8Array;

export interface NamedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

export type SafetensorsMetadata = Record<string, string>;

export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = Object.freeze({
  F32: 4,
  I32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
});

export const SUPPORTED_DTYPES: readonly SafetensorsDtype[] = Object.freeze(['F32', 'F16', 'BF16', 'I32', 'I64']);

/** Dtypes the spec defines but gptcuda cannot hold; named separately so the error can say "unsupported" rather than "unknown". */
const OTHER_SPEC_DTYPES = new Set([
  'BOOL', 'U8', 'I8', 'I16', 'U16', 'U32', 'U64', 'F64', 'C64',
  'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4',
]);

/** Same limit as the reference implementation: anything larger is corruption, not a header. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) relative to the start of the data section. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** N, the JSON header's length in bytes (including padding). */
  headerLength: number;
  /** Absolute file offset of the data section (8 + N). */
  dataStart: number;
  dataLength: number;
  metadata: SafetensorsMetadata | undefined;
  /** In data order (ascending offsets). */
  tensors: SafetensorsTensorInfo[];
}

export interface SafetensorsContents {
  metadata: SafetensorsMetadata | undefined;
  /** In data order, which for files we wrote is the encoder's order. */
  tensors: Map<string, NamedTensor>;
}

function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

function assertLittleEndian(): void {
  // safetensors data is little-endian and typed arrays use host order; a
  // big-endian host would silently byte-swap every weight.
  if (!LITTLE_ENDIAN_HOST) throw new SafetensorsError('safetensors I/O requires a little-endian host');
}

function fail(source: string, message: string): never {
  throw new SafetensorsError(`${source}: ${message}`);
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Element count, or undefined if the shape is not a list of non-negative safe integers or its product overflows. */
function numelOf(shape: unknown): number | undefined {
  if (!Array.isArray(shape)) return undefined;
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) return undefined;
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  return n;
}

/** The tensor's bytes as a Uint8Array view (no copy). */
export function tensorBytes(t: { data: TensorData }): Uint8Array {
  const d = t.data;
  return d instanceof Uint8Array ? d : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

function allocTyped(dtype: SafetensorsDtype, numel: number): TensorData {
  switch (dtype) {
    case 'F32':
      return new Float32Array(numel);
    case 'I32':
      return new Int32Array(numel);
    case 'F16':
    case 'BF16':
      return new Uint16Array(numel);
    case 'I64':
      return new BigInt64Array(numel);
  }
}

function viewTyped(dtype: SafetensorsDtype, buffer: ArrayBufferLike, byteOffset: number, numel: number): TensorData {
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, byteOffset, numel);
    case 'I32':
      return new Int32Array(buffer, byteOffset, numel);
    case 'F16':
    case 'BF16':
      return new Uint16Array(buffer, byteOffset, numel);
    case 'I64':
      return new BigInt64Array(buffer, byteOffset, numel);
  }
}

function expectedArrayName(dtype: SafetensorsDtype): string {
  return dtype === 'F32' ? 'Float32Array' : dtype === 'I32' ? 'Int32Array' : dtype === 'I64' ? 'BigInt64Array' : 'Uint16Array';
}

function dataMatchesDtype(dtype: SafetensorsDtype, data: TensorData): boolean {
  if (data instanceof Uint8Array) return true;
  switch (dtype) {
    case 'F32':
      return data instanceof Float32Array;
    case 'I32':
      return data instanceof Int32Array;
    case 'F16':
    case 'BF16':
      return data instanceof Uint16Array;
    case 'I64':
      return data instanceof BigInt64Array;
  }
}

// ---------------------------------------------------------------------------
// Encoding

export interface EncodedSafetensors {
  /** The 8-byte length prefix plus the padded JSON header. */
  header: Buffer;
  /** Everything to write, in order: `header` first, then each non-empty tensor's bytes (views of the caller's arrays, not copies). */
  chunks: Uint8Array[];
  /** Total file size. */
  byteLength: number;
  /** Layout actually written, in data order. */
  tensors: SafetensorsTensorInfo[];
}

/**
 * Lays out `tensors` as a safetensors file without copying tensor data: the
 * returned chunks alias the caller's arrays, so they must not be modified
 * until the chunks have been written.
 *
 * Tensors are stored in order of decreasing element size, then by name (the
 * reference implementation does the same). With the header padded to a
 * multiple of 8, every tensor then starts at an offset aligned to its element
 * size, so readers can use zero-copy typed-array views.
 *
 * For files meant for Hugging Face `transformers`, pass `{format: 'pt'}` as
 * metadata: its loader rejects safetensors files without it.
 */
export function encodeSafetensors(tensors: readonly NamedTensor[], metadata?: SafetensorsMetadata): EncodedSafetensors {
  assertLittleEndian();
  const src = 'encodeSafetensors';
  const names = new Set<string>();
  for (const t of tensors) {
    if (typeof t.name !== 'string' || t.name.length === 0) fail(src, 'tensor names must be non-empty strings');
    if (t.name === METADATA_KEY) fail(src, `"${METADATA_KEY}" is reserved for metadata and cannot be a tensor name`);
    if (names.has(t.name)) fail(src, `duplicate tensor name "${t.name}"`);
    names.add(t.name);
    if (!isDtype(t.dtype)) fail(src, `tensor "${t.name}": unsupported dtype ${JSON.stringify(t.dtype)} (supported: ${SUPPORTED_DTYPES.join(', ')})`);
    const numel = numelOf(t.shape);
    if (numel === undefined) fail(src, `tensor "${t.name}": shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`);
    if (!dataMatchesDtype(t.dtype, t.data)) {
      fail(src, `tensor "${t.name}": dtype ${t.dtype} needs a ${expectedArrayName(t.dtype)} (or raw little-endian bytes in a Uint8Array), got ${t.data?.constructor?.name ?? typeof t.data}`);
    }
    const need = numel * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== need) {
      fail(src, `tensor "${t.name}": shape ${fmtShape(t.shape)} × ${t.dtype} needs ${need} bytes but its data has ${t.data.byteLength}`);
    }
  }
  if (metadata !== undefined) validateMetadata(metadata, src);

  const order = [...tensors].sort((a, b) => DTYPE_BYTES[b.dtype] - DTYPE_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const infos: SafetensorsTensorInfo[] = [];
  const chunks: Uint8Array[] = [];
  // Built by hand rather than JSON.stringify(object): JS objects move
  // integer-like keys ("0", "12") to the front, which would make the header
  // order differ from the data order.
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const t of order) {
    const bytes = tensorBytes(t);
    const info: SafetensorsTensorInfo = { name: t.name, dtype: t.dtype, shape: [...t.shape], dataOffsets: [offset, offset + bytes.byteLength] };
    infos.push(info);
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: info.shape, data_offsets: info.dataOffsets })}`);
    if (bytes.byteLength > 0) chunks.push(bytes);
    offset += bytes.byteLength;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const n = json.length + ((8 - (json.length % 8)) % 8);
  const header = Buffer.alloc(8 + n, 0x20);
  header.writeBigUInt64LE(BigInt(n), 0);
  json.copy(header, 8);
  chunks.unshift(header);
  return { header, chunks, byteLength: header.length + offset, tensors: infos };
}

/** Encodes into one contiguous buffer (a copy); for small files and tests. */
export function encodeSafetensorsToBuffer(tensors: readonly NamedTensor[], metadata?: SafetensorsMetadata): Buffer {
  const enc = encodeSafetensors(tensors, metadata);
  return Buffer.concat(enc.chunks, enc.byteLength);
}

/** Writes a safetensors file atomically (temp file + fsync + rename). */
export async function writeSafetensorsFile(path: string, tensors: readonly NamedTensor[], metadata?: SafetensorsMetadata): Promise<void> {
  await atomicWriteFile(path, encodeSafetensors(tensors, metadata).chunks);
}

function validateMetadata(m: unknown, source: string): asserts m is SafetensorsMetadata {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) fail(source, `"${METADATA_KEY}" must be an object mapping strings to strings`);
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== 'string') fail(source, `"${METADATA_KEY}" values must be strings, but "${k}" is ${JSON.stringify(v)}`);
  }
}

// ---------------------------------------------------------------------------
// Header parsing

/** Validates the 8-byte length prefix against the file size; returns N. */
function checkHeaderLength(prefix: Uint8Array, totalLength: number, source: string): number {
  if (totalLength < 8) {
    fail(source, `file is only ${totalLength} bytes, too short to be a safetensors file (it must start with an 8-byte header length); it is truncated or not a safetensors file`);
  }
  const n = Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    fail(source, `header length field says ${n} bytes, more than the ${MAX_HEADER_BYTES}-byte limit; this is not a safetensors file or its first 8 bytes are corrupted`);
  }
  const len = Number(n);
  if (len > totalLength - 8) {
    fail(source, `header claims ${len} bytes but only ${totalLength - 8} bytes follow the length field; the file is truncated or not a safetensors file`);
  }
  return len;
}

/**
 * Finds a key that occurs twice at the top level of `text`, which must be
 * valid JSON. JSON.parse keeps the last duplicate silently, so a file with
 * two entries for one tensor would otherwise load whichever came last.
 */
function findDuplicateTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const start = i++;
      while (text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c ? 2 : 1;
      if (depth === 1) {
        let j = i + 1;
        while (j < text.length && /\s/.test(text[j]!)) j++;
        if (text.charCodeAt(j) === 0x3a) {
          const key = JSON.parse(text.slice(start, i + 1)) as string;
          if (seen.has(key)) return key;
          seen.add(key);
        }
      }
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeHeaderJson(jsonBytes: Uint8Array, headerLength: number, dataLength: number, source: string): SafetensorsHeader {
  let text: string;
  try {
    text = utf8.decode(jsonBytes);
  } catch {
    fail(source, 'header is not valid UTF-8; the file is corrupted or not a safetensors file');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    fail(source, `header is not valid JSON (${(err as Error).message.replace(/\s+/g, ' ')}); the file is corrupted or not a safetensors file`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) fail(source, 'header must be a JSON object');
  const dup = findDuplicateTopLevelKey(text);
  if (dup !== undefined) fail(source, `header lists "${dup}" more than once`);

  let metadata: SafetensorsMetadata | undefined;
  const tensors: SafetensorsTensorInfo[] = [];
  for (const [name, raw] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      // The reference reader treats null as "no metadata"; some writers emit it.
      if (raw === null) continue;
      validateMetadata(raw, source);
      metadata = { ...raw };
      continue;
    }
    const what = `tensor "${name}"`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(source, `${what}: entry must be an object with dtype, shape and data_offsets`);
    const e = raw as Record<string, unknown>;
    if (!isDtype(e.dtype)) {
      if (typeof e.dtype === 'string' && OTHER_SPEC_DTYPES.has(e.dtype)) {
        fail(source, `${what} has dtype ${e.dtype}, which gptcuda cannot load (supported: ${SUPPORTED_DTYPES.join(', ')}); convert the file first`);
      }
      fail(source, `${what} has unknown dtype ${JSON.stringify(e.dtype)} (not a safetensors dtype)`);
    }
    const numel = numelOf(e.shape);
    if (numel === undefined) fail(source, `${what}: shape must be an array of non-negative integers, got ${JSON.stringify(e.shape)}`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      fail(source, `${what}: data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (end < begin) fail(source, `${what}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLength) {
      fail(source, `${what}: data_offsets [${begin}, ${end}] are out of range; the data section has only ${dataLength} bytes (file truncated?)`);
    }
    const shape = e.shape as number[];
    const need = numel * DTYPE_BYTES[e.dtype];
    if (end - begin !== need) {
      fail(source, `${what}: shape ${fmtShape(shape)} × ${e.dtype} needs ${need} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    tensors.push({ name, dtype: e.dtype, shape: [...shape], dataOffsets: [begin, end] });
  }

  tensors.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let cursor = 0;
  let prev: SafetensorsTensorInfo | undefined;
  for (const t of tensors) {
    const [begin] = t.dataOffsets;
    if (begin < cursor) fail(source, `tensors "${prev!.name}" and "${t.name}" overlap (bytes ${begin}..${cursor} of the data section)`);
    if (begin > cursor) {
      fail(source, `${begin - cursor} unused bytes at offset ${cursor} of the data section${prev ? ` after tensor "${prev.name}"` : ''}; tensors must be stored contiguously`);
    }
    cursor = t.dataOffsets[1];
    prev = t;
  }
  if (cursor !== dataLength) {
    fail(source, `the data section has ${dataLength} bytes but the tensors cover only ${cursor}; ${dataLength - cursor} trailing bytes are not part of any tensor`);
  }
  return { headerLength, dataStart: 8 + headerLength, dataLength, metadata, tensors };
}

/**
 * Parses and validates a safetensors header.
 *
 * - From bytes: `bytes` must hold at least the prefix and the header;
 *   `totalLength` is the whole file's size (default `bytes.length`), which is
 *   needed to check the data offsets.
 * - From an open FileHandle: reads just the header (the file size comes from fstat).
 */
export function parseSafetensorsHeader(bytes: Uint8Array, options?: { totalLength?: number; source?: string }): SafetensorsHeader;
export function parseSafetensorsHeader(fh: FileHandle, options?: { source?: string }): Promise<SafetensorsHeader>;
export function parseSafetensorsHeader(
  src: Uint8Array | FileHandle,
  options: { totalLength?: number; source?: string } = {},
): SafetensorsHeader | Promise<SafetensorsHeader> {
  if (src instanceof Uint8Array) {
    const source = options.source ?? 'safetensors';
    const total = options.totalLength ?? src.length;
    if (total >= 8 && src.length < 8) fail(source, `need at least the first 8 bytes to parse the header, got ${src.length}`);
    const n = checkHeaderLength(src, total, source);
    if (src.length < 8 + n) fail(source, `need ${8 + n} bytes to parse the header but only ${src.length} were given`);
    return decodeHeaderJson(src.subarray(8, 8 + n), n, total - 8 - n, source);
  }
  return parseHeaderFromHandle(src, options.source ?? 'safetensors');
}

async function readExactly(fh: FileHandle, target: Uint8Array, position: number, source: string): Promise<void> {
  const got = await readFully(fh, target, position);
  if (got < target.length) fail(source, `unexpected end of file at byte ${position + got} (the file shrank while being read?)`);
}

async function parseHeaderFromHandle(fh: FileHandle, source: string): Promise<SafetensorsHeader> {
  const total = (await fh.stat()).size;
  const prefix = Buffer.alloc(8);
  if (total >= 8) await readExactly(fh, prefix, 0, source);
  const n = checkHeaderLength(prefix, total, source);
  const json = Buffer.allocUnsafe(n);
  await readExactly(fh, json, 8, source);
  return decodeHeaderJson(json, n, total - 8 - n, source);
}

// ---------------------------------------------------------------------------
// Reading

/**
 * Decodes a whole safetensors file held in memory. Tensors are zero-copy
 * views into `bytes` when their offset is aligned for the element type (always
 * the case for files written by {@link encodeSafetensors} or the reference
 * implementation), otherwise copies; either way, modifying `bytes` afterwards
 * may affect the returned tensors.
 */
export function readSafetensors(bytes: Uint8Array, source = 'safetensors'): SafetensorsContents {
  assertLittleEndian();
  const h = parseSafetensorsHeader(bytes, { source });
  const tensors = new Map<string, NamedTensor>();
  for (const info of h.tensors) {
    const size = DTYPE_BYTES[info.dtype];
    const [begin, end] = info.dataOffsets;
    const numel = (end - begin) / size;
    const abs = bytes.byteOffset + h.dataStart + begin;
    let data: TensorData;
    if (abs % size === 0) {
      data = viewTyped(info.dtype, bytes.buffer, abs, numel);
    } else {
      data = allocTyped(info.dtype, numel);
      tensorBytes({ data }).set(bytes.subarray(h.dataStart + begin, h.dataStart + end));
    }
    tensors.set(info.name, { name: info.name, dtype: info.dtype, shape: info.shape, data });
  }
  return { metadata: h.metadata, tensors };
}

/**
 * Reads a safetensors file from disk, each tensor straight into its own
 * (aligned) typed array. Unlike reading the whole file into one Buffer, this
 * works for files larger than Node's maximum Buffer size.
 */
export async function readSafetensorsFile(path: string): Promise<SafetensorsContents> {
  assertLittleEndian();
  const fh = await open(path, 'r');
  try {
    const h = await parseHeaderFromHandle(fh, path);
    const tensors = new Map<string, NamedTensor>();
    for (const info of h.tensors) {
      const [begin, end] = info.dataOffsets;
      const data = allocTyped(info.dtype, (end - begin) / DTYPE_BYTES[info.dtype]);
      await readExactly(fh, tensorBytes({ data }), h.dataStart + begin, path);
      tensors.set(info.name, { name: info.name, dtype: info.dtype, shape: info.shape, data });
    }
    return { metadata: h.metadata, tensors };
  } finally {
    await fh.close();
  }
}

export interface DecodedSafetensorsStream extends SafetensorsContents {
  /** Hex sha256 of each tensor's bytes, when requested. */
  sha256: Map<string, string> | undefined;
}

interface PendingTensor {
  info: SafetensorsTensorInfo;
  data: TensorData;
  bytes: Uint8Array;
  hash: Hash | undefined;
}

/**
 * Incremental decoder for a safetensors file arriving in chunks of arbitrary
 * size (e.g. the body of a tar entry). Each tensor is copied once, from the
 * chunk into its own typed array, and optionally hashed on the way, so a
 * multi-gigabyte file never needs to be held in a single buffer.
 */
export class SafetensorsStreamDecoder {
  private readonly prefix = Buffer.alloc(8);
  private prefixFill = 0;
  private headerBytes: Uint8Array | undefined;
  private headerFill = 0;
  private header: SafetensorsHeader | undefined;
  private pending: PendingTensor[] = [];
  private index = 0;
  private filled = 0;
  private received = 0;

  constructor(
    /** Exact size of the whole file, known up front (tar headers carry it). */
    readonly totalLength: number,
    /** Used as the prefix of error messages, e.g. the entry name. */
    readonly source: string,
    private readonly options: { sha256?: boolean } = {},
  ) {
    assertLittleEndian();
    if (totalLength < 8) checkHeaderLength(this.prefix, totalLength, source);
  }

  write(chunk: Uint8Array): void {
    if (this.received + chunk.length > this.totalLength) fail(this.source, `received more than the declared ${this.totalLength} bytes`);
    this.received += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      if (this.header === undefined) {
        if (this.prefixFill < 8) {
          const take = Math.min(8 - this.prefixFill, chunk.length - off);
          this.prefix.set(chunk.subarray(off, off + take), this.prefixFill);
          this.prefixFill += take;
          off += take;
          if (this.prefixFill === 8) {
            const n = checkHeaderLength(this.prefix, this.totalLength, this.source);
            this.headerBytes = new Uint8Array(n);
            if (n === 0) this.finishHeader();
          }
        } else {
          const hb = this.headerBytes!;
          const take = Math.min(hb.length - this.headerFill, chunk.length - off);
          hb.set(chunk.subarray(off, off + take), this.headerFill);
          this.headerFill += take;
          off += take;
          if (this.headerFill === hb.length) this.finishHeader();
        }
        continue;
      }
      this.skipFullTensors();
      // The header check guarantees the tensors tile the data section, and
      // the length check above that no byte falls past it.
      const t = this.pending[this.index]!;
      const take = Math.min(t.bytes.length - this.filled, chunk.length - off);
      const piece = chunk.subarray(off, off + take);
      t.bytes.set(piece, this.filled);
      t.hash?.update(piece);
      this.filled += take;
      off += take;
    }
  }

  private skipFullTensors(): void {
    while (this.index < this.pending.length && this.filled === this.pending[this.index]!.bytes.length) {
      this.index++;
      this.filled = 0;
    }
  }

  private finishHeader(): void {
    const n = this.headerBytes!.length;
    this.header = decodeHeaderJson(this.headerBytes!, n, this.totalLength - 8 - n, this.source);
    this.headerBytes = undefined;
    for (const info of this.header.tensors) {
      const [begin, end] = info.dataOffsets;
      const data = allocTyped(info.dtype, (end - begin) / DTYPE_BYTES[info.dtype]);
      this.pending.push({ info, data, bytes: tensorBytes({ data }), hash: this.options.sha256 ? createHash('sha256') : undefined });
    }
  }

  /** Call after the last chunk; throws if fewer than `totalLength` bytes arrived. */
  end(): DecodedSafetensorsStream {
    if (this.received < this.totalLength || this.header === undefined) {
      fail(this.source, `truncated: expected ${this.totalLength} bytes but got only ${this.received}`);
    }
    const tensors = new Map<string, NamedTensor>();
    const sha = this.options.sha256 ? new Map<string, string>() : undefined;
    for (const p of this.pending) {
      tensors.set(p.info.name, { name: p.info.name, dtype: p.info.dtype, shape: p.info.shape, data: p.data });
      sha?.set(p.info.name, p.hash!.digest('hex'));
    }
    this.pending = [];
    return { metadata: this.header.metadata, tensors, sha256: sha };
  }
}
