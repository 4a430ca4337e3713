/**
 * The checkpoint archive: one uncompressed POSIX tar file holding
 *
 *   manifest.json          (first, so a quick check reads only the file's head)
 *   model.safetensors
 *   optimizer.safetensors  (optional; any number of `*.safetensors` entries)
 *
 * One file rather than a directory so that a checkpoint is replaced
 * atomically with a single rename, and so users can copy it around as a unit;
 * tar so that standard tools can inspect and unpack it (`tar -tf`,
 * `tar -xOf ckpt.tar manifest.json`). The manifest records a sha256 for every
 * tensor, so silent corruption (bad disk, bad copy) is caught at load time
 * instead of surfacing as a diverging loss.
 *
 * Reading uses the `tar` package's streaming Parser, never extraction: entry
 * names are matched against an allow-list and never used as filesystem paths.
 * Writing emits the ustar headers itself (encoded with the `tar` package's
 * Header class): tar.Pack only packs files from disk, and staging multi-GB
 * tensors on disk first would double the I/O and need the same again in free
 * space.
 */

import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Header, Parser, Pax, type HeaderData, type ReadEntry } from 'tar';
import { readFully } from '../io/files.js';
import { atomicWriteWith, ChunkWriter } from './atomic.js';
import {
  encodeSafetensors,
  parseSafetensorsHeader,
  SafetensorsError,
  SafetensorsStreamDecoder,
  SUPPORTED_DTYPES,
  tensorBytes,
  type EncodedSafetensors,
  type NamedTensor,
  type SafetensorsDtype,
  type SafetensorsMetadata,
} from './safetensors.js';

export const CHECKPOINT_FORMAT = 'gptcuda-checkpoint';
export const CHECKPOINT_FORMAT_VERSION = 1;
export const MANIFEST_NAME = 'manifest.json';

/** A manifest is small (names, hashes, config); anything huge is corruption or not ours. */
const MAX_MANIFEST_BYTES = 64 << 20;
const BLOCK = 512;

export interface TensorChecksum {
  sha256: string;
  dtype: SafetensorsDtype;
  shape: number[];
}

export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT;
  format_version: number;
  /** tensors[fileName][tensorName], e.g. tensors['model.safetensors']['wte']. */
  tensors: Record<string, Record<string, TensorChecksum>>;
  [key: string]: unknown;
}

export interface CheckpointFileInput {
  /** Entry name, e.g. "model.safetensors". */
  name: string;
  tensors: readonly NamedTensor[];
  metadata?: SafetensorsMetadata;
}

export interface WriteCheckpointInput {
  /**
   * Caller's fields (step, config, ...), stored as JSON. `format`,
   * `format_version` and `tensors` are filled in by the writer (overwriting
   * any values given, so a manifest read back from a checkpoint can be reused).
   */
  manifest: Record<string, unknown>;
  files: readonly CheckpointFileInput[];
}

export type CheckpointErrorCode =
  | 'NOT_TAR'
  | 'TRUNCATED'
  | 'CORRUPT'
  | 'UNSAFE_ENTRY'
  | 'UNEXPECTED_ENTRY'
  | 'NO_MANIFEST'
  | 'BAD_MANIFEST'
  | 'NEWER_VERSION'
  | 'CHECKSUM'
  | 'MISMATCH'
  | 'NON_FINITE';

