import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DataLoader, createLoaders, type Batch, type DataLoaderState } from '../ts/data/loader.js';
import { codePointLength, loadText, splitText } from '../ts/data/text.js';
import { TOKEN_FILE_HEADER_BYTES, TokenFile, findSafeCut, pretokenize } from '../ts/data/token-file.js';
import { ArrayTokenSource, TokenWindows, countWindows } from '../ts/data/windows.js';
import { EOT_ID, VOCAB_SIZE, getTokenizer, textToTokenIds, tokenIdsToText } from '../ts/data/tokenizer.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const VERDICT = path.join(here, '..', 'data', 'the-verdict.txt');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gptcuda-data-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The book's GPTDatasetV1 loop, written out naively. */
function naiveWindows(ids: number[], maxLength: number, stride: number): Array<{ input: number[]; target: number[] }> {
  const out: Array<{ input: number[]; target: number[] }> = [];
  for (let i = 0; i < ids.length - maxLength; i += stride) {
    out.push({ input: ids.slice(i, i + maxLength), target: ids.slice(i + 1, i + maxLength + 1) });
  }
  return out;
}

function batchRows(b: Batch): number[][] {
  const rows: number[][] = [];
  for (let r = 0; r < b.batchSize; r++) rows.push(Array.from(b.inputs.subarray(r * b.contextLength, (r + 1) * b.contextLength)));
  return rows;
}

/** The next `n` batches, crossing epoch boundaries like a training loop would. */
function drain(loader: DataLoader, n: number): Batch[] {
  const got: Batch[] = [];
  while (got.length < n) {
    for (const b of loader) {
      got.push(b);
      if (got.length === n) break;
    }
  }
  return got;
}

describe('tokenizer', () => {
  it('encodes the book examples', () => {
    expect(textToTokenIds('Every effort moves you')).toEqual([6109, 3626, 6100, 345]);
    // Chapter 2's example with <|endoftext|> as an allowed special token.
    expect(textToTokenIds('Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.')).toEqual([
      15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680, 27271, 13,
    ]);
    expect(textToTokenIds('<|endoftext|>')).toEqual([EOT_ID]);
    expect(EOT_ID).toBe(50256);
    expect(VOCAB_SIZE).toBe(50257);
  });

  it('decodes and round-trips, including non-ASCII text and <|endoftext|>', () => {
    expect(tokenIdsToText([6109, 3626, 6100, 345])).toBe('Every effort moves you');
    for (const s of ['Every effort moves you', 'naïve café — 日本語 😀\n\n  x', 'a<|endoftext|>b', '']) {
      expect(tokenIdsToText(textToTokenIds(s))).toBe(s);
    }
    expect(tokenIdsToText(new Int32Array([6109, 3626]))).toBe('Every effort');
  });

  it('gives exactly what js-tiktoken gives on its own (the piece cache changes nothing)', () => {
    const enc = getTokenizer();
    const verdict = fs.readFileSync(VERDICT, 'utf8');
    expect(textToTokenIds(verdict)).toEqual(enc.encode(verdict, ['<|endoftext|>']));
    // Random soups of the pre-tokenizer's tricky cases: contractions, whitespace
    // runs, Unicode letters/digits/spaces, emoji, partial special tokens.
    const alphabet = ['a', 'b', 'Z', ' ', '  ', '\n', '\n\n', '\t', "'s", "'re", "'", '1', '23', '!', '?', 'é', '日本', '😀', '\u00a0', '\u3000', '<|endoftext|>', '<|', '|>', '\r', 'ﬁ', '٣', '-', " 's", "'S"];
    let seed = 1;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let t = 0; t < 2000; t++) {
      let s = '';
      const n = 1 + Math.floor(rnd() * 30);
      for (let i = 0; i < n; i++) s += alphabet[Math.floor(rnd() * alphabet.length)];
      expect(textToTokenIds(s)).toEqual(enc.encode(s, ['<|endoftext|>']));
    }
  });

  it('rejects ids outside the vocabulary and caches the tokenizer', () => {
    expect(() => tokenIdsToText([50257])).toThrow(/vocabulary/);
    expect(() => tokenIdsToText([-1])).toThrow(/vocabulary/);
    expect(getTokenizer()).toBe(getTokenizer());
  });
});

