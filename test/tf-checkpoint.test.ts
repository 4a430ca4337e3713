import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32c, crc32cUpdate, maskCrc, unmaskCrc } from '../ts/weights/crc32c.js';
import { SnappyError, snappyDecompress, snappyUncompressedLength } from '../ts/weights/snappy.js';
import { openTfCheckpoint, TfCheckpointError, type TfCheckpoint } from '../ts/weights/tf-checkpoint.js';
import { gpt2ParamCount } from '../ts/weights/openai-models.js';

const FIX = fileURLToPath(new URL('./fixtures/tf/', import.meta.url));
const TOY = path.join(FIX, 'keras-gpt2-toy');
const OPENAI_124M = path.join(FIX, 'openai-gpt2-124M-index');

let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(tmpdir(), 'gptcuda-tfckpt-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Copies the toy checkpoint into a fresh folder (named `name`) so a test can damage it. */
async function toyCopy(name: string): Promise<string> {
  const dir = path.join(tmp, name);
  await fsp.mkdir(dir, { recursive: true });
  for (const f of ['checkpoint', 'model.ckpt.index', 'model.ckpt.data-00000-of-00001']) {
    await fsp.copyFile(path.join(TOY, f), path.join(dir, f));
  }
  return dir;
}

async function flipByte(file: string, at: number): Promise<void> {
  const buf = await fsp.readFile(file);
  buf[at]! ^= 0x5a;
  await fsp.writeFile(file, buf);
}

async function withCkpt<T>(dir: string, fn: (c: TfCheckpoint) => Promise<T>): Promise<T> {
  const c = await openTfCheckpoint(dir);
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

// ---------------------------------------------------------------------------

describe('crc32c', () => {
  it('matches known vectors', () => {
    expect(crc32c('123456789')).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    // RFC 3720 (iSCSI) appendix B.4
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('gives the same result whole, chunked and at any alignment', () => {
    const POLY = 0x82f63b78;
    const bitwise = (d: Uint8Array): number => {
      let c = ~0 >>> 0;
      for (const x of d) {
        c ^= x;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
      }
      return ~c >>> 0;
    };
    const data = Uint8Array.from({ length: 5000 }, (_, i) => (i * 2654435761) >>> 23);
    for (const n of [0, 1, 7, 15, 16, 17, 63, 64, 65, 200, 1000, 4993]) {
      for (let off = 0; off < 4; off++) {
        const v = data.subarray(off, off + n);
        expect(crc32c(v)).toBe(bitwise(v));
      }
    }
    let c = 0;
    for (let o = 0; o < data.length; o += 333) c = crc32cUpdate(c, data, o, Math.min(data.length, o + 333));
    expect(c).toBe(crc32c(data));
  });

  it('masks and unmasks like LevelDB', () => {
    for (const v of [0, 1, 0xe3069283, 0xffffffff, 0x12345678]) {
      expect(unmaskCrc(maskCrc(v))).toBe(v);
      expect(maskCrc(v)).not.toBe(v);
    }
    // The index of the serving fixture stores this masked CRC for the float 0.5.
    expect(maskCrc(crc32c(new Uint8Array(new Float32Array([0.5]).buffer)))).toBe(522663942);
  });
});

// ---------------------------------------------------------------------------

/** A tiny greedy Snappy compressor, used to round-trip the decompressor on varied inputs. */
function snappyCompress(input: Uint8Array): Uint8Array {
  const out: number[] = [];
  let n = input.length;
  do {
    out.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  const literal = (from: number, to: number) => {
    for (let s = from; s < to; ) {
      const len = Math.min(to - s, 300);
      if (len <= 60) out.push((len - 1) << 2);
      else if (len <= 256) out.push(60 << 2, len - 1);
      else out.push(61 << 2, (len - 1) & 0xff, (len - 1) >> 8);
      for (let k = 0; k < len; k++) out.push(input[s + k]!);
      s += len;
    }
  };
  let i = 0;
  let litStart = 0;
  let which = 0;
  while (i < input.length) {
    let bestLen = 0;
    let bestOff = 0;
    for (let off = 1; off <= Math.min(i, 2048); off++) {
      let l = 0;
      while (l < 64 && i + l < input.length && input[i + l] === input[i + l - off]) l++;
      if (l > bestLen) {
        bestLen = l;
        bestOff = off;
      }
    }
    if (bestLen < 4) {
      i++;
      continue;
    }
    literal(litStart, i);
    // Rotate through the three copy encodings so all get exercised.
    const kind = bestLen <= 11 && bestOff < 2048 ? [1, 2, 3][which++ % 3]! : [2, 3][which++ % 2]!;
    if (kind === 1) out.push(((bestOff >> 8) << 5) | ((bestLen - 4) << 2) | 1, bestOff & 0xff);
    else if (kind === 2) out.push(((bestLen - 1) << 2) | 2, bestOff & 0xff, bestOff >> 8);
    else out.push(((bestLen - 1) << 2) | 3, bestOff & 0xff, bestOff >> 8, 0, 0);
    i += bestLen;
    litStart = i;
  }
  literal(litStart, input.length);
  return Uint8Array.from(out);
}

const ascii = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe('snappy', () => {
  it('decodes hand-made streams: literals and all copy kinds, including overlapping copies', () => {
    // literal "hello"
    expect(text(snappyDecompress(Uint8Array.from([5, 4 << 2, ...ascii('hello')])))).toBe('hello');
    // "ab" then a 1-byte-offset copy of length 8 at offset 2 (overlaps itself)
    expect(text(snappyDecompress(Uint8Array.from([10, 1 << 2, ...ascii('ab'), ((8 - 4) << 2) | 1, 2])))).toBe('ababababab');
    // "abcdefgh" then a 2-byte-offset copy of 8 at offset 8
    expect(text(snappyDecompress(Uint8Array.from([16, 7 << 2, ...ascii('abcdefgh'), (7 << 2) | 2, 8, 0])))).toBe(
      'abcdefghabcdefgh',
    );
    // "xyz" then a 4-byte-offset copy of 5 at offset 3 (overlapping)
    expect(text(snappyDecompress(Uint8Array.from([8, 2 << 2, ...ascii('xyz'), (4 << 2) | 3, 3, 0, 0, 0])))).toBe('xyzxyzxy');
    // a run: "a" then copy 64 at offset 1
    expect(text(snappyDecompress(Uint8Array.from([65, 0, 97, (63 << 2) | 2, 1, 0])))).toBe('a'.repeat(65));
    // long literal with a 1-byte length (100 bytes), preamble as a 1-byte varint
    const long = 'q'.repeat(100);
    expect(text(snappyDecompress(Uint8Array.from([100, 60 << 2, 99, ...ascii(long)])))).toBe(long);
    // 2-byte varint preamble (300) and a 2-byte literal length
    const l300 = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
    expect(snappyDecompress(Uint8Array.from([0xac, 0x02, 61 << 2, 0x2b, 0x01, ...l300]))).toEqual(l300);
    expect(snappyUncompressedLength(Uint8Array.from([0xac, 0x02]))).toBe(300);
    expect(snappyDecompress(Uint8Array.from([0]))).toEqual(new Uint8Array(0));
  });

  it('round-trips varied data through a reference compressor', () => {
    const inputs = [
      ascii('the quick brown fox jumps over the lazy dog; the quick brown fox jumps again'.repeat(5)),
      Uint8Array.from({ length: 3000 }, (_, i) => (i % 7) * 13 + (i % 3)),
      Uint8Array.from({ length: 1000 }, (_, i) => (i * 2654435761) >>> 24),
      new Uint8Array(500),
      ascii('a'),
    ];
    for (const input of inputs) {
      const c = snappyCompress(input);
      expect(snappyDecompress(c)).toEqual(input);
    }
  });

  it('rejects corrupt input with clear errors', () => {
    expect(() => snappyDecompress(Uint8Array.from([]))).toThrow(/preamble/);
    expect(() => snappyDecompress(Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]))).toThrow(/preamble/);
    expect(() => snappyDecompress(Uint8Array.from([5, 4 << 2, 97, 98]))).toThrow(/past the end of input/);
    expect(() => snappyDecompress(Uint8Array.from([4, 0, 97, (2 << 2) | 2, 0, 0]))).toThrow(/offset 0/);
    expect(() => snappyDecompress(Uint8Array.from([9, 0, 97, (7 << 2) | 2, 5, 0]))).toThrow(/reaches back 5 bytes but only 1/);
    expect(() => snappyDecompress(Uint8Array.from([3, 4 << 2, ...ascii('hello')]))).toThrow(/overflows the declared length 3/);
    expect(() => snappyDecompress(Uint8Array.from([10, 0, 97]))).toThrow(/ended after 1 bytes of output.*declared 10/);
    expect(() => snappyDecompress(Uint8Array.from([2, 0, 97, 1]))).toThrow(/missing its offset byte/);
    expect(() => snappyDecompress(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f]))).toThrow(/exceeds the limit/);
    expect(() => snappyDecompress(Uint8Array.from([0, 0]))).toThrow(SnappyError);
  });
});

// ---------------------------------------------------------------------------

describe('OpenAI GPT-2 124M index (real file, no data)', () => {
  it('lists 148 tensors with the expected names, shapes and layout', async () => {
    await withCkpt(OPENAI_124M, async (c) => {
      expect(c.header).toMatchObject({ numShards: 1, endianness: 'little' });
      expect(c.entries).toHaveLength(148);
      const shape = (n: string) => c.entry(n).shape;
      expect(shape('model/wte')).toEqual([50257, 768]);
      expect(shape('model/wpe')).toEqual([1024, 768]);
      expect(shape('model/h0/attn/c_attn/w')).toEqual([1, 768, 2304]);
      expect(shape('model/h0/attn/c_attn/b')).toEqual([2304]);
      expect(shape('model/h5/mlp/c_fc/w')).toEqual([1, 768, 3072]);
      expect(shape('model/h5/mlp/c_proj/w')).toEqual([1, 3072, 768]);
      expect(shape('model/h11/mlp/c_proj/b')).toEqual([768]);
      expect(shape('model/ln_f/g')).toEqual([768]);
      expect(c.entries.every((e) => e.dtype === 'float32' && e.shardId === 0 && !e.sliced)).toBe(true);

      // 12 tensors per layer, plus wte, wpe, ln_f/{g,b}
      const perLayer = ['attn/c_attn/b', 'attn/c_attn/w', 'attn/c_proj/b', 'attn/c_proj/w', 'ln_1/b', 'ln_1/g', 'ln_2/b', 'ln_2/g', 'mlp/c_fc/b', 'mlp/c_fc/w', 'mlp/c_proj/b', 'mlp/c_proj/w'];
      const expected = [
        ...Array.from({ length: 12 }, (_, l) => perLayer.map((p) => `model/h${l}/${p}`)).flat(),
        'model/ln_f/b',
        'model/ln_f/g',
        'model/wpe',
        'model/wte',
      ].sort();
      expect(c.entries.map((e) => e.name)).toEqual(expected);

      // Sizes match shapes, sum to the data file size (= 4 x parameter count from hparams),
      // and tensors sit back to back in name order.
      const hparams = JSON.parse(await fsp.readFile(path.join(OPENAI_124M, 'hparams.json'), 'utf8'));
      let offset = 0;
      for (const e of c.entries) {
        expect(e.size).toBe(4 * e.shape.reduce((a, b) => a * b, 1));
        expect(e.offset).toBe(offset);
        offset += e.size;
      }
      expect(offset).toBe(497_759_232);
      expect(offset).toBe(4 * gpt2ParamCount(hparams));
    });
  });

  it('reports the missing data file clearly', async () => {
    await withCkpt(OPENAI_124M, async (c) => {
      await expect(c.readTensor('model/ln_f/g')).rejects.toThrow(/missing data shard 1 of 1/);
      await expect(c.checkDataFiles()).rejects.toThrow(/model\.ckpt\.data-00000-of-00001/);
    });
  });
});

describe('toy GPT-2 checkpoint (TF-written)', () => {
  it('reads every tensor; CRCs verify; biases are 0 and LayerNorm gains 1', async () => {
    const hparams = JSON.parse(await fsp.readFile(path.join(TOY, 'hparams.json'), 'utf8'));
    expect(hparams).toEqual({ n_vocab: 356, n_ctx: 20, n_embd: 15, n_head: 5, n_layer: 3 });
    await withCkpt(TOY, async (c) => {
      expect(c.entries).toHaveLength(40);
      expect(c.entry('model/wte').shape).toEqual([356, 15]);
      expect(c.entry('model/wpe').shape).toEqual([20, 15]);
      expect(c.entry('model/h2/attn/c_attn/w').shape).toEqual([1, 15, 45]);
      const total = c.entries.reduce((s, e) => s + e.size, 0);
      expect(total).toBe(4 * gpt2ParamCount(hparams));
      expect(total).toBe((await fsp.stat(c.dataFiles[0]!)).size);

      let progressCalls = 0;
      await c.verifyAll((p) => {
        progressCalls++;
        expect(p.count).toBe(40);
        if (p.index === p.count) expect(p.bytes).toBe(p.totalBytes);
      });
      expect(progressCalls).toBe(40);

      for (const e of c.entries) {
        const t = await c.readTensor(e.name);
        expect(t).toBeInstanceOf(Float32Array);
        expect(t.length).toBe(e.shape.reduce((a, b) => a * b, 1));
        const values = Array.from(t as Float32Array);
        if (e.name.endsWith('/b')) expect(values.every((v) => v === 0)).toBe(true);
        else if (e.name.endsWith('/g')) expect(values.every((v) => v === 1)).toBe(true);
        else {
          expect(values.every(Number.isFinite)).toBe(true);
          expect(values.some((v) => v !== 0)).toBe(true);
        }
      }

      // Reading into a caller's buffer (e.g. a view of a flat parameter buffer).
      const flat = new Float32Array(1000 + 356 * 15);
      const view = flat.subarray(1000);
      await c.readFloat32('model/wte', view);
      expect(Array.from(view)).toEqual(Array.from((await c.readTensor('model/wte')) as Float32Array));
      await expect(c.readFloat32('model/wte', new Float32Array(5))).rejects.toThrow(/destination has 5 elements/);
      await expect(c.readTensor('model/nope')).rejects.toThrow(/no tensor named "model\/nope"/);
    });
  });

  it('accepts a folder, the prefix, the .index path or a data-file path', async () => {
    for (const p of [TOY, path.join(TOY, 'model.ckpt'), path.join(TOY, 'model.ckpt.index'), path.join(TOY, 'model.ckpt.data-00000-of-00001')]) {
      await withCkpt(p, async (c) => expect(c.prefix).toBe(path.join(TOY, 'model.ckpt')));
    }
    await expect(openTfCheckpoint(path.join(tmp, 'nowhere', 'model.ckpt'))).rejects.toThrow(/checkpoint index not found/);
    await fsp.mkdir(path.join(tmp, 'empty'), { recursive: true });
    await expect(openTfCheckpoint(path.join(tmp, 'empty'))).rejects.toThrow(/no TensorFlow checkpoint here/);
  });
});

describe('TF Serving fixtures', () => {
  it('reads a Snappy-compressed index: a=0.5, a2=0.5, b=2, c=3, c2=3', async () => {
    await withCkpt(path.join(FIX, 'serving-half-plus-two-snappy'), async (c) => {
      const got: Record<string, number> = {};
      for (const e of c.entries) {
        expect(e.shape).toEqual([]);
        got[e.name] = (await c.readTensor(e.name))[0] as number;
      }
      expect(got).toEqual({ a: 0.5, a2: 0.5, b: 2, c: 3, c2: 3 });
      await c.verifyAll();
    });
  });

  it('reads an uncompressed index: a=0.5, b=3, c=3', async () => {
    await withCkpt(path.join(FIX, 'serving-half-plus-three', 'variables'), async (c) => {
      const got: Record<string, number> = {};
      for (const e of c.entries) got[e.name] = (await c.readTensor(e.name))[0] as number;
      expect(got).toEqual({ a: 0.5, b: 3, c: 3 });
    });
  });
});

// ---------------------------------------------------------------------------

describe('corrupt checkpoints give clear errors', () => {
  it('a flipped byte in an index data block: block CRC error naming the file', async () => {
    const dir = await toyCopy('flip-index');
    await flipByte(path.join(dir, 'model.ckpt.index'), 40);
    await expect(openTfCheckpoint(dir)).rejects.toThrow(/model\.ckpt\.index: checkpoint index is corrupt: CRC32C mismatch in data block/);
  });

  it('a flipped byte in a Snappy-compressed block: block CRC error', async () => {
    const dir = path.join(tmp, 'flip-snappy');
    await fsp.mkdir(dir);
    for (const f of ['variables.index', 'variables.data-00000-of-00001']) {
      await fsp.copyFile(path.join(FIX, 'serving-half-plus-two-snappy', f), path.join(dir, f));
    }
    await flipByte(path.join(dir, 'variables.index'), 20);
    await expect(openTfCheckpoint(dir)).rejects.toThrow(/CRC32C mismatch in data block/);
  });

  it('a flipped byte in a tensor: CRC error naming the tensor; other tensors still read', async () => {
    const dir = await toyCopy('flip-data');
    const wte = await withCkpt(dir, async (c) => c.entry('model/wte'));
    await flipByte(path.join(dir, 'model.ckpt.data-00000-of-00001'), wte.offset + 101);
    await withCkpt(dir, async (c) => {
      await expect(c.readTensor('model/wte')).rejects.toThrow(
        /model\.ckpt\.data-00000-of-00001: checkpoint data is corrupt: CRC32C mismatch in tensor "model\/wte"/,
      );
      await expect(c.verifyAll()).rejects.toThrow(/CRC32C mismatch in 1 of 40 tensors \(model\/wte\)/);
      expect((await c.readTensor('model/wpe')).length).toBe(300);
      // Opting out of verification returns the (damaged) bytes.
      expect((await c.readTensor('model/wte', { verify: false })).length).toBe(356 * 15);
    });
  });

  it('a truncated index', async () => {
    const dir = await toyCopy('trunc-index');
    const index = path.join(dir, 'model.ckpt.index');
    await fsp.truncate(index, 1000);
    await expect(openTfCheckpoint(dir)).rejects.toThrow(/model\.ckpt\.index: bad magic number .*truncated/);
    await fsp.truncate(index, 20);
    await expect(openTfCheckpoint(dir)).rejects.toThrow(/checkpoint index is truncated: 20 bytes/);
  });

  it('a truncated data file', async () => {
    const dir = await toyCopy('trunc-data');
    const data = path.join(dir, 'model.ckpt.data-00000-of-00001');
    await fsp.truncate(data, 57420 - 100);
    await withCkpt(dir, async (c) => {
      const last = [...c.entries].sort((a, b) => b.offset - a.offset)[0]!;
      await expect(c.readTensor(last.name)).rejects.toThrow(
        new RegExp(`data file is truncated: it is 57320 bytes but tensor "${last.name}" ends at byte 57420`),
      );
      await expect(c.checkDataFiles()).rejects.toThrow(/data file is truncated/);
      await expect(c.verifyAll()).rejects.toThrow(/data file is truncated/);
      expect((await c.readTensor('model/h0/ln_1/g')).length).toBe(15); // earlier tensors are intact
    });
  });

  it('a wrong magic number', async () => {
    const dir = await toyCopy('bad-magic');
    const index = path.join(dir, 'model.ckpt.index');
    await flipByte(index, 1302 - 1);
    await expect(openTfCheckpoint(dir)).rejects.toThrow(/bad magic number 0x.* \(expected 0xdb4775248b80fb57\)/);
  });

  it('a missing shard', async () => {
    const dir = await toyCopy('no-data');
    await fsp.rm(path.join(dir, 'model.ckpt.data-00000-of-00001'));
    await withCkpt(dir, async (c) => {
      await expect(c.readTensor('model/wte')).rejects.toThrow(/missing data shard 1 of 1/);
      await expect(c.verifyAll()).rejects.toThrow(/missing data shard/);
    });
  });

  it('names the download command when the folder is an OpenAI model size', async () => {
    const dir = await toyCopy('124M');
    await flipByte(path.join(dir, 'model.ckpt.index'), 40);
    await expect(openTfCheckpoint(dir)).rejects.toThrow(/gptcuda download --model 124M/);
    await expect(openTfCheckpoint(dir)).rejects.toBeInstanceOf(TfCheckpointError);
  });
});

// ---------------------------------------------------------------------------
// A minimal bundle writer, to cover what the TF-written fixtures do not:
// several shards, several data blocks with shared-prefix keys, Snappy index
// blocks, and the non-float32 dtypes.

function varint(n: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? b | 0x80 : b);
  } while (v > 0n);
  return out;
}
const lenField = (field: number, bytes: number[]) => [(field << 3) | 2, ...varint(bytes.length), ...bytes];
const u32le = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];

