// Issue 11 item D: a .tok file is validated when opened, token range included.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TOKEN_FILE_HEADER_BYTES, TOKEN_FILE_MAGIC, TokenFile } from '../ts/data/token-file.js';

const root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-tok-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function tokFile(name: string, ids: number[]): string {
  const b = Buffer.alloc(TOKEN_FILE_HEADER_BYTES + 2 * ids.length);
  b.write(TOKEN_FILE_MAGIC, 0, 'ascii');
  b.writeUInt32LE(1, 8);
  b.writeBigUInt64LE(BigInt(ids.length), 12);
  ids.forEach((id, i) => b.writeUInt16LE(id, TOKEN_FILE_HEADER_BYTES + 2 * i));
  const p = join(root, name);
  fs.writeFileSync(p, b);
  return p;
}

describe('TokenFile.open validates the token range', () => {
  it('accepts ids below the vocabulary size', () => {
    const f = TokenFile.open(tokFile('ok.tok', [0, 1, 50256, 7]));
    expect([...f.read(0, 4)]).toEqual([0, 1, 50256, 7]);
    f.close();
  });

  it('an id >= 50257 fails at open with the file and the token offset', () => {
    const p = tokFile('bad.tok', [5, 6, 50257, 8]);
    expect(() => TokenFile.open(p)).toThrow(new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: corrupt token file: token 2 \\(byte offset 24\\) is id 50257`));
  });

  it('a smaller vocabulary can be given', () => {
    const p = tokFile('small.tok', [5, 6, 70]);
    expect(() => TokenFile.open(p, { vocabSize: 64 })).toThrow(/token 2 .* is id 70, not below the vocabulary size 64/);
  });

  it('the header and size are still checked', () => {
    const p = tokFile('trunc.tok', [1, 2, 3]);
    fs.truncateSync(p, fs.statSync(p).size - 1);
    expect(() => TokenFile.open(p)).toThrow(/truncated or corrupt token file/);
  });
});