describe('the-verdict.txt numbers from chapter 5', () => {
  const text = fs.readFileSync(VERDICT, 'utf8');

  it('has 20,479 characters and 5,145 tokens', () => {
    expect(loadText(VERDICT)).toBe(text);
    expect(text.length).toBe(20479);
    expect(textToTokenIds(text).length).toBe(5145);
  });

  it('splits 90/10 at character 18,431 into 4,612 and 534 tokens', () => {
    const s = splitText(text, 0.9);
    expect(s.splitIndex).toBe(18431);
    expect(s.train.length).toBe(18431);
    expect(s.train + s.val).toBe(text);
    expect(textToTokenIds(s.train).length).toBe(4612);
    expect(textToTokenIds(s.val).length).toBe(534);
  });

  it('gives 9 train batches and 1 validation batch of [2, 256] (context 256, stride 256, batch 2)', () => {
    const { train, val, trainTokens, valTokens, splitUnit } = createLoaders({ text, trainRatio: 0.9, contextLength: 256, stride: 256, batchSize: 2, seed: 123 });
    expect(splitUnit).toBe('chars');
    expect(trainTokens).toBe(4612);
    expect(valTokens).toBe(534);
    // len(range(0, 4612 - 256, 256)) = 18 windows → 9 batches (drop_last drops nothing);
    // len(range(0, 534 - 256, 256)) = 2 windows → 1 batch.
    expect(train.numWindows).toBe(18);
    expect(val.numWindows).toBe(2);
    expect(train.numBatches).toBe(9);
    expect(val.numBatches).toBe(1);
    const trainBatches = [...train];
    expect(trainBatches.length).toBe(9);
    for (const b of trainBatches) {
      expect(b.batchSize).toBe(2);
      expect(b.contextLength).toBe(256);
      expect(b.inputs.length).toBe(512);
      expect(b.targets.length).toBe(512);
    }
    const valBatches = [...val];
    expect(valBatches.length).toBe(1);
    expect(valBatches[0]!.inputs.length).toBe(512);
    // 9 × 2 × 256 training tokens per epoch, as in the book's tokens_seen.
    expect(trainBatches.reduce((s, b) => s + b.inputs.length, 0)).toBe(4608);
  });

  it('validation batches are the first windows of the validation text, in order', () => {
    const { val } = createLoaders({ text, contextLength: 256, batchSize: 2 });
    const valIds = textToTokenIds(text.slice(18431));
    const [b] = [...val];
    expect(Array.from(b!.inputs.subarray(0, 256))).toEqual(valIds.slice(0, 256));
    expect(Array.from(b!.targets.subarray(0, 256))).toEqual(valIds.slice(1, 257));
    expect(Array.from(b!.inputs.subarray(256))).toEqual(valIds.slice(256, 512));
    expect(Array.from(b!.targets.subarray(256))).toEqual(valIds.slice(257, 513));
  });
});

describe('splitText', () => {
  it('counts code points like Python, not UTF-16 units', () => {
    const emoji = '😀'.repeat(10);
    expect(emoji.length).toBe(20);
    expect(codePointLength(emoji)).toBe(10);
    const s = splitText(emoji, 0.5);
    expect(s.splitIndex).toBe(5);
    expect(s.train).toBe('😀'.repeat(5));
    expect(s.val).toBe('😀'.repeat(5));
    // Python: text = "é😀abc"; int(0.5 * len(text)) == 2 → "é😀" | "abc".
    const t = splitText('é😀abc', 0.5);
    expect(t).toEqual({ train: 'é😀', val: 'abc', splitIndex: 2 });
    // int(0.9 * 7) == 6 (truncation, not rounding).
    expect(splitText('abcdefg', 0.9)).toEqual({ train: 'abcdef', val: 'g', splitIndex: 6 });
  });

  it('rejects ratios outside (0, 1)', () => {
    expect(() => splitText('abc', 0)).toThrow(/ratio/);
    expect(() => splitText('abc', 1)).toThrow(/ratio/);
    expect(() => splitText('abc', Number.NaN)).toThrow(/ratio/);
  });
});