interface TestTensor {
  name: string;
  dtypeCode: number;
  shape: number[];
  bytes: Uint8Array;
  shard: number;
}

/** Block with prefix-compressed keys; restartInterval controls how often a full key is stored. */
function buildBlock(entries: { key: Uint8Array; value: number[] }[], restartInterval: number): number[] {
  const out: number[] = [];
  const restarts: number[] = [];
  let prev: Uint8Array = new Uint8Array(0);
  entries.forEach((e, i) => {
    let shared = 0;
    if (i % restartInterval === 0) restarts.push(out.length);
    else while (shared < prev.length && shared < e.key.length && prev[shared] === e.key[shared]) shared++;
    out.push(...varint(shared), ...varint(e.key.length - shared), ...varint(e.value.length));
    out.push(...e.key.subarray(shared), ...e.value);
    prev = e.key;
  });
  if (restarts.length === 0) restarts.push(0);
  for (const r of restarts) out.push(...u32le(r));
  out.push(...u32le(restarts.length));
  return out;
}

/** Literal-only Snappy encoding: valid, and enough to exercise the compressed-block path. */
function snappyLiteral(data: number[]): number[] {
  const out = varint(data.length);
  for (let s = 0; s < data.length; s += 60) {
    const chunk = data.slice(s, s + 60);
    out.push((chunk.length - 1) << 2, ...chunk);
  }
  return out;
}

