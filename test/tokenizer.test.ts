// The native GPT-2 tokenizer against js-tiktoken, an independent
// implementation (regex pre-tokenizer + its own BPE), on varied Unicode text.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getTokenizer, textToTokenIds, textToTokenIdsAsync, textToTokenIdsInChunks } from '../ts/data/tokenizer.js';
import { mulberry32 } from './helpers/reference.js';

const reference = (s: string): number[] => getTokenizer().encode(s, ['<|endoftext|>']);

// Pieces that stress each alternative of the pattern and each Unicode class.
const ALPHABET = [
  'a', 'Z', 'the', ' word', 'é', 'ñ', 'Straße', 'e\u0301', 'ﬁ', '日本語', '、', '。', '한국어', 'Ωμέγα', 'мир',
  '😀', '🤖', '👩‍👩‍👧', '\u{1D400}', '0', '42', '١٢٣', '४२', 'Ⅻ', '½', "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
  "'S", "'LL", "'Re", "'", '"', '!', '?!', '...', '--', '$', '€', '<', '|', '>', '<|', '|>', '<|endoftext|>',
  ' ', '  ', '   ', '\t', '\n', '\r\n', '\n\n', '\u00a0', '\u2028', '\u2029', '\u3000', '\u200b', '\ufeff', '\u000b',
  '\ud800', '\udc00', '\ufffd', '\u0000', '_', '#', '@', 'x2', '2x',
];

function randomText(seed: number, pieces: number): string {
  const r = mulberry32(seed);
  let s = '';
  for (let i = 0; i < pieces; i++) s += ALPHABET[Math.floor(r() * ALPHABET.length)]!;
  return s;
}

const verdict = fs.readFileSync(path.join(import.meta.dirname, '..', 'data', 'the-verdict.txt'), 'utf8');

describe('native GPT-2 tokenizer', () => {
  it('equals js-tiktoken on hand-picked edge cases', () => {
    const cases = [
      '', ' ', 'a', "I'LL 's 're don't 'S'LL", 'a  b\t\n c\u00a0d \u3000 e\r\n', 'x\n', 'x \n', '  \n\n  y',
      '\ud800', 'a\udc00b', '\ud83d', '<|endoftext|>', ' <|endoftext|> ', '<|endoftext|><|endoftext|>',
      'a<|endoftext|>b', 'a <|endoftext|>  b', '<|endoftext', '<|endoftext|', 'endoftext|>', "'", "''s", " 's",
    ];
    for (const s of cases) expect(textToTokenIds(s), JSON.stringify(s)).toEqual(reference(s));
  });

  it('equals js-tiktoken on seeded random mixes of scripts, whitespace and symbols', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const s = randomText(seed, 1 + (seed % 60));
      expect(textToTokenIds(s), JSON.stringify(s)).toEqual(reference(s));
    }
  });

  it('equals js-tiktoken on the-verdict.txt', () => {
    expect(textToTokenIds(verdict)).toEqual(reference(verdict));
  });

  it('equals js-tiktoken on long single pieces (the heap merge) and 100k-character texts', () => {
    // js-tiktoken's merge is quadratic, so the single pieces stay a few thousand bytes.
    const r = mulberry32(7);
    const word = Array.from({ length: 3000 }, () => 'abcdefghij'[Math.floor(r() * 10)]).join('');
    for (const s of [word, 'a'.repeat(2000), ' '.repeat(2000) + 'x', '日本'.repeat(700), '9'.repeat(1500), '!?'.repeat(1000)]) {
      expect(textToTokenIds(s)).toEqual(reference(s));
    }
    // 100k characters of many pieces; the reference cannot take 100k-byte single pieces.
    const long = randomText(11, 25_000).slice(0, 100_000);
    expect(textToTokenIds(long)).toEqual(reference(long));
  });

  it('gives the ids of one pass for any number of cuts and threads', () => {
    const texts = [verdict, randomText(99, 3000), verdict.replace(/ /g, '<|endoftext|>'), randomText(5, 2000).replace(/\s/g, '')];
    for (const s of texts) {
      const whole = reference(s);
      for (const chunks of [2, 7, 64, 1000]) {
        expect(Array.from(textToTokenIdsInChunks(s, chunks, 2)), `${chunks} chunks`).toEqual(whole);
      }
    }
  });

  it('runs on worker threads with the same ids', async () => {
    const s = randomText(3, 5000);
    expect(Array.from(await textToTokenIdsAsync(s, { threads: 2 }))).toEqual(reference(s));
  });

  it('rejects bad chunk and thread counts with a one-line reason', () => {
    expect(() => textToTokenIdsInChunks('a', 0, 1)).toThrow(/chunks must be an integer in \[1, 4096\]/);
    expect(() => textToTokenIdsInChunks('a', 1, 1.5)).toThrow(/threads must be an integer/);
  });
});