describe('TokenWindows (GPTDatasetV1)', () => {
  const ids = textToTokenIds(fs.readFileSync(VERDICT, 'utf8')).slice(0, 300);

  it('matches the book loop exactly for many context/stride combinations', () => {
    for (const [T, stride] of [
      [4, 4],
      [4, 1],
      [4, 5],
      [256, 256],
      [10, 29],
      [299, 1],
      [299, 7],
      [300, 1],
      [1, 1],
    ] as Array<[number, number]>) {
      const expected = naiveWindows(ids, T, stride);
      const w = new TokenWindows(ids, T, stride);
      expect(w.length).toBe(expected.length);
      expect(countWindows(ids.length, T, stride)).toBe(expected.length);
      for (let i = 0; i < w.length; i++) {
        const got = w.get(i);
        expect(Array.from(got.input)).toEqual(expected[i]!.input);
        expect(Array.from(got.target)).toEqual(expected[i]!.target);
      }
    }
  });

  it('keeps the range quirk: the last possible window is skipped when (n - T) is a multiple of the stride', () => {
    // n = 12, T = 4, stride = 4: range(0, 8, 4) = [0, 4]; a window at 8 would fit
    // (tokens 8..12 need index 12, which does not exist), so only 2 windows.
    expect(new TokenWindows(Array.from({ length: 12 }, (_, i) => i), 4, 4).length).toBe(2);
    // n = 13: range(0, 9, 4) = [0, 4, 8] → 3 windows.
    expect(new TokenWindows(Array.from({ length: 13 }, (_, i) => i), 4, 4).length).toBe(3);
    expect(new TokenWindows([1, 2, 3, 4], 4).length).toBe(0);
    expect(new TokenWindows([1, 2, 3, 4, 5], 4).length).toBe(1);
  });

  it('defaults stride to the context length and validates arguments', () => {
    expect(new TokenWindows(ids, 10).stride).toBe(10);
    expect(() => new TokenWindows(ids, 0)).toThrow(/context length/);
    expect(() => new TokenWindows(ids, 4, 0)).toThrow(/stride/);
    expect(() => new TokenWindows(ids, 4).get(1000)).toThrow(RangeError);
  });
});