async function writeBundle(
  prefix: string,
  tensors: TestTensor[],
  opts: { numShards: number; blockEntries: number; snappy: boolean; minConsumer?: number; headerShards?: number },
) {
  const shards: number[][] = Array.from({ length: opts.numShards }, () => []);
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : 1));
  const kv: { key: Uint8Array; value: number[] }[] = [
    {
      key: new Uint8Array(0),
      value: [8, ...varint(opts.headerShards ?? opts.numShards), ...lenField(3, [8, 1, ...(opts.minConsumer ? [16, opts.minConsumer] : [])])],
    },
  ];
  for (const t of sorted) {
    const offset = shards[t.shard]!.length;
    shards[t.shard]!.push(...t.bytes);
    const shape = t.shape.flatMap((d) => lenField(2, d === 0 ? [] : [8, ...varint(d)]));
    const value = [8, ...varint(t.dtypeCode), ...lenField(2, shape)];
    if (t.shard) value.push(3 << 3, ...varint(t.shard));
    if (offset) value.push(4 << 3, ...varint(offset));
    if (t.bytes.length) value.push(5 << 3, ...varint(t.bytes.length));
    value.push((6 << 3) | 5, ...u32le(maskCrc(crc32c(t.bytes))));
    kv.push({ key: ascii(t.name), value });
  }
  const file: number[] = [];
  const writeBlock = (contents: number[]) => {
    const body = opts.snappy ? snappyLiteral(contents) : contents;
    const type = opts.snappy ? 1 : 0;
    const handle = [...varint(file.length), ...varint(body.length)];
    const crc = crc32cUpdate(crc32c(Uint8Array.from(body)), Uint8Array.from([type]));
    file.push(...body, type, ...u32le(maskCrc(crc)));
    return handle;
  };
  const index: { key: Uint8Array; value: number[] }[] = [];
  for (let i = 0; i < kv.length; i += opts.blockEntries) {
    const block = kv.slice(i, i + opts.blockEntries);
    index.push({ key: block[block.length - 1]!.key, value: writeBlock(buildBlock(block, 3)) });
  }
  const meta = writeBlock(buildBlock([], 1));
  const idx = writeBlock(buildBlock(index, 1));
  const footer = [...meta, ...idx];
  while (footer.length < 40) footer.push(0);
  footer.push(...u32le(0x8b80fb57), ...u32le(0xdb477524));
  file.push(...footer);
  await fsp.writeFile(`${prefix}.index`, Uint8Array.from(file));
  for (let s = 0; s < opts.numShards; s++) {
    const name = `${prefix}.data-${String(s).padStart(5, '0')}-of-${String(opts.numShards).padStart(5, '0')}`;
    await fsp.writeFile(name, Uint8Array.from(shards[s]!));
  }
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();

