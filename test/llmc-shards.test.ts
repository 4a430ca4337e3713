// llm.c's token shards and globs of shards or token files as --data (issue 14,
// item 7): the format as llm.c's dev/data scripts write it (built here by hand,
// not by the reader under test), reads across shard boundaries, refusals of
// damaged shards, glob order, lazy batches (a rank reads only the micro-batches
// it runs), and a CLI run on a glob of shards equal to the same run on one
// token file holding the same tokens.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DataLoader } from '../ts/data/loader.js';
import { ConcatTokenSource, LlmcShard, expandDataGlobs, openTokenData } from '../ts/data/shards.js';
import { pretokenize } from '../ts/data/token-file.js';
import { textToTokenIds } from '../ts/data/tokenizer.js';
import { ArrayTokenSource, TokenWindows, type TokenSource } from '../ts/data/windows.js';
import { spawnCli } from './helpers/cli.js';

const DATA = resolve(import.meta.dirname, '..', 'data', 'the-verdict.txt');

/** np.zeros(256, int32) with magic, version, count; then the tokens as uint16 (llm.c's write_datafile). */
function writeShard(file: string, tokens: ArrayLike<number>, header: { magic?: number; version?: number; count?: number } = {}): void {
  const head = new Int32Array(256);
  head[0] = header.magic ?? 20240520;
  head[1] = header.version ?? 1;
  head[2] = header.count ?? tokens.length;
  const body = Uint16Array.from(tokens);
  fs.writeFileSync(file, Buffer.concat([Buffer.from(head.buffer), Buffer.from(body.buffer)]));
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(join(tmpdir(), 'gptcuda-shards-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('llm.c shards', () => {
  it('reads the tokens of a shard, with the file and byte offset in where()', () => {
    const ids = Array.from({ length: 1000 }, (_, i) => (i * 7919) % 50257);
    const f = join(dir, 'one.bin');
    writeShard(f, ids);
    const s = LlmcShard.open(f);
    expect(s.length).toBe(1000);
    expect(Array.from(s.read(0, 1000))).toEqual(ids);
    expect(Array.from(s.read(997, 3))).toEqual(ids.slice(997));
    expect(s.where(10)).toBe(`${f}: token 10 (byte offset 1044)`);
    expect(() => s.read(999, 2)).toThrow(/outside/);
    s.close();
  });

  it('refuses damaged shards with one line naming the file', () => {
    const cases: [string, () => void, RegExp][] = [
      ['trunc.bin', () => fs.writeFileSync(join(dir, 'trunc.bin'), Buffer.alloc(100)), /only 100 bytes/],
      ['magic.bin', () => writeShard(join(dir, 'magic.bin'), [1, 2], { magic: 1234 }), /magic 1234, expected 20240520/],
      ['v2.bin', () => writeShard(join(dir, 'v2.bin'), [1, 2], { version: 2 }), /version 2 is not GPT-2 data/],
      ['count.bin', () => writeShard(join(dir, 'count.bin'), [1, 2, 3], { count: 5 }), /says 5 tokens \(1034 bytes\) but the file has 1030 bytes/],
      ['neg.bin', () => writeShard(join(dir, 'neg.bin'), [1], { count: -1 }), /truncated or corrupt/],
    ];
    for (const [name, make, message] of cases) {
      make();
      let err: Error | undefined;
      try {
        LlmcShard.open(join(dir, name));
      } catch (e) {
        err = e as Error;
      }
      expect(err?.message, name).toMatch(message);
      expect(err!.message).toContain(join(dir, name));
      expect(err!.message).not.toContain('\n');
    }
  });

  it('concatenates sources: any range across boundaries equals the joined array', () => {
    const lengths = [5, 1, 0, 17, 3];
    let next = 0;
    const parts = lengths.map((n) => new ArrayTokenSource(Array.from({ length: n }, () => next++)));
    const all = new ConcatTokenSource(parts);
    expect(all.length).toBe(26);
    for (let start = 0; start <= 26; start++)
      for (let count = 0; start + count <= 26; count++)
        expect(Array.from(all.read(start, count))).toEqual(Array.from({ length: count }, (_, i) => start + i));
    expect(() => all.read(20, 7)).toThrow(/outside/);
  });

  it('names the shard and its own offset for a token of a later shard', () => {
    writeShard(join(dir, 'w_000.bin'), [1, 2, 3]);
    writeShard(join(dir, 'w_001.bin'), [4, 5, 6, 7]);
    const src = openTokenData([join(dir, 'w_000.bin'), join(dir, 'w_001.bin')])!;
    expect(src.where!(5)).toBe(`${join(dir, 'w_001.bin')}: token 2 (byte offset 1028)`);
    // A bad id deep in the second shard is refused where the batch is read, with that shard and offset.
    writeShard(join(dir, 'bad_000.bin'), Array.from({ length: 40 }, () => 11));
    writeShard(join(dir, 'bad_001.bin'), [...Array.from({ length: 10 }, () => 11), 60000, ...Array.from({ length: 21 }, () => 11)]);
    const bad = openTokenData(expandDataGlobs([join(dir, 'bad_*.bin')]))!;
    const loader = new DataLoader(new TokenWindows(bad, 8), { batchSize: 1 });
    loader.vocabSize = 50257;
    expect(() => {
      for (const b of loader) void b.inputs;
    }).toThrow(`${join(dir, 'bad_001.bin')}: token 10 (byte offset 1044) is id 60000`);
  });

  it('expands * and ? in the file name, sorted by code unit; refuses no match and globbed directories', () => {
    const g = join(dir, 'glob');
    fs.mkdirSync(g);
    for (const n of ['b_10.bin', 'b_2.bin', 'B_1.bin', 'a.txt', 'b_x.tok']) fs.writeFileSync(join(g, n), '');
    expect(expandDataGlobs([join(g, 'b_*.bin'), join(g, 'a.txt')])).toEqual([join(g, 'b_10.bin'), join(g, 'b_2.bin'), join(g, 'a.txt')]);
    expect(expandDataGlobs([join(g, '?_1*.bin')])).toEqual([join(g, 'B_1.bin'), join(g, 'b_10.bin')]);
    expect(() => expandDataGlobs([join(g, 'c_*.bin')])).toThrow(/no file matches/);
    expect(() => expandDataGlobs([join(dir, '*', 'x.bin')])).toThrow(/only the file name/);
  });

  it('refuses token data mixed with text', () => {
    writeShard(join(dir, 'mix.bin'), [1, 2, 3]);
    expect(() => openTokenData([join(dir, 'mix.bin'), DATA])).toThrow(/mixes token data with .*the-verdict\.txt/);
    expect(openTokenData([DATA])).toBeNull();
  });
});

describe('lazy batches', () => {
  it('reads a batch only when its tokens are used, the rows fixed when it was handed out', () => {
    const base = new ArrayTokenSource(Array.from({ length: 200 }, (_, i) => i));
    let reads = 0;
    const counting: TokenSource = { length: base.length, read: (s, c) => (reads++, base.read(s, c)) };
    const loader = new DataLoader(new TokenWindows(counting, 4), { batchSize: 2, shuffle: true, seed: 7 });
    const eager = new DataLoader(new TokenWindows(base, 4), { batchSize: 2, shuffle: true, seed: 7 });
    const batches = [...loader]; // the epoch ends and a new order is drawn before any batch is read
    expect(reads).toBe(0);
    const expected = [...eager].map((b) => Array.from(b.inputs));
    expect(batches.map((b) => Array.from(b.inputs))).toEqual(expected);
    const rows = batches.reduce((n, b) => n + b.batchSize, 0);
    expect(reads).toBe(rows);
    void batches[0]!.targets;
    expect(reads).toBe(rows);
  });
});

describe('train --data with shards', () => {
  it('a glob of llm.c shards trains exactly as one token file with the same tokens', async () => {
    const tok = join(dir, 'verdict.tok');
    await pretokenize(DATA, tok);
    const ids = textToTokenIds(fs.readFileSync(DATA, 'utf8').replace(/\r\n?/g, '\n'));
    const sh = join(dir, 'sh');
    fs.mkdirSync(sh);
    const cut = [0, 1500, 1501, 3333, ids.length];
    for (let i = 0; i + 1 < cut.length; i++) writeShard(join(sh, `verdict_train_${String(i).padStart(6, '0')}.bin`), ids.slice(cut[i], cut[i + 1]));
    const tiny = ['--n-layers', '1', '--emb-dim', '32', '--n-heads', '2', '--context-length', '16', '--batch-size', '2', '--max-steps', '4', '--eval-freq', '2', '--eval-iter', '2', '--device', 'cpu', '--json'];
    const losses = async (data: string, out: string) => {
      const r = await spawnCli(['train', '--data', data, '--out', join(dir, out), ...tiny], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((e) => e.event === 'step' || e.event === 'eval');
    };
    const fromShards = await losses(join(sh, 'verdict_train_*.bin'), 'run-shards');
    const fromTok = await losses(tok, 'run-tok');
    expect(fromShards.length).toBeGreaterThan(3);
    const strip = (e: Record<string, unknown>) => ({ ...e, tokens_per_s: undefined, seconds: undefined, elapsed_s: undefined, time: undefined });
    expect(fromShards.map(strip)).toEqual(fromTok.map(strip));
  }, 120_000);
});