describe('DataLoader', () => {
  // Tokens 0..n-1, so a window's first input token is its start offset.
  const seq = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
  const starts = (b: Batch): number[] => batchRows(b).map((r) => r[0]!);

  it('without shuffle serves windows in order, with targets shifted by one', () => {
    const w = new TokenWindows(seq(50), 4, 4); // range(0, 46, 4) → 12 windows
    const dl = new DataLoader(w, { batchSize: 5 });
    expect(dl.numBatches).toBe(3);
    const bs = [...dl];
    expect(bs.map(starts)).toEqual([
      [0, 4, 8, 12, 16],
      [20, 24, 28, 32, 36],
      [40, 44],
    ]);
    expect(bs[2]!.batchSize).toBe(2);
    expect(Array.from(bs[0]!.inputs.subarray(0, 4))).toEqual([0, 1, 2, 3]);
    expect(Array.from(bs[0]!.targets.subarray(0, 4))).toEqual([1, 2, 3, 4]);
    expect(Array.from(bs[2]!.targets)).toEqual([41, 42, 43, 44, 45, 46, 47, 48]);
  });

  it('dropLast drops only the final partial batch', () => {
    const w = new TokenWindows(seq(50), 4, 4);
    expect(new DataLoader(w, { batchSize: 5, dropLast: true }).numBatches).toBe(2);
    expect(new DataLoader(w, { batchSize: 4, dropLast: true }).numBatches).toBe(3);
    expect(new DataLoader(w, { batchSize: 4, dropLast: false }).numBatches).toBe(3);
    expect(new DataLoader(w, { batchSize: 13, dropLast: true }).numBatches).toBe(0);
    expect(new DataLoader(w, { batchSize: 13, dropLast: false }).numBatches).toBe(1);
    const dl = new DataLoader(w, { batchSize: 5, dropLast: true, shuffle: true, seed: 1 });
    const bs = [...dl];
    expect(bs.length).toBe(2);
    expect(bs.every((b) => b.batchSize === 5)).toBe(true);
  });

  it('shuffles each epoch into a fresh permutation of all windows', () => {
    const w = new TokenWindows(seq(200), 4, 4); // 49 windows
    const dl = new DataLoader(w, { batchSize: 7, shuffle: true, seed: 42 });
    const e0 = [...dl].flatMap(starts);
    const e1 = [...dl].flatMap(starts);
    const all = naiveWindows(seq(200), 4, 4).map((x) => x.input[0]!);
    expect(e0.slice().sort((a, b) => a - b)).toEqual(all);
    expect(e1.slice().sort((a, b) => a - b)).toEqual(all);
    expect(e0).not.toEqual(all);
    expect(e1).not.toEqual(e0);
    expect(dl.epoch).toBe(2);
  });

  it('same seed → same order; different seeds → different orders', () => {
    const w = new TokenWindows(seq(200), 4, 4);
    const order = (seed: number): number[] => drain(new DataLoader(w, { batchSize: 7, shuffle: true, seed }), 21).flatMap(starts);
    expect(order(5)).toEqual(order(5));
    expect(order(5)).not.toEqual(order(6));
  });

  it('resumes mid-epoch from a JSON state with the identical order, even in a loader with another seed', () => {
    const w = new TokenWindows(seq(200), 4, 4); // 49 windows, 7 batches
    const reference = drain(new DataLoader(w, { batchSize: 7, shuffle: true, dropLast: true, seed: 9 }), 30).map(starts);

    const a = new DataLoader(w, { batchSize: 7, shuffle: true, dropLast: true, seed: 9 });
    const firstPart = drain(a, 10).map(starts); // epoch 1, batch 3 next
    expect(a.epoch).toBe(1);
    expect(a.batchIndex).toBe(3);
    const saved = JSON.parse(JSON.stringify(a.getState())) as DataLoaderState;
    expect(saved.epoch).toBe(1);
    expect(saved.batchIndex).toBe(3);

    const b = new DataLoader(w, { batchSize: 7, shuffle: true, dropLast: true, seed: 12345 });
    b.setState(saved);
    const rest = drain(b, 20).map(starts);
    expect([...firstPart, ...rest]).toEqual(reference);
  });

  it('resumes within the first epoch too', () => {
    const w = new TokenWindows(seq(200), 4, 4);
    const reference = drain(new DataLoader(w, { batchSize: 5, shuffle: true, seed: 4 }), 15).map(starts);
    const a = new DataLoader(w, { batchSize: 5, shuffle: true, seed: 4 });
    const head = drain(a, 4).map(starts);
    const b = new DataLoader(w, { batchSize: 5, shuffle: true, seed: 1 });
    b.setState(JSON.parse(JSON.stringify(a.getState())) as DataLoaderState);
    expect([...head, ...drain(b, 11).map(starts)]).toEqual(reference);
  });

  it('a state taken at the start of epoch e regenerates epoch e', () => {
    const w = new TokenWindows(seq(120), 4, 4);
    const a = new DataLoader(w, { batchSize: 3, shuffle: true, seed: 3 });
    [...a];
    [...a];
    const atEpoch2 = a.getState();
    expect(atEpoch2).toMatchObject({ epoch: 2, batchIndex: 0 });
    const order2 = a.epochOrder();
    const epoch2 = [...a].flatMap(starts);
    expect(epoch2).toEqual(Array.from(order2, (i) => i * 4));
    const b = new DataLoader(w, { batchSize: 3, shuffle: true, seed: 3 });
    b.setState(atEpoch2);
    expect(b.epochOrder()).toEqual(order2);
    expect([...b].flatMap(starts)).toEqual(epoch2);
  });

  it('moves to the next epoch as soon as the last batch is handed out', () => {
    const w = new TokenWindows(seq(50), 4, 4);
    const dl = new DataLoader(w, { batchSize: 5 });
    let seen = 0;
    for (const _b of dl) {
      seen++;
      if (seen === 3) {
        expect(dl.getState()).toMatchObject({ epoch: 1, batchIndex: 0 });
      }
    }
    expect(seen).toBe(3);
    // Breaking out keeps the position at the next batch.
    for (const _b of dl) break;
    expect(dl.getState()).toMatchObject({ epoch: 1, batchIndex: 1 });
  });

  it('peek() and batch() read the current order without moving', () => {
    const w = new TokenWindows(seq(200), 4, 4);
    const dl = new DataLoader(w, { batchSize: 7, shuffle: true, seed: 1 });
    const peeked = [...dl.peek(2)].map(starts);
    expect(dl.batchIndex).toBe(0);
    expect(starts(dl.batch(1))).toEqual(peeked[1]);
    expect(drain(dl, 2).map(starts)).toEqual(peeked);
    expect([...dl.peek()].length).toBe(dl.numBatches);
  });

  it('setState rejects states that do not fit this loader', () => {
    const w = new TokenWindows(seq(50), 4, 4);
    const dl = new DataLoader(w, { batchSize: 5, shuffle: true });
    const s = dl.getState();
    const other = new DataLoader(new TokenWindows(seq(60), 4, 4), { batchSize: 5, shuffle: true });
    expect(() => other.setState(s)).toThrow(/windows/);
    expect(() => dl.setState({ ...s, batchIndex: 99 })).toThrow(/batch index/);
    expect(() => dl.setState({ ...s, epoch: -1 })).toThrow(/epoch/);
  });
});