describe('synthetic bundles (multi-shard, multi-block, Snappy, other dtypes)', () => {
  const f32 = Float32Array.from({ length: 24 }, (_, i) => i / 4 - 3);
  const tensors: TestTensor[] = [
    { name: 'layer/weights/f32', dtypeCode: 1, shape: [2, 3, 4], bytes: bytesOf(f32), shard: 0 },
    // 1, -2, 0.5, 65504, smallest subnormal, +inf, -0
    { name: 'layer/weights/f16', dtypeCode: 19, shape: [7], bytes: bytesOf(Uint16Array.from([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00, 0x8000])), shard: 1 },
    // 1, -3.5, 2^-126 (as bf16 = top halves of the float32 bit patterns)
    { name: 'layer/weights/bf16', dtypeCode: 14, shape: [3], bytes: bytesOf(Uint16Array.from([0x3f80, 0xc060, 0x0080])), shard: 1 },
    { name: 'layer/ids/i32', dtypeCode: 3, shape: [2, 2], bytes: bytesOf(Int32Array.from([-1, 0, 7, 2147483647])), shard: 0 },
    { name: 'layer/ids/i64', dtypeCode: 9, shape: [2], bytes: bytesOf(BigInt64Array.from([-(2n ** 40n), 5n])), shard: 1 },
    { name: 'layer/empty', dtypeCode: 1, shape: [0, 3], bytes: new Uint8Array(0), shard: 0 },
    { name: 'layer/scalar', dtypeCode: 1, shape: [], bytes: bytesOf(Float32Array.from([42])), shard: 1 },
    { name: 'layer/strings', dtypeCode: 7, shape: [1], bytes: Uint8Array.from([3, 0, 0, 0, 0, 120, 121, 122]), shard: 0 },
    ...Array.from({ length: 20 }, (_, i) => ({
      name: `layer/many/t${String(i).padStart(2, '0')}`,
      dtypeCode: 1,
      shape: [2],
      bytes: bytesOf(Float32Array.from([i, -i])),
      shard: i % 2,
    })),
  ];

  for (const snappy of [false, true]) {
    it(`reads every dtype across 2 shards and many blocks (snappy=${snappy})`, async () => {
      const dir = path.join(tmp, `synthetic-${snappy}`);
      await fsp.mkdir(dir);
      const prefix = path.join(dir, 'bundle');
      await writeBundle(prefix, tensors, { numShards: 2, blockEntries: 4, snappy });
      await withCkpt(prefix, async (c) => {
        expect(c.header.numShards).toBe(2);
        expect(c.dataFiles.map((f) => path.basename(f))).toEqual(['bundle.data-00000-of-00002', 'bundle.data-00001-of-00002']);
        expect(c.entries.map((e) => e.name)).toEqual(tensors.map((t) => t.name).sort());
        expect(Array.from((await c.readTensor('layer/weights/f32')) as Float32Array)).toEqual(Array.from(f32));
        expect(Array.from((await c.readTensor('layer/weights/f16')) as Float32Array)).toEqual([1, -2, 0.5, 65504, 2 ** -24, Infinity, -0]);
        expect(Array.from((await c.readTensor('layer/weights/bf16')) as Float32Array)).toEqual([1, -3.5, 2 ** -126]);
        expect(await c.readTensor('layer/ids/i32')).toEqual(Int32Array.from([-1, 0, 7, 2147483647]));
        expect(await c.readTensor('layer/ids/i64')).toEqual(BigInt64Array.from([-(2n ** 40n), 5n]));
        expect(c.entry('layer/empty').shape).toEqual([0, 3]);
        expect((await c.readTensor('layer/empty')).length).toBe(0);
        expect(Array.from((await c.readTensor('layer/scalar')) as Float32Array)).toEqual([42]);
        expect(c.entry('layer/strings').dtype).toBe('string');
        await expect(c.readTensor('layer/strings')).rejects.toThrow(/dtype string .*readRaw/);
        expect(Array.from(await c.readRaw('layer/strings'))).toEqual([3, 0, 0, 0, 0, 120, 121, 122]);
        for (let i = 0; i < 20; i++) {
          expect(Array.from(await c.readFloat32(`layer/many/t${String(i).padStart(2, '0')}`))).toEqual([i, -i]);
        }
        await c.verifyAll();
      });

      await fsp.rm(`${prefix}.data-00001-of-00002`);
      await withCkpt(prefix, async (c) => {
        expect((await c.readTensor('layer/weights/f32')).length).toBe(24);
        await expect(c.readTensor('layer/weights/f16')).rejects.toThrow(/bundle\.data-00001-of-00002: missing data shard 2 of 2/);
        await expect(c.checkDataFiles()).rejects.toThrow(/missing data shard 2 of 2/);
      });
    });
  }

  it('refuses a bundle that needs a newer reader', async () => {
    const dir = path.join(tmp, 'synthetic-newer');
    await fsp.mkdir(dir);
    const prefix = path.join(dir, 'bundle');
    await writeBundle(prefix, tensors.slice(0, 2), { numShards: 2, blockEntries: 4, snappy: false, minConsumer: 2 });
    await expect(openTfCheckpoint(prefix)).rejects.toThrow(/needs a newer reader .*min_consumer 2/);
  });
});

describe('num_shards is checked against the index before it sizes anything', () => {
  it('a huge num_shards in a tiny index is refused at once, naming the index', async () => {
    const prefix = path.join(tmp, 'huge-shards');
    const t = { name: 'a', dtypeCode: 1, shape: [1], bytes: Uint8Array.from([0, 0, 128, 63]), shard: 0 };
    await writeBundle(prefix, [t], { numShards: 1, blockEntries: 4, snappy: false, headerShards: 2_000_000_000 });
    const t0 = Date.now();
    await expect(openTfCheckpoint(prefix)).rejects.toThrow(/huge-shards\.index: num_shards is 2000000000 but the index lists only 1 tensors/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});
