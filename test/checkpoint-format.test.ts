import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CheckpointError,
  inspectCheckpoint,
  readCheckpointArchive,
  writeCheckpointArchive,
  type CheckpointArchive,
} from '../ts/checkpoint/archive.js';
import { checkpointFileName, latestCheckpoint, listCheckpoints, pruneCheckpoints } from '../ts/checkpoint/run-files.js';
import { DiskWriteError, atomicWriteFile, atomicWriteWith, removeStaleTempFiles } from '../ts/checkpoint/atomic.js';
import {
  encodeSafetensors,
  encodeSafetensorsToBuffer,
  parseSafetensorsHeader,
  readSafetensors,
  readSafetensorsFile,
  SafetensorsStreamDecoder,
  tensorBytes,
  writeSafetensorsFile,
  type NamedTensor,
} from '../ts/checkpoint/safetensors.js';

const REPO = resolve(import.meta.dirname, '..');
let root: string;
let counter = 0;
const tmp = (name: string): string => join(root, `${counter++}-${name}`);

beforeAll(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-ckpt-test-'));
});
afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// helpers

function f32(name: string, shape: number[], fill: (i: number) => number = (i) => i * 0.5 - 3): NamedTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, dtype: 'F32', shape, data: Float32Array.from({ length: n }, (_, i) => fill(i)) };
}

function allDtypes(): NamedTensor[] {
  return [
    f32('h.0.attn.c_attn.weight', [3, 4]),
    { name: 'ids', dtype: 'I32', shape: [5], data: Int32Array.from([0, -1, 2147483647, -2147483648, 7]) },
    { name: 'half', dtype: 'F16', shape: [2, 2], data: Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001]) },
    { name: 'bhalf', dtype: 'BF16', shape: [3], data: Uint16Array.from([0x3f80, 0x4049, 0x8000]) },
    { name: 'big', dtype: 'I64', shape: [2], data: BigInt64Array.from([9007199254740993n, -5n]) },
    { name: 'scalar', dtype: 'F32', shape: [], data: Float32Array.from([42.5]) },
    { name: 'empty', dtype: 'F32', shape: [0], data: new Float32Array(0) },
    { name: 'empty2d', dtype: 'I64', shape: [3, 0], data: new BigInt64Array(0) },
    // Odd number of 2-byte elements: would misalign what follows without the encoder's ordering.
    { name: 'odd', dtype: 'F16', shape: [3], data: Uint16Array.from([1, 2, 3]) },
  ];
}

function expectSameTensors(got: Map<string, NamedTensor>, want: readonly NamedTensor[]): void {
  expect([...got.keys()].sort()).toEqual(want.map((t) => t.name).sort());
  for (const w of want) {
    const g = got.get(w.name)!;
    expect(g.dtype).toBe(w.dtype);
    expect(g.shape).toEqual(w.shape);
    expect(g.data.constructor).toBe(w.data.constructor);
    expect(Buffer.from(tensorBytes(g)).equals(Buffer.from(tensorBytes(w)))).toBe(true);
  }
}

/** Builds a safetensors file by hand from a header string and raw data (no encoder involved). */
function handSafetensors(header: string, data: Uint8Array = new Uint8Array(0), headerLenOverride?: bigint): Buffer {
  const h = Buffer.from(header, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLenOverride ?? BigInt(h.length));
  return Buffer.concat([prefix, h, data]);
}

/** A ustar header block written by hand, independent of the tar package. */
function ustarHeader(name: string, size: number, typeflag = '0', linkname = ''): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, 'utf8');
  b.write('0000644\0', 100);
  b.write('0000000\0', 108);
  b.write('0000000\0', 116);
  b.write(size.toString(8).padStart(11, '0') + '\0', 124);
  b.write('14000000000\0', 136);
  b.fill(0x20, 148, 156);
  b.write(typeflag, 156);
  b.write(linkname, 157, 100);
  b.write('ustar\0', 257);
  b.write('00', 263);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return b;
}