export class CheckpointError extends Error {
  override name = 'CheckpointError';
  constructor(
    readonly code: CheckpointErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface ReadCheckpointOptions {
  /** What NaN/Inf in a float tensor does: throw (default), or add to `warnings`. */
  nonFinite?: 'error' | 'warn';
}

export interface CheckpointArchive {
  manifest: CheckpointManifest;
  /** files.get('model.safetensors').get('wte') */
  files: Map<string, Map<string, NamedTensor>>;
  /** Each safetensors entry's `__metadata__`. */
  metadata: Map<string, SafetensorsMetadata | undefined>;
  warnings: string[];
}

// ---------------------------------------------------------------------------
// Writing

const FILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*\.safetensors$/;

/** The header block(s) for a regular file entry; a pax header is prepended when a field (size ≥ 8 GiB) overflows ustar. */
function tarFileHeader(name: string, size: number, mtime: Date): Buffer {
  const data: HeaderData = { path: name, mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', size, mtime, type: 'File' };
  const block = Buffer.alloc(BLOCK);
  const needPax = new Header(data).encode(block, 0);
  // Header.encode falls back to GNU base-256 for oversized numbers; the pax
  // record makes the exact size available to strictly POSIX readers too.
  return needPax ? Buffer.concat([new Pax({ path: name, size, mtime }).encode(), block]) : block;
}

/** Bytes an entry of `size` bytes takes in the archive: header block(s), data, padding to a block. */
function tarEntryBytes(name: string, size: number, mtime: Date): number {
  return tarFileHeader(name, size, mtime).length + Math.ceil(size / BLOCK) * BLOCK;
}

async function writeTarEntry(w: ChunkWriter, name: string, chunks: readonly Uint8Array[], size: number, mtime: Date): Promise<void> {
  await w.write(tarFileHeader(name, size, mtime));
  const start = w.bytesWritten;
  for (const c of chunks) await w.write(c);
  const got = w.bytesWritten - start;
  if (got !== size) throw new Error(`internal error: entry ${name} wrote ${got} bytes, header says ${size}`);
  const pad = (BLOCK - (size % BLOCK)) % BLOCK;
  if (pad) await w.write(Buffer.alloc(pad));
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Key of the manifest's own checksum (see {@link manifestChecksum}). */
export const MANIFEST_CHECKSUM_KEY = 'manifest_sha256';

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v as object).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** sha256 of the manifest's content (keys sorted, its own checksum left out): config, step, lr, ... */
export function manifestChecksum(manifest: Record<string, unknown>): string {
  const { [MANIFEST_CHECKSUM_KEY]: _omit, ...rest } = manifest;
  return createHash('sha256').update(canonicalJson(rest), 'utf8').digest('hex');
}

/**
 * Atomically writes a checkpoint archive to `path` (temp file in the same
 * directory, fsync, rename, directory fsync): a crash at any moment leaves
 * either the previous file or the complete new one. Tensor data is streamed
 * from the caller's arrays, which must not change until this resolves.
 * Returns the manifest as written.
 */
export async function writeCheckpointArchive(path: string, input: WriteCheckpointInput): Promise<CheckpointManifest> {
  const names = new Set<string>();
  for (const f of input.files) {
    if (typeof f.name !== 'string' || !FILE_NAME_RE.test(f.name) || f.name.length > 99) {
      throw new TypeError(`checkpoint file name ${JSON.stringify(f.name)} is invalid: use a plain name ending in .safetensors, e.g. "model.safetensors"`);
    }
    if (names.has(f.name)) throw new TypeError(`checkpoint file "${f.name}" is given twice`);
    names.add(f.name);
  }
  if (typeof input.manifest !== 'object' || input.manifest === null || Array.isArray(input.manifest)) {
    throw new TypeError('checkpoint manifest must be a plain object');
  }

  const encoded: { name: string; enc: EncodedSafetensors }[] = [];
  const tensors: CheckpointManifest['tensors'] = {};
  for (const f of input.files) {
    const enc = encodeSafetensors(f.tensors, f.metadata);
    const sums: Record<string, TensorChecksum> = {};
    for (const t of f.tensors) sums[t.name] = { sha256: sha256Hex(tensorBytes(t)), dtype: t.dtype, shape: [...t.shape] };
    tensors[f.name] = sums;
    encoded.push({ name: f.name, enc });
  }
  const manifest: CheckpointManifest = {
    ...input.manifest,
    format: CHECKPOINT_FORMAT,
    format_version: CHECKPOINT_FORMAT_VERSION,
    tensors,
  };
  let manifestText: string;
  try {
    delete manifest[MANIFEST_CHECKSUM_KEY];
    manifest[MANIFEST_CHECKSUM_KEY] = manifestChecksum(JSON.parse(JSON.stringify(manifest)));
    manifestText = JSON.stringify(manifest, null, 2) + '\n';
  } catch (err) {
    throw new TypeError(`checkpoint manifest is not JSON-serializable: ${(err as Error).message}`);
  }
  const manifestBytes = Buffer.from(manifestText, 'utf8');
  const mtime = new Date(Math.floor(Date.now() / 1000) * 1000);

  // The exact archive size, so a full disk is reported with the bytes it needs.
  const size = tarEntryBytes(MANIFEST_NAME, manifestBytes.length, mtime) + encoded.reduce((n, { name, enc }) => n + tarEntryBytes(name, enc.byteLength, mtime), 0) + 2 * BLOCK;
  await atomicWriteWith(path, async (fh) => {
    const w = new ChunkWriter(fh);
    await writeTarEntry(w, MANIFEST_NAME, [manifestBytes], manifestBytes.length, mtime);
    for (const { name, enc } of encoded) await writeTarEntry(w, name, enc.chunks, enc.byteLength, mtime);
    // End-of-archive: two zero blocks.
    await w.write(Buffer.alloc(2 * BLOCK));
    await w.flush();
    if (w.bytesWritten !== size) throw new Error(`internal error: checkpoint archive ${path} is ${w.bytesWritten} bytes, expected ${size}`);
  }, { size });
  return manifest;
}

// ---------------------------------------------------------------------------
// Validation shared by the full read and the quick check

/** Returns an error message if `p` must never be accepted as an entry name. */
function unsafePathReason(p: string): string | undefined {
  if (p.startsWith('/') || p.startsWith('\\') || /^[A-Za-z]:/.test(p)) return 'an absolute path';
  if (p.split(/[\\/]+/).includes('..')) return 'a ".." path component';
  return undefined;
}

/** Entry name with a harmless leading "./" removed (as produced by `tar -C dir .`). */
function entryName(p: string): string {
  return p.replace(/^(\.\/)+/, '');
}

const REGULAR_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);

function validateManifest(raw: unknown, where: string): CheckpointManifest {
  const bad = (msg: string): never => {
    throw new CheckpointError('BAD_MANIFEST', `${where}: manifest.json ${msg}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('is not a JSON object');
  const m = raw as Record<string, unknown>;
  if (m.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError('BAD_MANIFEST', `${where}: not a gptcuda checkpoint (manifest format is ${JSON.stringify(m.format)}, expected "${CHECKPOINT_FORMAT}")`);
  }
  const v = m.format_version;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) bad(`has an invalid format_version ${JSON.stringify(v)}`);
  if ((v as number) > CHECKPOINT_FORMAT_VERSION) {
    throw new CheckpointError(
      'NEWER_VERSION',
      `${where}: checkpoint format version ${v} is newer than this gptcuda supports (version ${CHECKPOINT_FORMAT_VERSION}); it was written by a newer gptcuda, upgrade gptcuda to load it`,
    );
  }
  // The manifest's own checksum covers config and training state (step, lr, ...), so an
  // edited value is caught like a flipped tensor byte. Old checkpoints lack it (warned in finishRead).
  const sum = m[MANIFEST_CHECKSUM_KEY];
  if (sum !== undefined) {
    if (typeof sum !== 'string' || !/^[0-9a-f]{64}$/.test(sum)) bad(`has a malformed ${MANIFEST_CHECKSUM_KEY}`);
    if (manifestChecksum(m) !== sum) {
      throw new CheckpointError('CHECKSUM', `${where}: manifest.json does not match its ${MANIFEST_CHECKSUM_KEY} (config or training state was edited or corrupted); use an older checkpoint or a good copy`);
    }
  }
  const files = m.tensors;
  if (typeof files !== 'object' || files === null || Array.isArray(files)) bad('has no "tensors" table');
  for (const [file, list] of Object.entries(files as object)) {
    if (typeof list !== 'object' || list === null || Array.isArray(list)) bad(`tensors["${file}"] is not an object`);
    for (const [name, c] of Object.entries(list as object)) {
      const e = c as Partial<TensorChecksum> | null;
      if (
        typeof e !== 'object' || e === null ||
        typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256) ||
        !SUPPORTED_DTYPES.includes(e.dtype as SafetensorsDtype) ||
        !Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)
      ) {
        bad(`entry for tensor "${name}" in ${file} is malformed (needs sha256, dtype, shape)`);
      }
    }
  }
  return m as CheckpointManifest;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Checks that the tensors stored in `file` are exactly those the manifest lists, with the same dtype and shape. */
function checkTensorSet(
  where: string,
  file: string,
  listed: Record<string, TensorChecksum>,
  stored: Iterable<{ name: string; dtype: SafetensorsDtype; shape: number[] }>,
): void {
  const seen = new Set<string>();
  for (const t of stored) {
    seen.add(t.name);
    const m = listed[t.name];
    if (!m) throw new CheckpointError('MISMATCH', `${where}: tensor "${t.name}" in ${file} is not listed in the manifest; the archive was modified or is corrupted`);
    if (m.dtype !== t.dtype || !sameShape(m.shape, t.shape)) {
      throw new CheckpointError(
        'MISMATCH',
        `${where}: tensor "${t.name}" in ${file} is ${t.dtype} [${t.shape.join(', ')}] but the manifest says ${m.dtype} [${m.shape.join(', ')}]; the archive is corrupted`,
      );
    }
  }
  const missing = Object.keys(listed).filter((n) => !seen.has(n));
  if (missing.length) {
    throw new CheckpointError('MISMATCH', `${where}: ${file} is missing tensor${missing.length > 1 ? 's' : ''} ${missing.map((n) => `"${n}"`).join(', ')} listed in the manifest; the archive is corrupted`);
  }
}

/** [count, first flat index] of NaN/Inf values in a float tensor. */
function nonFiniteStats(t: NamedTensor): [number, number] {
  let count = 0;
  let first = -1;
  if (t.dtype === 'F32') {
    const a = t.data as Float32Array;
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      // x - x is NaN exactly for NaN and ±Inf; cheaper than Number.isFinite per element.
      if (x - x !== 0) {
        if (count++ === 0) first = i;
      }
    }
  } else if (t.dtype === 'F16' || t.dtype === 'BF16') {
    // All-ones exponent means Inf or NaN in both half formats.
    const mask = t.dtype === 'F16' ? 0x7c00 : 0x7f80;
    const a = t.data as Uint16Array;
    for (let i = 0; i < a.length; i++) {
      if ((a[i]! & mask) === mask) {
        if (count++ === 0) first = i;
      }
    }
  }
  return [count, first];
}

/** Reads the first 512 bytes and tells plain garbage apart from a damaged tar, so the user gets the right advice. */
async function sniffTar(fh: FileHandle, path: string, size: number): Promise<void> {
  const notTar = (why: string): never => {
    throw new CheckpointError('NOT_TAR', `${path}: not a gptcuda checkpoint (not a tar archive): ${why}`);
  };
  if (size === 0) notTar('the file is empty');
  const head = Buffer.alloc(Math.min(size, BLOCK));
  await readFully(fh, head, 0);
  if (head[0] === 0x1f && head[1] === 0x8b) notTar('it is gzip-compressed; decompress it (gunzip) first');
  if (size < BLOCK) {
    // A copy of one of our archives cut inside its first header still starts with the manifest's name.
    if (head.subarray(0, MANIFEST_NAME.length + 1).equals(Buffer.from(MANIFEST_NAME + '\0'))) {
      throw new CheckpointError('TRUNCATED', `${path}: checkpoint archive is truncated (only ${size} bytes, cut inside the first tar header); the file was cut short, use an older checkpoint`);
    }
    notTar(`the file is only ${size} bytes`);
  }
  let h: Header | undefined;
  try {
    h = new Header(head, 0);
  } catch {
    h = undefined;
  }
  if (!h || !h.cksumValid || head.toString('latin1', 257, 262) !== 'ustar') notTar('no valid tar header at the start of the file');
}

// ---------------------------------------------------------------------------
// Full read

/**
 * Reads and fully validates a checkpoint archive: tar structure, manifest,
 * format version, tensor set, per-tensor sha256, and NaN/Inf. Nothing is
 * returned unless every check passed, so callers never load half a checkpoint.
 */
export async function readCheckpointArchive(path: string, options: ReadCheckpointOptions = {}): Promise<CheckpointArchive> {
  const nonFinite = options.nonFinite ?? 'error';
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new CheckpointError('NOT_TAR', `${path}: not a regular file`);
    await sniffTar(fh, path, st.size);
    const parsed = await parseArchiveStream(fh, path);
    return finishRead(parsed, path, nonFinite);
  } finally {
    await fh.close();
  }
}

interface ParsedArchive {
  manifest: CheckpointManifest;
  decoded: Map<string, ReturnType<SafetensorsStreamDecoder['end']>>;
  unexpected: string[];
}

async function parseArchiveStream(fh: FileHandle, path: string): Promise<ParsedArchive> {
  let error: Error | undefined;
  const setError = (e: unknown): void => {
    error ??= e instanceof CheckpointError ? e : e instanceof SafetensorsError ? new CheckpointError('CORRUPT', `${path}: ${e.message}`) : (e as Error);
  };
  let manifest: CheckpointManifest | undefined;
  let sawEof = false;
  let lastEntry: string | undefined;
  const seen = new Set<string>();
  const decoded: ParsedArchive['decoded'] = new Map();
  const unexpected: string[] = [];
  const truncated = (name: string, size: number, got: number): CheckpointError =>
    new CheckpointError(
      'TRUNCATED',
      `${path}: checkpoint archive is truncated: entry "${name}" should have ${size} bytes but the file ends after ${got}; the file was cut short (interrupted copy or full disk?), use an older checkpoint`,
    );

  // strict: false so that problems arrive as 'warn' events we can word
  // ourselves; every one of them is treated as fatal below.
  const parser = new Parser({ strict: false });
  const ended = new Promise<void>((resolve) => parser.on('end', () => resolve()));

  parser.on('warn', (code: string, message: string) => {
    if (/Truncated input/.test(message)) setError(new CheckpointError('TRUNCATED', `${path}: checkpoint archive is truncated (${message}); the file was cut short, use an older checkpoint`));
    else if (code === 'TAR_ENTRY_INVALID') setError(new CheckpointError('CORRUPT', `${path}: corrupted tar header${lastEntry ? ` after entry "${lastEntry}"` : ''} (${message}); the archive is damaged, use an older checkpoint`));
    else setError(new CheckpointError('CORRUPT', `${path}: damaged tar archive (${code}: ${message})`));
  });
  parser.on('eof', () => {
    sawEof = true;
  });
  // Entry types the parser does not model at all (sockets, vendor types)
  // arrive here instead of 'entry'.
  parser.on('ignoredEntry', (entry: ReadEntry) => {
    setError(new CheckpointError('UNEXPECTED_ENTRY', `${path}: unexpected entry "${entry.path}" of type ${entry.type}; a checkpoint contains only regular files`));
  });
  parser.on('entry', (entry: ReadEntry) => {
    if (error) {
      entry.resume();
      return;
    }
    const unsafe = unsafePathReason(entry.path);
    if (unsafe) {
      setError(new CheckpointError('UNSAFE_ENTRY', `${path}: refusing entry "${entry.path}" with ${unsafe}; this archive was not written by gptcuda and may be malicious`));
      entry.resume();
      return;
    }
    if (!REGULAR_TYPES.has(entry.type)) {
      setError(new CheckpointError('UNEXPECTED_ENTRY', `${path}: unexpected entry "${entry.path}" of type ${entry.type}; a checkpoint contains only regular files`));
      entry.resume();
      return;
    }
    const name = entryName(entry.path);
    if (seen.has(name)) {
      setError(new CheckpointError('UNEXPECTED_ENTRY', `${path}: entry "${name}" appears more than once; the archive was modified or is corrupted`));
      entry.resume();
      return;
    }
    seen.add(name);
    lastEntry = name;
    const size = entry.size;
    let got = 0;

    if (name === MANIFEST_NAME) {
      if (size > MAX_MANIFEST_BYTES) {
        setError(new CheckpointError('BAD_MANIFEST', `${path}: manifest.json is ${size} bytes, far larger than any real manifest; the archive is corrupted`));
        entry.resume();
        return;
      }
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => {
        got += c.length;
        chunks.push(c);
      });
      entry.on('end', () => {
        if (error) return;
        if (got < size) return setError(truncated(name, size, got));
        let raw: unknown;
        try {
          raw = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch (err) {
          return setError(new CheckpointError('BAD_MANIFEST', `${path}: manifest.json is not valid JSON (${(err as Error).message.replace(/\s+/g, ' ')}); the archive is corrupted`));
        }
        // Checked as soon as the manifest arrives: a checkpoint from a newer
        // gptcuda may have a different layout, and "upgrade gptcuda" is the
        // useful message, not whatever the rest of the file trips over.
        try {
          manifest = validateManifest(raw, path);
        } catch (err) {
          setError(err);
        }
      });
      return;
    }

    if (!name.endsWith('.safetensors') || name.includes('/')) {
      unexpected.push(name);
      entry.resume();
      return;
    }
    let decoder: SafetensorsStreamDecoder;
    try {
      decoder = new SafetensorsStreamDecoder(size, name, { sha256: true });
    } catch (err) {
      setError(err);
      entry.resume();
      return;
    }
    entry.on('data', (c: Buffer) => {
      got += c.length;
      if (error) return;
      try {
        decoder.write(c);
      } catch (err) {
        setError(err);
      }
    });
    entry.on('end', () => {
      if (error) return;
      if (got < size) return setError(truncated(name, size, got));
      try {
        decoded.set(name, decoder.end());
      } catch (err) {
        setError(err);
      }
    });
  });

  const rs = fh.createReadStream({ start: 0, highWaterMark: 4 << 20, autoClose: false });
  try {
    // Entry bodies are consumed synchronously in the handlers above, so the
    // parser never holds more than the current chunk and backpressure is moot.
    for await (const chunk of rs) {
      // Stop at the end-of-archive marker: whatever follows (record padding
      // from other tar writers) is irrelevant, and the parser would buffer it.
      if (error || sawEof) break;
      parser.write(chunk as Buffer);
    }
  } finally {
    rs.destroy();
  }
  if (!error) {
    parser.end();
    await ended;
  }
  if (error) throw error;
  if (!sawEof) {
    throw new CheckpointError(
      'TRUNCATED',
      `${path}: checkpoint archive is truncated: the end-of-archive marker is missing${lastEntry ? ` after entry "${lastEntry}"` : ''}; the file was cut short (interrupted copy or full disk?), use an older checkpoint`,
    );
  }
  if (!manifest) throw new CheckpointError('NO_MANIFEST', `${path}: not a gptcuda checkpoint: the archive has no manifest.json`);
  return { manifest, decoded, unexpected };
}

function finishRead(parsed: ParsedArchive, path: string, nonFinite: 'error' | 'warn'): CheckpointArchive {
  const { manifest, decoded, unexpected } = parsed;
  const extra = [...unexpected, ...[...decoded.keys()].filter((n) => !Object.hasOwn(manifest.tensors, n))];
  if (extra.length) {
    throw new CheckpointError('UNEXPECTED_ENTRY', `${path}: unexpected entr${extra.length > 1 ? 'ies' : 'y'} ${extra.map((n) => `"${n}"`).join(', ')} not listed in the manifest; the archive was modified or is corrupted`);
  }
  const files = new Map<string, Map<string, NamedTensor>>();
  const metadata = new Map<string, SafetensorsMetadata | undefined>();
  const warnings: string[] = [];
  if (manifest[MANIFEST_CHECKSUM_KEY] === undefined) warnings.push(`${path}: manifest.json has no ${MANIFEST_CHECKSUM_KEY} (written by an older gptcuda); its config and training state cannot be verified`);
  for (const [file, listed] of Object.entries(manifest.tensors)) {
    const d = decoded.get(file);
    if (!d) throw new CheckpointError('MISMATCH', `${path}: the manifest lists ${file} but the archive has no such entry; the archive is incomplete or corrupted`);
    checkTensorSet(path, file, listed, d.tensors.values());
    const corrupted = [...d.tensors.keys()].filter((n) => d.sha256!.get(n) !== listed[n]!.sha256);
    if (corrupted.length) {
      const which = corrupted.slice(0, 5).map((n) => `"${n}"`).join(', ') + (corrupted.length > 5 ? ` and ${corrupted.length - 5} more` : '');
      throw new CheckpointError(
        'CHECKSUM',
        `${path}: tensor${corrupted.length > 1 ? 's' : ''} ${which} in ${file} ${corrupted.length > 1 ? 'are' : 'is'} corrupted (sha256 mismatch); the file was damaged on disk or in transit, use an older checkpoint or a good copy`,
      );
    }
    for (const t of d.tensors.values()) {
      const [count, first] = nonFiniteStats(t);
      if (count === 0) continue;
      const msg = `tensor "${t.name}" in ${file} has ${count} non-finite value${count > 1 ? 's' : ''} (NaN/Inf), first at flat index ${first}`;
      if (nonFinite === 'error') {
        throw new CheckpointError('NON_FINITE', `${path}: ${msg}; training had diverged when this checkpoint was saved, resume from an older one (or read with nonFinite: 'warn' to inspect it)`);
      }
      warnings.push(msg);
    }
    files.set(file, d.tensors);
    metadata.set(file, d.metadata);
  }
  return { manifest, files, metadata, warnings };
}

// ---------------------------------------------------------------------------
// Quick structural check

export interface CheckpointSummary {
  path: string;
  manifest: CheckpointManifest;
  /** Regular-file entries with the absolute offset of their data. */
  entries: { name: string; size: number; dataOffset: number }[];
}

/**
 * Cheap integrity check that reads only tar headers, the manifest and the
 * safetensors headers (a few KB, whatever the checkpoint's size): catches
 * truncation, a missing or unreadable manifest, a newer format, and
 * safetensors headers that disagree with the manifest. It does not hash the
 * data; {@link readCheckpointArchive} does.
 */
export async function inspectCheckpoint(path: string): Promise<CheckpointSummary> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new CheckpointError('NOT_TAR', `${path}: not a regular file`);
    const size = st.size;
    await sniffTar(fh, path, size);
    const truncated = (what: string): never => {
      throw new CheckpointError('TRUNCATED', `${path}: checkpoint archive is truncated (${what}); the file was cut short, use an older checkpoint`);
    };
    const entries: CheckpointSummary['entries'] = [];
    // By name, so an archive of many tiny entries costs linear time, not quadratic.
    const byName = new Map<string, CheckpointSummary['entries'][number]>();
    const block = Buffer.alloc(BLOCK);
    let ex: HeaderData | undefined;
    let gex: HeaderData | undefined;
    let off = 0;
    let nullBlocks = 0;
    while (nullBlocks < 2) {
      if ((await readFully(fh, block, off)) < BLOCK) truncated(`the end-of-archive marker is missing at byte ${off}`);
      if (block.every((b) => b === 0)) {
        nullBlocks++;
        off += BLOCK;
        continue;
      }
      nullBlocks = 0;
      let h: Header;
      try {
        h = new Header(block, 0, ex, gex);
      } catch (err) {
        throw new CheckpointError('CORRUPT', `${path}: corrupted tar header at byte ${off} (${(err as Error).message})`);
      }
      if (!h.cksumValid) throw new CheckpointError('CORRUPT', `${path}: corrupted tar header at byte ${off} (checksum failure); the archive is damaged, use an older checkpoint`);
      const esize = h.size ?? 0;
      const dataOffset = off + BLOCK;
      if (dataOffset + esize > size) truncated(`entry "${h.path}" needs ${esize} bytes but the file ends after ${size - dataOffset}`);
      off = dataOffset + Math.ceil(esize / BLOCK) * BLOCK;
      const type = h.type;
      if (type === 'ExtendedHeader' || type === 'OldExtendedHeader' || type === 'GlobalExtendedHeader' || type === 'NextFileHasLongPath' || type === 'OldGnuLongPath') {
        if (esize > 1 << 20) throw new CheckpointError('CORRUPT', `${path}: oversized tar metadata entry at byte ${dataOffset - BLOCK}`);
        const body = Buffer.alloc(esize);
        await readFully(fh, body, dataOffset);
        const text = body.toString('utf8');
        if (type === 'GlobalExtendedHeader') gex = Pax.parse(text, gex, true);
        else if (type === 'NextFileHasLongPath' || type === 'OldGnuLongPath') ex = { ...ex, path: text.replace(/\0.*/s, '') };
        else ex = Pax.parse(text, ex, false);
        continue;
      }
      ex = undefined;
      const p = h.path ?? '';
      const unsafe = unsafePathReason(p);
      if (unsafe) throw new CheckpointError('UNSAFE_ENTRY', `${path}: refusing entry "${p}" with ${unsafe}; this archive was not written by gptcuda and may be malicious`);
      if (!REGULAR_TYPES.has(type)) throw new CheckpointError('UNEXPECTED_ENTRY', `${path}: unexpected entry "${p}" of type ${type}; a checkpoint contains only regular files`);
      const name = entryName(p);
      if (byName.has(name)) throw new CheckpointError('UNEXPECTED_ENTRY', `${path}: entry "${name}" appears more than once`);
      const e = { name, size: esize, dataOffset };
      entries.push(e);
      byName.set(name, e);
    }

    const me = byName.get(MANIFEST_NAME);
    if (!me) throw new CheckpointError('NO_MANIFEST', `${path}: not a gptcuda checkpoint: the archive has no manifest.json`);
    if (me.size > MAX_MANIFEST_BYTES) throw new CheckpointError('BAD_MANIFEST', `${path}: manifest.json is ${me.size} bytes; the archive is corrupted`);
    const mbuf = Buffer.alloc(me.size);
    await readFully(fh, mbuf, me.dataOffset);
    let raw: unknown;
    try {
      raw = JSON.parse(mbuf.toString('utf8'));
    } catch (err) {
      throw new CheckpointError('BAD_MANIFEST', `${path}: manifest.json is not valid JSON (${(err as Error).message.replace(/\s+/g, ' ')}); the archive is corrupted`);
    }
    const manifest = validateManifest(raw, path);

    for (const [file, listed] of Object.entries(manifest.tensors)) {
      const e = byName.get(file);
      if (!e) throw new CheckpointError('MISMATCH', `${path}: the manifest lists ${file} but the archive has no such entry; the archive is incomplete or corrupted`);
      const prefix = Buffer.alloc(Math.min(8, e.size));
      await readFully(fh, prefix, e.dataOffset);
      let header;
      try {
        const n = e.size >= 8 ? prefix.readBigUInt64LE(0) : 0n;
        // Let the parser produce the error for absurd or overlong lengths.
        const want = n <= BigInt(Math.min(e.size - 8, 100_000_000)) ? 8 + Number(n) : 8;
        const hb = Buffer.alloc(Math.min(want, e.size));
        await readFully(fh, hb, e.dataOffset);
        header = parseSafetensorsHeader(hb, { totalLength: e.size, source: file });
      } catch (err) {
        if (err instanceof SafetensorsError) throw new CheckpointError('CORRUPT', `${path}: ${err.message}`);
        throw err;
      }
      checkTensorSet(path, file, listed, header.tensors);
    }
    const extra = entries.filter((e) => e.name !== MANIFEST_NAME && !Object.hasOwn(manifest.tensors, e.name)).map((e) => e.name);
    if (extra.length) {
      throw new CheckpointError('UNEXPECTED_ENTRY', `${path}: unexpected entries ${extra.map((n) => `"${n}"`).join(', ')} not listed in the manifest`);
    }
    return { path, manifest, entries };
  } finally {
    await fh.close();
  }
}

/**
 * The run id in a checkpoint's manifest, read even when the rest of the
 * archive is damaged (the manifest is its first entry); undefined when the
 * manifest itself cannot be trusted (unreadable, or failing its checksum).
 */
export async function manifestRunId(path: string): Promise<unknown> {
  try {
    const fh = await open(path, 'r');
    try {
      const block = Buffer.alloc(BLOCK);
      if ((await readFully(fh, block, 0)) < BLOCK) return undefined;
      const h = new Header(block, 0);
      if (!h.cksumValid || entryName(h.path ?? '') !== MANIFEST_NAME || !h.size || h.size > MAX_MANIFEST_BYTES) return undefined;
      const body = Buffer.alloc(h.size);
      if ((await readFully(fh, body, BLOCK)) < h.size) return undefined;
      const m = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      return m[MANIFEST_CHECKSUM_KEY] === manifestChecksum(m) ? m.run_id : undefined;
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
}