describe('createLoaders', () => {
  it('explains when the text is too short for one training batch', () => {
    let msg = '';
    try {
      createLoaders({ text: 'Every effort moves you, and then some more words here.', contextLength: 256, batchSize: 2 });
    } catch (e) {
      msg = (e as Error).message;
    }
    const trainTokens = textToTokenIds(splitText('Every effort moves you, and then some more words here.', 0.9).train).length;
    expect(msg).toMatch(/training/);
    expect(msg).toContain(`${trainTokens} tokens`);
    expect(msg).toContain('513'); // (2 - 1) * 256 + 256 + 1
    expect(msg).toMatch(/--context-length/);
    expect(msg).toMatch(/--train-ratio/);
    expect(msg).toMatch(/more text/);
  });

  it('explains when the validation split is too short', () => {
    const text = fs.readFileSync(VERDICT, 'utf8');
    expect(() => createLoaders({ text, trainRatio: 0.99, contextLength: 256, batchSize: 2 })).toThrow(/validation split has \d+ tokens.*257/);
  });

  it('needs a full batch for a drop_last train loader, one window without', () => {
    const ids = Array.from({ length: 100 }, (_, i) => i); // 90 train tokens, 10 val
    expect(() => createLoaders({ ids, contextLength: 8, batchSize: 20 })).toThrow(/batch of 20 windows/);
    const ok = createLoaders({ ids, contextLength: 8, batchSize: 20, dropLast: false });
    expect(ok.train.numBatches).toBe(1);
    expect(ok.splitUnit).toBe('tokens');
    expect(ok.trainTokens).toBe(90);
    expect(ok.valTokens).toBe(10);
  });

  it('splits token ids by tokens and windows each part separately', () => {
    const ids = Array.from({ length: 100 }, (_, i) => i);
    const { train, val } = createLoaders({ ids, contextLength: 4, batchSize: 2, shuffle: false, trainRatio: 0.8 });
    expect(train.numWindows).toBe(countWindows(80, 4, 4));
    const firstVal = [...val][0]!;
    expect(Array.from(firstVal.inputs.subarray(0, 4))).toEqual([80, 81, 82, 83]);
  });

  it('validates its arguments', () => {
    expect(() => createLoaders({ contextLength: 4, batchSize: 1 })).toThrow(/exactly one/);
    expect(() => createLoaders({ text: 'x', ids: [1], contextLength: 4, batchSize: 1 })).toThrow(/exactly one/);
    expect(() => createLoaders({ text: 'x', contextLength: 4, batchSize: 0 })).toThrow(/batch size/);
  });
});