function handTar(entries: { name: string; body?: Uint8Array; type?: string; link?: string }[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? new Uint8Array(0));
    parts.push(ustarHeader(e.name, body.length, e.type ?? '0', e.link ?? ''), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A valid model.safetensors + manifest pair built without the archive writer, for hand-made tars. */
function handCheckpointParts(formatVersion = 1, format = 'gptcuda-checkpoint'): { manifest: Buffer; model: Buffer } {
  const t = f32('w', [4]);
  const model = encodeSafetensorsToBuffer([t]);
  const manifest = Buffer.from(
    JSON.stringify({ format, format_version: formatVersion, step: 1, tensors: { 'model.safetensors': { w: { sha256: sha(tensorBytes(t)), dtype: 'F32', shape: [4] } } } }),
  );
  return { manifest, model };
}

async function expectCheckpointError(path: string, re: RegExp, code?: string): Promise<void> {
  const err = await readCheckpointArchive(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${path} to be rejected`).toBeInstanceOf(CheckpointError);
  expect((err as Error).message).toMatch(re);
  if (code) expect((err as CheckpointError).code).toBe(code);
}

async function writeSample(path: string, extra: Record<string, unknown> = {}): Promise<{ model: NamedTensor[]; opt: NamedTensor[] }> {
  const model = [f32('wte', [8, 4]), f32('h.0.ln_1.weight', [4], () => 1), f32('h.0.attn.c_attn.bias', [12], (i) => -i)];
  const opt = [f32('m.wte', [8, 4], (i) => i / 7), f32('v.wte', [8, 4], (i) => i / 9), { name: 'step', dtype: 'I64', shape: [], data: BigInt64Array.from([100n]) } as NamedTensor];
  await writeCheckpointArchive(path, {
    manifest: { step: 100, config: { n_layer: 1 }, ...extra },
    files: [
      { name: 'model.safetensors', tensors: model, metadata: { format: 'pt' } },
      { name: 'optimizer.safetensors', tensors: opt },
    ],
  });
  return { model, opt };
}

// ---------------------------------------------------------------------------
// safetensors

describe('safetensors', () => {
  it('round-trips every dtype, empty tensors and scalars (in memory, from file, streamed)', async () => {
    const ts = allDtypes();
    const meta = { format: 'pt', note: 'héllo' };
    const bytes = encodeSafetensorsToBuffer(ts, meta);
    const mem = readSafetensors(bytes);
    expect(mem.metadata).toEqual(meta);
    expectSameTensors(mem.tensors, ts);

    const p = tmp('all.safetensors');
    await writeSafetensorsFile(p, ts, meta);
    expect(fs.readFileSync(p).equals(bytes)).toBe(true);
    const file = await readSafetensorsFile(p);
    expect(file.metadata).toEqual(meta);
    expectSameTensors(file.tensors, ts);

    for (const step of [1, 7, 64, bytes.length]) {
      const dec = new SafetensorsStreamDecoder(bytes.length, 'stream', { sha256: true });
      for (let i = 0; i < bytes.length; i += step) dec.write(bytes.subarray(i, i + step));
      const out = dec.end();
      expectSameTensors(out.tensors, ts);
      expect(out.sha256!.get('ids')).toBe(sha(tensorBytes(ts[1]!)));
    }
  });

  it('lays data out aligned so that reads are zero-copy views', () => {
    const bytes = encodeSafetensorsToBuffer(allDtypes());
    const h = parseSafetensorsHeader(bytes);
    expect(h.dataStart % 8).toBe(0);
    expect(h.headerLength % 8).toBe(0);
    for (const t of readSafetensors(bytes).tensors.values()) {
      if (t.data.byteLength > 0) expect(t.data.buffer).toBe(bytes.buffer);
    }
  });

  it('encodes exactly the bytes the spec (and the reference implementation) prescribe', () => {
    const enc = encodeSafetensors([{ name: 'x', dtype: 'F32', shape: [2], data: Float32Array.from([1, -2]) }]);
    const json = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'; // 54 bytes -> padded to 56
    const expected = Buffer.concat([
      Buffer.from([56, 0, 0, 0, 0, 0, 0, 0]),
      Buffer.from(json + '  ', 'ascii'),
      Buffer.from([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]),
    ]);
    expect(Buffer.concat(enc.chunks).equals(expected)).toBe(true);
    expect(enc.byteLength).toBe(expected.length);
    // The encoder hands out views of the caller's data, not copies.
    expect(enc.chunks.length).toBe(2);
  });

  it('decodes hand-written byte fixtures, including unaligned data and __metadata__', () => {
    const data = Buffer.alloc(8 + 8 + 4);
    data.writeFloatLE(1.5, 0);
    data.writeFloatLE(-0.25, 4);
    data.writeBigInt64LE(-3n, 8);
    data.writeUInt16LE(0x3c00, 16); // f16 1.0
    data.writeUInt16LE(0x4000, 18); // bf16 2.0
    // Header length 150-ish and not a multiple of 8: the F32 data is unaligned and must be copied.
    const json =
      '{"__metadata__":{"format":"pt"},"transformer.h.0.attn.c_attn.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},' +
      '"n":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"h":{"dtype":"F16","shape":[1],"data_offsets":[16,18]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[18,20]}}';
    const header = (8 + json.length) % 4 === 0 ? json + ' ' : json;
    expect((8 + Buffer.byteLength(header)) % 4).not.toBe(0);
    const file = handSafetensors(header, data);
    const out = readSafetensors(file);
    expect(out.metadata).toEqual({ format: 'pt' });
    const w = out.tensors.get('transformer.h.0.attn.c_attn.weight')!;
    expect(w.dtype).toBe('F32');
    expect(w.shape).toEqual([1, 2]);
    expect([...(w.data as Float32Array)]).toEqual([1.5, -0.25]);
    expect(out.tensors.get('n')!.data).toEqual(BigInt64Array.from([-3n]));
    expect(out.tensors.get('n')!.shape).toEqual([]);
    expect([...(out.tensors.get('h')!.data as Uint16Array)]).toEqual([0x3c00]);
    expect([...(out.tensors.get('b')!.data as Uint16Array)]).toEqual([0x4000]);

    // Header padded with trailing spaces, empty tensor at the end, no tensors at all.
    const padded = handSafetensors('{"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]}}      ');
    expect(readSafetensors(padded).tensors.get('e')!.shape).toEqual([0, 5]);
    expect(readSafetensors(handSafetensors('{}')).tensors.size).toBe(0);
    expect(readSafetensors(handSafetensors('{"__metadata__":null}')).metadata).toBeUndefined();
  });

  const T = (dtype: string, shape: number[], off: [number, number]): string => JSON.stringify({ dtype, shape, data_offsets: off });
  const malformed: [string, Buffer, RegExp][] = [
    ['too short', Buffer.from([1, 2, 3]), /only 3 bytes, too short to be a safetensors file/],
    ['absurd header length', handSafetensors('{}', undefined, 200_000_000n), /more than the 100000000-byte limit/],
    ['header longer than the file', handSafetensors('{}', undefined, 5000n), /header claims 5000 bytes but only 2 bytes follow/],
    ['invalid JSON', handSafetensors('{"a": {'), /header is not valid JSON/],
    ['invalid UTF-8', handSafetensors('{}').fill(0xff, 8, 9), /not valid UTF-8/],
    ['non-object header', handSafetensors('[1,2]'), /header must be a JSON object/],
    ['unknown dtype', handSafetensors(`{"a":${T('Q7', [1], [0, 4])}}`, Buffer.alloc(4)), /tensor "a" has unknown dtype "Q7"/],
    ['unsupported spec dtype', handSafetensors(`{"a":${T('F64', [1], [0, 8])}}`, Buffer.alloc(8)), /tensor "a" has dtype F64, which gptcuda cannot load/],
    ['shape × dtype ≠ byte range', handSafetensors(`{"a":${T('F32', [2, 3], [0, 20])}}`, Buffer.alloc(20)), /shape \[2, 3\] × F32 needs 24 bytes but data_offsets \[0, 20\] span 20/],
    ['negative dim', handSafetensors(`{"a":${T('F32', [-1], [0, 0])}}`), /shape must be an array of non-negative integers/],
    ['offsets out of range', handSafetensors(`{"a":${T('F32', [4], [0, 16])}}`, Buffer.alloc(8)), /out of range; the data section has only 8 bytes/],
    ['offsets reversed', handSafetensors(`{"a":${T('F32', [0], [8, 4])}}`, Buffer.alloc(8)), /end before they begin/],
    ['overlapping', handSafetensors(`{"a":${T('F32', [2], [0, 8])},"b":${T('F32', [2], [4, 12])}}`, Buffer.alloc(12)), /tensors "a" and "b" overlap/],
    ['gap', handSafetensors(`{"a":${T('F32', [1], [0, 4])},"b":${T('F32', [1], [8, 12])}}`, Buffer.alloc(12)), /4 unused bytes at offset 4 .*after tensor "a"/],
    ['trailing bytes', handSafetensors(`{"a":${T('F32', [1], [0, 4])}}`, Buffer.alloc(10)), /has 10 bytes but the tensors cover only 4; 6 trailing bytes/],
    ['duplicate names', handSafetensors(`{"a":${T('F32', [1], [0, 4])},"a":${T('F32', [1], [4, 8])}}`, Buffer.alloc(8)), /header lists "a" more than once/],
    ['bad metadata', handSafetensors('{"__metadata__":{"k":1}}'), /"__metadata__" values must be strings, but "k" is 1/],
    ['bad offsets type', handSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, Buffer.alloc(4)), /data_offsets must be \[begin, end\]/],
  ];
  for (const [what, bytes, re] of malformed) {
    it(`rejects a malformed file: ${what}`, async () => {
      expect(() => readSafetensors(bytes, 'bad.safetensors')).toThrow(re);
      const p = tmp('bad.safetensors');
      fs.writeFileSync(p, bytes);
      await expect(readSafetensorsFile(p)).rejects.toThrow(re);
      expect(() => {
        const dec = new SafetensorsStreamDecoder(bytes.length, 'bad.safetensors');
        dec.write(bytes);
        dec.end();
      }).toThrow(re);
    });
  }

  it('rejects bad tensors at encode time', () => {
    expect(() => encodeSafetensors([f32('a', [2]), f32('a', [2])])).toThrow(/duplicate tensor name "a"/);
    expect(() => encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [3], data: new Float32Array(2) }])).toThrow(/needs 12 bytes but its data has 8/);
    expect(() => encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [2], data: new Int32Array(2) }])).toThrow(/dtype F32 needs a Float32Array .* got Int32Array/);
    expect(() => encodeSafetensors([f32('__metadata__', [1])])).toThrow(/reserved/);
    expect(() => encodeSafetensors([{ name: 'a', dtype: 'F64' as 'F32', shape: [1], data: new Float32Array(1) }])).toThrow(/unsupported dtype "F64"/);
    // Raw bytes are accepted for any dtype.
    const raw = encodeSafetensorsToBuffer([{ name: 'a', dtype: 'BF16', shape: [2], data: Uint8Array.from([0x80, 0x3f, 0, 0x40]) }]);
    expect([...(readSafetensors(raw).tensors.get('a')!.data as Uint16Array)]).toEqual([0x3f80, 0x4000]);
  });
});

// ---------------------------------------------------------------------------
// archive

describe('checkpoint archive', () => {
  let good: string;
  let sample: { model: NamedTensor[]; opt: NamedTensor[] };
  let goodBytes: Buffer;

  beforeAll(async () => {
    good = tmp('ckpt-step00000100.tar');
    sample = await writeSample(good);
    goodBytes = fs.readFileSync(good);
  });

  it('round-trips manifest, tensors and metadata', async () => {
    const ck = await readCheckpointArchive(good);
    expect(ck.manifest.format).toBe('gptcuda-checkpoint');
    expect(ck.manifest.format_version).toBe(1);
    expect(ck.manifest.step).toBe(100);
    expect(ck.manifest.config).toEqual({ n_layer: 1 });
    expect(ck.manifest.tensors['model.safetensors']!['wte']).toEqual({ sha256: sha(tensorBytes(sample.model[0]!)), dtype: 'F32', shape: [8, 4] });
    expectSameTensors(ck.files.get('model.safetensors')!, sample.model);
    expectSameTensors(ck.files.get('optimizer.safetensors')!, sample.opt);
    expect(ck.metadata.get('model.safetensors')).toEqual({ format: 'pt' });
    expect(ck.warnings).toEqual([]);
    const quick = await inspectCheckpoint(good);
    expect(quick.entries.map((e) => e.name)).toEqual(['manifest.json', 'model.safetensors', 'optimizer.safetensors']);
    // Nothing but the target is left in the directory.
    expect(fs.readdirSync(root).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('is a real tar: the system tar lists and extracts it, and reads what it repacks', async () => {
    expect(execFileSync('tar', ['-tf', good], { encoding: 'utf8' }).trim().split('\n')).toEqual(['manifest.json', 'model.safetensors', 'optimizer.safetensors']);
    const manifest = JSON.parse(execFileSync('tar', ['-xOf', good, 'manifest.json'], { encoding: 'utf8' }));
    expect(manifest).toEqual((await readCheckpointArchive(good)).manifest);
    // The extracted model.safetensors is a standalone, valid safetensors file.
    const dir = tmp('extract');
    fs.mkdirSync(dir);
    execFileSync('tar', ['-xf', good, '-C', dir]);
    expectSameTensors((await readSafetensorsFile(join(dir, 'model.safetensors'))).tensors, sample.model);
    // And a GNU-tar repack (different padding, record size, header details) still loads.
    const repacked = tmp('repacked.tar');
    execFileSync('tar', ['-cf', repacked, '-C', dir, 'manifest.json', 'optimizer.safetensors', 'model.safetensors']);
    const ck = await readCheckpointArchive(repacked);
    expectSameTensors(ck.files.get('optimizer.safetensors')!, sample.opt);
    await inspectCheckpoint(repacked);
  });

  it('rejects truncated archives wherever they are cut', async () => {
    const q = await inspectCheckpoint(good);
    const model = q.entries.find((e) => e.name === 'model.safetensors')!;
    const cuts: [string, number][] = [
      ['inside the first header', 100],
      ['inside the manifest data', 600],
      ['inside the model header', model.dataOffset - 200],
      ['at an entry boundary', model.dataOffset - 512],
      ['inside the safetensors header', model.dataOffset + 20],
      ['inside tensor data', model.dataOffset + model.size - 10],
      ['inside the end-of-archive marker', goodBytes.length - 512],
      ['before the end-of-archive marker', goodBytes.length - 1024],
    ];
    for (const [what, at] of cuts) {
      const p = tmp('cut.tar');
      fs.writeFileSync(p, goodBytes.subarray(0, at));
      try {
        await expectCheckpointError(p, /checkpoint archive is truncated/, 'TRUNCATED');
        await expect(inspectCheckpoint(p), what).rejects.toThrow(/truncated/);
      } catch (err) {
        throw new Error(`cut ${what} (at ${at}): ${(err as Error).message}`);
      }
    }
  });

  it('names the tensor whose data was flipped', async () => {
    const q = await inspectCheckpoint(good);
    const e = q.entries.find((x) => x.name === 'optimizer.safetensors')!;
    const h = parseSafetensorsHeader(goodBytes.subarray(e.dataOffset, e.dataOffset + e.size));
    const v = h.tensors.find((t) => t.name === 'v.wte')!;
    const bad = Buffer.from(goodBytes);
    bad[e.dataOffset + h.dataStart + v.dataOffsets[0] + 5]! ^= 0x01;
    const p = tmp('flipped.tar');
    fs.writeFileSync(p, bad);
    await expectCheckpointError(p, /tensor "v\.wte" in optimizer\.safetensors is corrupted \(sha256 mismatch\)/, 'CHECKSUM');
    // The quick check does not hash data, so it still accepts the file.
    await inspectCheckpoint(p);
  });

  it('rejects a damaged tar header, and ignores padding after the end marker', async () => {
    const q = await inspectCheckpoint(good);
    const model = q.entries.find((e) => e.name === 'model.safetensors')!;
    const bad = Buffer.from(goodBytes);
    bad[model.dataOffset - 512 + 3]! ^= 0x20; // inside the entry's name: header checksum no longer matches
    const p = tmp('badheader.tar');
    fs.writeFileSync(p, bad);
    await expectCheckpointError(p, /corrupted tar header after entry "manifest\.json"/, 'CORRUPT');
    await expect(inspectCheckpoint(p)).rejects.toThrow(/corrupted tar header at byte \d+ \(checksum failure\)/);

    const padded = tmp('padded.tar');
    fs.writeFileSync(padded, Buffer.concat([goodBytes, Buffer.alloc(10240 * 3)]));
    expectSameTensors((await readCheckpointArchive(padded)).files.get('model.safetensors')!, sample.model);
  });

  it('rejects a file that is not a tar archive', async () => {
    const text = tmp('notes.txt');
    fs.writeFileSync(text, 'these are my notes, not a checkpoint\n'.repeat(40));
    await expectCheckpointError(text, /not a gptcuda checkpoint \(not a tar archive\)/, 'NOT_TAR');
    const empty = tmp('empty.tar');
    fs.writeFileSync(empty, '');
    await expectCheckpointError(empty, /not a gptcuda checkpoint \(not a tar archive\): the file is empty/);
    const gz = tmp('gz.tar');
    fs.writeFileSync(gz, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(600)]));
    await expectCheckpointError(gz, /gzip-compressed/);
    await expect(inspectCheckpoint(text)).rejects.toThrow(/not a tar archive/);
  });

  it('rejects unknown formats and versions newer than supported', async () => {
    const v2 = handCheckpointParts(2);
    const p = tmp('v2.tar');
    fs.writeFileSync(p, handTar([{ name: 'manifest.json', body: v2.manifest }, { name: 'weights.bin', body: Buffer.from('future') }]));
    await expectCheckpointError(p, /checkpoint format version 2 is newer than this gptcuda supports \(version 1\).*upgrade gptcuda/, 'NEWER_VERSION');
    await expect(inspectCheckpoint(p)).rejects.toThrow(/format version 2 is newer/);

    const other = handCheckpointParts(1, 'someone-else');
    const q = tmp('other.tar');
    fs.writeFileSync(q, handTar([{ name: 'manifest.json', body: other.manifest }, { name: 'model.safetensors', body: other.model }]));
    await expectCheckpointError(q, /not a gptcuda checkpoint \(manifest format is "someone-else"/);

    const ok = handCheckpointParts();
    const r = tmp('nomanifest.tar');
    fs.writeFileSync(r, handTar([{ name: 'model.safetensors', body: ok.model }]));
    await expectCheckpointError(r, /has no manifest\.json/, 'NO_MANIFEST');
  });

  it('accepts a correct hand-built tar, proving the reader does not depend on our writer', async () => {
    const ok = handCheckpointParts();
    const p = tmp('hand.tar');
    fs.writeFileSync(p, handTar([{ name: 'manifest.json', body: ok.manifest }, { name: './model.safetensors', body: ok.model }]));
    const ck = await readCheckpointArchive(p);
    expect([...(ck.files.get('model.safetensors')!.get('w')!.data as Float32Array)]).toEqual([-3, -2.5, -2, -1.5]);
  });

  it('refuses path traversal, absolute paths, links and duplicates', async () => {
    const ok = handCheckpointParts();
    const base = [{ name: 'manifest.json', body: ok.manifest }, { name: 'model.safetensors', body: ok.model }];
    const cases: [string, Buffer, RegExp, string][] = [
      ['dotdot', handTar([...base, { name: '../evil', body: Buffer.from('x') }]), /refusing entry "\.\.\/evil" with a "\.\." path component/, 'UNSAFE_ENTRY'],
      ['nested dotdot', handTar([{ name: 'a/../../evil', body: Buffer.from('x') }, ...base]), /refusing entry "a\/\.\.\/\.\.\/evil"/, 'UNSAFE_ENTRY'],
      ['absolute', handTar([...base, { name: '/abs/evil', body: Buffer.from('x') }]), /refusing entry "\/abs\/evil" with an absolute path/, 'UNSAFE_ENTRY'],
      ['symlink', handTar([...base, { name: 'link.safetensors', type: '2', link: '/etc/passwd' }]), /unexpected entry "link\.safetensors" of type SymbolicLink/, 'UNEXPECTED_ENTRY'],
      ['directory', handTar([{ name: 'sub/', type: '5' }, ...base]), /unexpected entry "sub\/" of type Directory/, 'UNEXPECTED_ENTRY'],
      ['duplicate', handTar([...base, { name: 'model.safetensors', body: ok.model }]), /entry "model\.safetensors" appears more than once/, 'UNEXPECTED_ENTRY'],
      ['unlisted file', handTar([...base, { name: 'extra.safetensors', body: ok.model }]), /unexpected entry "extra\.safetensors" not listed in the manifest/, 'UNEXPECTED_ENTRY'],
      // A name that is an Object.prototype property is still not listed.
      ['unlisted toString', handTar([...base, { name: 'toString', body: Buffer.from('x') }]), /unexpected entry "toString" not listed in the manifest/, 'UNEXPECTED_ENTRY'],
      ['missing file', handTar([base[0]!]), /the manifest lists model\.safetensors but the archive has no such entry/, 'MISMATCH'],
    ];
    for (const [what, bytes, re, code] of cases) {
      const p = tmp(`${what}.tar`);
      fs.writeFileSync(p, bytes);
      await expectCheckpointError(p, re, code);
      await expect(inspectCheckpoint(p), what).rejects.toThrow(code === 'MISMATCH' ? /no such entry/ : /./);
    }
    // Nothing was written outside the test directory.
    expect(fs.existsSync(join(root, '..', 'evil'))).toBe(false);
  });

  it('refuses an absolute path in a tar made by the system tar with -P', async () => {
    const dir = tmp('abs');
    fs.mkdirSync(dir);
    const ok = handCheckpointParts();
    fs.writeFileSync(join(dir, 'manifest.json'), ok.manifest);
    fs.writeFileSync(join(dir, 'model.safetensors'), ok.model);
    const p = tmp('abs.tar');
    execFileSync('tar', ['-cPf', p, join(dir, 'manifest.json'), join(dir, 'model.safetensors')]);
    await expectCheckpointError(p, /with an absolute path/, 'UNSAFE_ENTRY');
  });

  it('detects tensors missing from, or added to, a file relative to the manifest', async () => {
    const t = f32('w', [4]);
    const u = f32('u', [2]);
    const one = encodeSafetensorsToBuffer([t]);
    const two = encodeSafetensorsToBuffer([t, u]);
    const entry = (x: NamedTensor) => ({ sha256: sha(tensorBytes(x)), dtype: x.dtype, shape: x.shape });
    const m = (tensors: Record<string, unknown>) => Buffer.from(JSON.stringify({ format: 'gptcuda-checkpoint', format_version: 1, tensors: { 'model.safetensors': tensors } }));
    const absent = tmp('absent.tar');
    fs.writeFileSync(absent, handTar([{ name: 'manifest.json', body: m({ w: entry(t), u: entry(u) }) }, { name: 'model.safetensors', body: one }]));
    await expectCheckpointError(absent, /model\.safetensors is missing tensor "u" listed in the manifest/, 'MISMATCH');
    const added = tmp('added.tar');
    fs.writeFileSync(added, handTar([{ name: 'manifest.json', body: m({ w: entry(t) }) }, { name: 'model.safetensors', body: two }]));
    await expectCheckpointError(added, /tensor "u" in model\.safetensors is not listed in the manifest/, 'MISMATCH');
  });

  it('rejects a safetensors entry whose header claims more bytes than exist', async () => {
    const ok = handCheckpointParts();
    const lying = Buffer.from(ok.model);
    lying.writeBigUInt64LE(BigInt(ok.model.length * 4), 0);
    const p = tmp('lying.tar');
    fs.writeFileSync(p, handTar([{ name: 'manifest.json', body: ok.manifest }, { name: 'model.safetensors', body: lying }]));
    await expectCheckpointError(p, /model\.safetensors: header claims \d+ bytes but only \d+ bytes follow the length field/, 'CORRUPT');
    await expect(inspectCheckpoint(p)).rejects.toThrow(/header claims \d+ bytes/);
  });

  it('finds NaN/Inf in float tensors: error by default, warnings on request', async () => {
    const p = tmp('nan.tar');
    const w = f32('wte', [4, 4]);
    (w.data as Float32Array)[5] = NaN;
    (w.data as Float32Array)[9] = -Infinity;
    const h = { name: 'h', dtype: 'BF16', shape: [2], data: Uint16Array.from([0x3f80, 0x7f80]) } as NamedTensor;
    await writeCheckpointArchive(p, { manifest: {}, files: [{ name: 'model.safetensors', tensors: [w, h] }] });
    await expectCheckpointError(p, /tensor "(wte|h)" in model\.safetensors has \d+ non-finite values? \(NaN\/Inf\)/, 'NON_FINITE');
    const ck: CheckpointArchive = await readCheckpointArchive(p, { nonFinite: 'warn' });
    expect(ck.warnings).toHaveLength(2);
    expect(ck.warnings.join('\n')).toMatch(/tensor "wte" in model\.safetensors has 2 non-finite values \(NaN\/Inf\), first at flat index 5/);
    expect(ck.warnings.join('\n')).toMatch(/tensor "h" in model\.safetensors has 1 non-finite value \(NaN\/Inf\), first at flat index 1/);
    expect(Number.isNaN((ck.files.get('model.safetensors')!.get('wte')!.data as Float32Array)[5])).toBe(true);
  });

  it('validates writer input', async () => {
    const p = tmp('bad-input.tar');
    await expect(writeCheckpointArchive(p, { manifest: {}, files: [{ name: '../x.safetensors', tensors: [] }] })).rejects.toThrow(/file name "..\/x.safetensors" is invalid/);
    await expect(writeCheckpointArchive(p, { manifest: {}, files: [{ name: 'a.safetensors', tensors: [] }, { name: 'a.safetensors', tensors: [] }] })).rejects.toThrow(/given twice/);
    await expect(writeCheckpointArchive(p, { manifest: { n: 1n }, files: [] })).rejects.toThrow(/not JSON-serializable/);
    expect(fs.existsSync(p)).toBe(false);
    expect(fs.readdirSync(root).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// run directories

describe('run directory', () => {
  it('names, lists, finds the latest usable, and prunes checkpoints', async () => {
    expect(checkpointFileName(1234)).toBe('ckpt-step00001234.tar');
    expect(checkpointFileName(123456789)).toBe('ckpt-step123456789.tar');
    expect(() => checkpointFileName(-1)).toThrow(RangeError);

    const dir = tmp('run');
    expect(await listCheckpoints(dir)).toEqual([]);
    expect(await latestCheckpoint(dir)).toBeNull();
    fs.mkdirSync(dir);
    for (const step of [10, 2, 100000000, 30]) {
      await writeCheckpointArchive(join(dir, checkpointFileName(step)), { manifest: { step }, files: [{ name: 'model.safetensors', tensors: [f32('w', [2])] }] });
    }
    fs.writeFileSync(join(dir, 'ckpt-step1.tar'), 'not matching the naming scheme');
    fs.writeFileSync(join(dir, 'notes.txt'), '');
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([2, 10, 30, 100000000]);

    // Damage the newest: the previous one is returned, with a warning.
    const newest = join(dir, checkpointFileName(100000000));
    fs.truncateSync(newest, fs.statSync(newest).size - 700);
    const warnings: string[] = [];
    const latest = await latestCheckpoint(dir, { onWarning: (m) => warnings.push(m) });
    expect(latest!.step).toBe(30);
    expect(latest!.manifest.step).toBe(30);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/skipping damaged checkpoint ckpt-step100000000\.tar: .*truncated/);
    expect(latest!.warnings).toEqual(warnings);

    // keep=1 counts intact ones only: the newest usable stays, the damaged newest goes.
    const removed = await pruneCheckpoints(dir, 1);
    expect(removed.map((p) => p.split('/').pop()).sort()).toEqual([checkpointFileName(2), checkpointFileName(10), checkpointFileName(100000000)]);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([30]);
    await expect(pruneCheckpoints(dir, 0)).rejects.toThrow(RangeError);

    // All damaged: refuse rather than silently starting over.
    fs.writeFileSync(join(dir, checkpointFileName(30)), 'garbage');
    fs.writeFileSync(join(dir, checkpointFileName(40)), 'garbage');
    await expect(latestCheckpoint(dir, { onWarning: () => undefined })).rejects.toThrow(/none of the 2 checkpoints is usable/);

    // A newer format must not be skipped in favour of older progress.
    const v2 = handCheckpointParts(2);
    fs.writeFileSync(join(dir, checkpointFileName(200000000)), handTar([{ name: 'manifest.json', body: v2.manifest }]));
    await expect(latestCheckpoint(dir)).rejects.toThrow(/newer than this gptcuda supports/);
  });

  it('prunes down to the newest N when all are good', async () => {
    const dir = tmp('run2');
    fs.mkdirSync(dir);
    for (const step of [1, 2, 3, 4]) await writeCheckpointArchive(join(dir, checkpointFileName(step)), { manifest: { step }, files: [] });
    await pruneCheckpoints(dir, 2);
    expect((await listCheckpoints(dir)).map((c) => c.step)).toEqual([3, 4]);
    expect((await latestCheckpoint(dir))!.step).toBe(4);
  });
});

describe('atomic writes', () => {
  it('replaces a file, and leaves it untouched when the writer fails', async () => {
    const p = tmp('config.json');
    await atomicWriteFile(p, '{"a":1}');
    expect(fs.readFileSync(p, 'utf8')).toBe('{"a":1}');
    await atomicWriteFile(p, [Buffer.from('ab'), Buffer.alloc(300 << 10, 0x63), Buffer.from('d')]);
    expect(fs.statSync(p).size).toBe(2 + (300 << 10) + 1);
    await atomicWriteFile(p, '{"a":2}');
    await expect(
      atomicWriteWith(p, async (fh) => {
        await fh.write('{"a":3, partial');
        throw new Error('disk on fire');
      }),
    ).rejects.toThrow('disk on fire');
    expect(fs.readFileSync(p, 'utf8')).toBe('{"a":2}');
    expect(fs.readdirSync(root).filter((n) => n.includes('.tmp-'))).toEqual([]);
    await expect(atomicWriteFile(join(root, 'no-such-dir', 'x.json'), '{}')).rejects.toThrow(/directory .*no-such-dir does not exist/);
  });
});

// ---------------------------------------------------------------------------
// crash safety

describe('crash safety', () => {
  let compiled: string;

  beforeAll(() => {
    // The child runs plain Node (no TypeScript loader), so compile the three
    // modules; a node_modules link lets the output resolve `tar`.
    compiled = tmp('compiled');
    const r = spawnSync(
      process.execPath,
      [join(REPO, 'node_modules/typescript/bin/tsc'), '--ignoreConfig', '--outDir', compiled, '--rootDir', 'ts', '--module', 'nodenext', '--moduleResolution', 'nodenext',
        '--target', 'es2022', '--skipLibCheck', '--types', 'node', '--strict', 'ts/checkpoint/archive.ts'],
      { cwd: REPO, encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`tsc failed: ${r.stdout}${r.stderr}`);
    fs.symlinkSync(join(REPO, 'node_modules'), join(compiled, 'node_modules'));
  });

  it('a full or read-only disk is one line naming the file (and the bytes it needs); the old file stays, no temp is left', async () => {
    const dir = tmp('disk-refuses');
    fs.mkdirSync(dir);
    const p = join(dir, 'state.json');
    await atomicWriteFile(p, 'old');
    for (const [code, re] of [
      ['ENOSPC', new RegExp(`^cannot write ${p}: no space left on the device \\(ENOSPC\\); the file needs 4096 bytes free in ${dir}; `)],
      ['EDQUOT', /disk quota is exceeded \(EDQUOT\); the file needs 4096 bytes/],
      ['EROFS', new RegExp(`^cannot write ${p}: the directory ${dir} is on a read-only filesystem \\(EROFS\\)`)],
    ] as const) {
      const err = await atomicWriteWith(p, async (fh) => {
        await fh.write('part');
        throw Object.assign(new Error(`${code}: refused, write`), { code });
      }, { size: 4096 }).then(() => undefined, (e: unknown) => e);
      expect(err, code).toBeInstanceOf(DiskWriteError);
      expect((err as Error).message).toMatch(re);
      expect((err as Error).message).not.toContain('\n');
      expect(fs.readFileSync(p, 'utf8')).toBe('old');
      expect(fs.readdirSync(dir)).toEqual(['state.json']);
    }
    // Any other error passes through unchanged.
    await expect(atomicWriteWith(p, async () => { throw Object.assign(new Error('EIO: bad sector'), { code: 'EIO' }); })).rejects.toThrow(/^EIO: bad sector$/);
  });

  it('SIGKILL while overwriting a checkpoint leaves the previous one intact', async () => {
    const dir = tmp('crash');
    fs.mkdirSync(dir);
    const target = join(dir, checkpointFileName(500));
    const prev = await writeSample(target);
    const before = fs.readFileSync(target);
    const targetName = checkpointFileName(500);
    const archiveJs = join(compiled, 'checkpoint/archive.js');
    const child = (): Promise<{ killedMidWrite: boolean; tempSize: number }> =>
      new Promise((resolveRun, reject) => {
        const cp = spawn(process.execPath, [join(REPO, 'test/helpers/write-checkpoint-child.mjs'), archiveJs, target, '200'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        cp.stderr.on('data', (c) => (stderr += c));
        let killed = false;
        let tempSize = 0;
        cp.on('exit', () => {
          // If the child finished on its own (renamed before we caught it),
          // this attempt proves nothing; the caller retries.
          if (!killed && stderr) reject(new Error(stderr));
          else resolveRun({ killedMidWrite: killed, tempSize });
        });
        const ino = fs.statSync(target).ino;
        cp.stdout.once('data', () => {
          // Busy-poll synchronously: the write of 200 MB may take only a few
          // hundred ms, too short for timer-based polling to be reliable.
          const deadline = Date.now() + 30_000;
          while (Date.now() < deadline && cp.exitCode === null) {
            const temp = fs.readdirSync(dir).find((n) => n.startsWith(`.${targetName}.tmp-`));
            if (temp) {
              let size = 0;
              try {
                size = fs.statSync(join(dir, temp)).size;
              } catch {
                continue;
              }
              if (size > 20 << 20) {
                cp.kill('SIGKILL');
                killed = true;
                tempSize = size;
                return;
              }
            }
            if (fs.statSync(target).ino !== ino) return; // the child finished first: lost the race
          }
        });
      });

    let result = { killedMidWrite: false, tempSize: 0 };
    for (let attempt = 0; attempt < 3 && !result.killedMidWrite; attempt++) {
      if (attempt > 0) {
        // A previous attempt completed: restore the original and try again.
        fs.writeFileSync(target, before);
      }
      result = await child();
    }
    expect(result.killedMidWrite).toBe(true);
    expect(result.tempSize).toBeLessThan(200 << 20);

    // The target is byte-for-byte the previous checkpoint and loads fine.
    expect(fs.readFileSync(target).equals(before)).toBe(true);
    const ck = await readCheckpointArchive(target);
    expect(ck.manifest.step).toBe(100);
    expectSameTensors(ck.files.get('model.safetensors')!, prev.model);
    expect((await latestCheckpoint(dir))!.step).toBe(500);

    // Only the dead writer's temp file is left, and the stale-file sweep removes it.
    const leftovers = fs.readdirSync(dir).filter((n) => n !== targetName);
    expect(leftovers).toHaveLength(1);
    expect(leftovers[0]).toMatch(new RegExp(`^\\.${targetName.replace(/\./g, '\\.')}\\.tmp-\\d+-[0-9a-f]+$`));
    expect(await removeStaleTempFiles(dir, { minAgeMs: 0 })).toEqual([join(dir, leftovers[0]!)]);
    expect(fs.readdirSync(dir)).toEqual([targetName]);
  });
});
