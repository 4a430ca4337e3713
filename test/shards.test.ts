// llm.c token shards and globs for `--data` (issue 14, item 7): shards are
// written here from known ids by an independent writer of llm.c's format (256
// int32 header: magic 20240520, version 1, count; uint16 tokens), read back
// across shard boundaries, refused with clear errors when damaged, and a
// training run on a glob of shards equals the same run on the one .tok file
// holding the same tokens.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { TokenFile } from '../ts/data/dataset.js';
import { ConcatTokenSource, expandGlob, openTokenShards } from '../ts/data/shards.js';
import { spawnCli } from './helpers/cli.js';

let root: string;
beforeAll(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-shards-test-'));
});
afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

function writeShard(file: string, ids: ArrayLike<number>, header: { magic?: number; version?: number; count?: number } = {}): void {
  const b = Buffer.alloc(1024 + 2 * ids.length);
  b.writeInt32LE(header.magic ?? 20240520, 0);
  b.writeInt32LE(header.version ?? 1, 4);
  b.writeInt32LE(header.count ?? ids.length, 8);
  for (let i = 0; i < ids.length; i++) b.writeUInt16LE(ids[i]!, 1024 + 2 * i);
  fs.writeFileSync(file, b);
}

// Not a gptcuda token file: the .bin shards are recognised by their own magic.
const noTok = () => false;

describe('llm.c shards', () => {
  it('a glob of shards reads as one stream, in name order, across boundaries', () => {
    const dir = join(root, 'glob');
    fs.mkdirSync(dir);
    const ids = Array.from({ length: 700 }, (_, i) => (i * 7919) % 50257);
    // Written out of order: the names decide.
    writeShard(join(dir, 'train_000002.bin'), ids.slice(500));
    writeShard(join(dir, 'train_000000.bin'), ids.slice(0, 200));
    writeShard(join(dir, 'train_000001.bin'), ids.slice(200, 500));
    fs.writeFileSync(join(dir, 'notes.txt'), 'not matched');
    expect(expandGlob(join(dir, 'train_*.bin')).map((f) => f.slice(dir.length + 1))).toEqual(['train_000000.bin', 'train_000001.bin', 'train_000002.bin']);
    const src = openTokenShards([join(dir, 'train_*.bin')], noTok)!;
    expect(src).toBeInstanceOf(ConcatTokenSource);
    expect(src.length).toBe(700);
    for (const [s, n] of [[0, 700], [190, 20], [199, 302], [500, 200], [699, 1], [350, 0]] as const) expect([...src.read(s, n)], `[${s}, ${s + n})`).toEqual(ids.slice(s, s + n));
    expect(src.where!(205)).toBe(`${join(dir, 'train_000001.bin')}: token 5 (byte offset 1034)`);
    expect(() => src.read(690, 11)).toThrow(/outside \[0, 700\)/);
    expect(openTokenShards([join(dir, 'notes.txt')], noTok)).toBeNull();
  });

  it('damaged shards and bad globs fail with one line naming the file and the fix', () => {
    const dir = join(root, 'bad');
    fs.mkdirSync(dir);
    const f = (name: string) => join(dir, name);
    writeShard(f('trunc.bin'), [1, 2, 3], { count: 4 });
    writeShard(f('v2.bin'), [1, 2], { version: 2 });
    const tiny = Buffer.alloc(8);
    tiny.writeInt32LE(20240520, 0);
    tiny.writeInt32LE(1, 4);
    fs.writeFileSync(f('tiny.bin'), tiny);
    const open = (p: string) => () => openTokenShards([p], noTok);
    expect(open(f('trunc.bin'))).toThrow(`${f('trunc.bin')}: truncated or corrupt llm.c shard: the header says 4 tokens (1032 bytes) but the file has 1030 bytes`);
    expect(open(f('v2.bin'))).toThrow(`${f('v2.bin')}: llm.c shard version 2; this build reads version 1 (uint16 GPT-2 tokens)`);
    expect(open(f('tiny.bin'))).toThrow(`${f('tiny.bin')}: not an llm.c token shard (8 bytes; its header alone is 1024)`);
    expect(open(f('none_*.bin'))).toThrow(`--data ${f('none_*.bin')}: no file matches`);
    expect(open(join(root, 'nope', '*.bin'))).toThrow(/no folder/);
    expect(open(join(root, '*', 'a.bin'))).toThrow(/wildcards are supported in the file name only/);
    fs.writeFileSync(f('text.txt'), 'hello');
    writeShard(f('good.bin'), [1, 2]);
    expect(() => openTokenShards([f('good.bin'), f('text.txt')], noTok)).toThrow(/mixes token shards and text \(.*text\.txt\)/);
    expect(open(f('*.txt'))).toThrow(/globs name token shards/);
  });

  it('train --data "<dir>/*.bin" = train --data <the same tokens>.tok, loss for loss', async () => {
    const tok = join(root, 'verdict.tok');
    const t = await spawnCli(['tokenize', join(import.meta.dirname, '..', 'data', 'the-verdict.txt'), '--out', tok], { cwd: root });
    expect(t.code, t.stderr).toBe(0);
    const file = TokenFile.open(tok);
    const ids = file.read(0, file.length);
    file.close();
    const dir = join(root, 'verdict-shards');
    fs.mkdirSync(dir);
    const cuts = [0, 1500, 3100, ids.length];
    for (let i = 0; i + 1 < cuts.length; i++) writeShard(join(dir, `verdict_${i}.bin`), ids.subarray(cuts[i]!, cuts[i + 1]!));
    const args = ['train', '--n-layers', '1', '--emb-dim', '32', '--n-heads', '2', '--context-length', '32', '--batch-size', '2', '--max-steps', '4', '--json'];
    const [a, b] = await Promise.all([
      spawnCli([...args, '--data', join(dir, '*.bin'), '--out', join(root, 'run-bin')], { cwd: root }),
      spawnCli([...args, '--data', tok, '--out', join(root, 'run-tok')], { cwd: root }),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const losses = (out: string) => out.split('\n').filter((l) => l.includes('"event":"step"')).map((l) => (JSON.parse(l) as { loss: number }).loss);
    expect(losses(a.stdout)).toHaveLength(4);
    expect(losses(a.stdout)).toEqual(losses(b.stdout));
    const start = (out: string) => JSON.parse(out.split('\n')[0]!) as { train_tokens: number; val_tokens: number };
    expect(start(a.stdout)).toMatchObject({ train_tokens: start(b.stdout).train_tokens, val_tokens: start(b.stdout).val_tokens });
  });
});