describe('loadText', () => {
  it('reads a directory of .txt files sorted by name, joined with <|endoftext|>', () => {
    const dir = path.join(tmp, 'corpus');
    fs.mkdirSync(path.join(dir, 'sub.txt'), { recursive: true }); // a directory named .txt is not a file
    fs.writeFileSync(path.join(dir, 'b.txt'), 'second file');
    fs.writeFileSync(path.join(dir, 'a.txt'), 'first file');
    fs.writeFileSync(path.join(dir, 'c.md'), 'not text');
    expect(loadText(dir)).toBe('first file<|endoftext|>second file');
    const ids = textToTokenIds(loadText(dir));
    expect(ids).toEqual([...textToTokenIds('first file'), EOT_ID, ...textToTokenIds('second file')]);
    expect(loadText([path.join(dir, 'b.txt'), path.join(dir, 'a.txt')])).toBe('second file<|endoftext|>first file');
  });

  it('translates newlines like Python text mode and rejects invalid UTF-8', () => {
    const f = path.join(tmp, 'crlf.txt');
    fs.writeFileSync(f, 'a\r\nb\rc\n');
    expect(loadText(f)).toBe('a\nb\nc\n');
    const bad = path.join(tmp, 'bad.txt');
    fs.writeFileSync(bad, Buffer.from([0x61, 0xff, 0x62]));
    expect(() => loadText(bad)).toThrow(/UTF-8/);
  });

  it('gives clear errors for missing paths, empty directories and directories without .txt', () => {
    expect(() => loadText(path.join(tmp, 'nope.txt'))).toThrow(/not found/);
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    expect(() => loadText(empty)).toThrow(/empty/);
    const noTxt = path.join(tmp, 'notxt');
    fs.mkdirSync(noTxt);
    fs.writeFileSync(path.join(noTxt, 'x.md'), 'hi');
    expect(() => loadText(noTxt)).toThrow(/no \.txt/);
    expect(() => loadText([])).toThrow(/No input/);
  });
});

describe('safe cut points for streaming tokenization', () => {
  const tricky =
    'Hello world\n\nFoo  bar\n x\ny it\'s they\'re\t\tz 123 456\n\n\nend<|endoftext|>abc\ndef émoji😀 ok\n' +
    'a b\nc  d\n\te f\n g 1 2 x\n\ny\r\n' +
    fs.readFileSync(VERDICT, 'utf8').slice(0, 600);

  it('every cut it offers leaves the tokens unchanged', () => {
    const whole = textToTokenIds(tricky);
    const cuts = new Set<number>();
    for (let q = 1; q <= tricky.length; q++) {
      const c = findSafeCut(tricky.slice(0, q));
      if (c > 0) cuts.add(c);
    }
    expect(cuts.size).toBeGreaterThan(20);
    for (const c of cuts) {
      expect([...textToTokenIds(tricky.slice(0, c)), ...textToTokenIds(tricky.slice(c))]).toEqual(whole);
    }
  });

  it('never cuts inside whitespace runs', () => {
    expect(findSafeCut('foo\n\nbar')).toBe(-1);
    expect(findSafeCut('foo  bar')).toBe(-1);
    expect(findSafeCut('foo\n bar')).toBe(-1);
    expect(findSafeCut('foo\nbar')).toBe(4);
    expect(findSafeCut('foo bar')).toBe(3);
  });
});

describe('token files', () => {
  const verdictIds = textToTokenIds(fs.readFileSync(VERDICT, 'utf8'));

  it('round-trips the-verdict.txt', async () => {
    const out = path.join(tmp, 'verdict.tok');
    const res = await pretokenize(VERDICT, out);
    expect(res.tokens).toBe(5145);
    expect(fs.statSync(out).size).toBe(TOKEN_FILE_HEADER_BYTES + 2 * 5145);
    const header = fs.readFileSync(out).subarray(0, TOKEN_FILE_HEADER_BYTES);
    expect(header.toString('latin1', 0, 8)).toBe('GPTCTOK1');
    expect(header.readUInt32LE(8)).toBe(1);
    expect(header.readBigUInt64LE(12)).toBe(5145n);
    const tf = TokenFile.open(out);
    try {
      expect(tf.length).toBe(5145);
      expect(Array.from(tf.read(0, 5145))).toEqual(verdictIds);
      expect(Array.from(tf.read(100, 3))).toEqual(verdictIds.slice(100, 103));
      expect(() => tf.read(5144, 2)).toThrow(RangeError);
    } finally {
      tf.close();
    }
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('streams in small chunks with the same tokens, across files, CRLF and multi-byte characters', async () => {
    const dir = path.join(tmp, 'stream');
    fs.mkdirSync(dir);
    fs.copyFileSync(VERDICT, path.join(dir, '1.txt'));
    fs.writeFileSync(path.join(dir, '2.txt'), 'naïve café\r\nline two 😀😀\r\n\r\nthird — end\rX\r'.repeat(5));
    const expected = textToTokenIds(loadText(dir));
    for (const chunkBytes of [1, 7, 64, 1000, 1 << 20]) {
      const out = path.join(tmp, `stream-${chunkBytes}.tok`);
      const progress: number[] = [];
      const res = await pretokenize(dir, out, { chunkBytes, onProgress: (p) => progress.push(p.bytesDone) });
      expect(res.tokens).toBe(expected.length);
      const tf = TokenFile.open(out);
      expect(Array.from(tf.read(0, tf.length))).toEqual(expected);
      tf.close();
      expect(progress[progress.length - 1]).toBe(res.bytes);
    }
  });

  it('feeds DataLoader exactly like in-memory ids', async () => {
    const out = path.join(tmp, 'verdict2.tok');
    await pretokenize(VERDICT, out);
    const tf = TokenFile.open(out);
    try {
      const fromFile = createLoaders({ ids: tf, contextLength: 64, batchSize: 4, seed: 7 });
      const fromMem = createLoaders({ ids: new ArrayTokenSource(verdictIds), contextLength: 64, batchSize: 4, seed: 7 });
      expect(fromFile.trainTokens).toBe(Math.floor(0.9 * 5145));
      const a = [...fromFile.train, ...fromFile.val];
      const b = [...fromMem.train, ...fromMem.val];
      expect(a.length).toBe(b.length);
      for (let i = 0; i < a.length; i++) {
        expect(Array.from(a[i]!.inputs)).toEqual(Array.from(b[i]!.inputs));
        expect(Array.from(a[i]!.targets)).toEqual(Array.from(b[i]!.targets));
      }
    } finally {
      tf.close();
    }
  });

  it('rejects corrupt headers and truncated files with clear errors', async () => {
    const good = path.join(tmp, 'good.tok');
    await pretokenize(VERDICT, good);
    const bytes = fs.readFileSync(good);

    const badMagic = path.join(tmp, 'badmagic.tok');
    const m = Buffer.from(bytes);
    m.write('NOTATOKN', 0, 'latin1');
    fs.writeFileSync(badMagic, m);
    expect(() => TokenFile.open(badMagic)).toThrow(/not a token file.*magic/);

    const badVersion = path.join(tmp, 'badversion.tok');
    const v = Buffer.from(bytes);
    v.writeUInt32LE(7, 8);
    fs.writeFileSync(badVersion, v);
    expect(() => TokenFile.open(badVersion)).toThrow(/version 7/);

    const truncated = path.join(tmp, 'truncated.tok');
    fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 1));
    expect(() => TokenFile.open(truncated)).toThrow(/truncated or corrupt.*5145 tokens/);

    const tooLong = path.join(tmp, 'toolong.tok');
    fs.writeFileSync(tooLong, Buffer.concat([bytes, Buffer.from([0, 0])]));
    expect(() => TokenFile.open(tooLong)).toThrow(/truncated or corrupt/);

    const tiny = path.join(tmp, 'tiny.tok');
    fs.writeFileSync(tiny, Buffer.from('GPTC'));
    expect(() => TokenFile.open(tiny)).toThrow(/only 4 bytes/);

    expect(() => TokenFile.open(path.join(tmp, 'missing.tok'))).toThrow(/not found/);
  });

  it('leaves no output or temporary file when the input is invalid', async () => {
    const bad = path.join(tmp, 'bad-input.txt');
    fs.writeFileSync(bad, Buffer.from([0x61, 0x62, 0xc3]));
    const out = path.join(tmp, 'never.tok');
    await expect(pretokenize(bad, out)).rejects.toThrow(/UTF-8/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('stores all GPT-2 ids, including the largest', async () => {
    const f = path.join(tmp, 'eot.txt');
    fs.writeFileSync(f, 'x<|endoftext|>y');
    const out = path.join(tmp, 'eot.tok');
    await pretokenize(f, out);
    const tf = TokenFile.open(out);
    expect(Array.from(tf.read(0, tf.length))).toEqual([87, EOT_ID, 88]);
    tf.close();
  });
});
