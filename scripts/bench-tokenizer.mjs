#!/usr/bin/env node
// Tokenization throughput, ours vs Python's tiktoken on 2 threads, in one run
// on the same text, with the ids compared.
//
//   node scripts/bench-tokenizer.mjs [--mb N] [--runs N]
//
// The text is documents joined by <|endoftext|>: the book's the-verdict.txt
// and seeded varied-Unicode documents (accents, CJK, emoji, digits of other
// scripts, odd whitespace). Joining at <|endoftext|> lets tiktoken encode the
// documents as a batch on 2 threads (encode_ordinary_batch) and still give the
// ids of the whole text. tiktoken has no network here, so its GPT-2 encoding
// is built from the ranks that ship in js-tiktoken. Needs dist/ (npm run
// build:ts) and `pip install tiktoken`. Best of --runs, ours and tiktoken
// interleaved, so background load hits both alike.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const targetMB = arg('--mb', 8);
const runs = arg('--runs', 3);

const { textToTokenIdsAsync, tokenizerThreads } = await import(
  pathToFileURL(path.join(root, 'dist/data/tokenizer.js')).href
);

// Seeded varied text: a small LCG so the documents are the same every run.
let seed = 12345;
const rand = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
const words = ['the', 'Gisburn', "didn't", 'café', 'naïve', 'Ærø', 'straße', 'Москва', 'Ελλάδα', '東京', 'こんにちは',
  '한국어', 'مرحبا', 'שלום', '١٢٣', '४५६', '2026', '3.14159', '😀', '👩‍💻', 'e\u0301', "'LL", "'S", '$%&', '--', '...'];
const spaces = [' ', ' ', ' ', '  ', '\n', '\n\n', '\t', '\u00a0', '\u3000', '\r\n'];
function variedDocument(chars) {
  let s = '';
  while (s.length < chars) s += words[rand(words.length)] + spaces[rand(spaces.length)];
  return s;
}
const verdict = readFileSync(path.join(root, 'data/the-verdict.txt'), 'utf8');
const docs = [];
let bytes = 0;
while (bytes < targetMB * 1e6) {
  const doc = docs.length % 2 === 0 ? verdict : variedDocument(20_000);
  docs.push(doc);
  bytes += Buffer.byteLength(doc) + 13;
}
const text = docs.join('<|endoftext|>');
const mb = Buffer.byteLength(text) / 1e6;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'bench-tok-'));
try {
  const require = createRequire(path.join(root, 'package.json'));
  const ranksFile = require.resolve('js-tiktoken/ranks/gpt2');
  const ranks = (await import(pathToFileURL(ranksFile).href)).default;
  writeFileSync(path.join(tmp, 'ranks.json'), JSON.stringify(ranks));
  writeFileSync(path.join(tmp, 'docs.json'), JSON.stringify(docs));
  const py = String.raw`
import base64, json, sys, time
import tiktoken
d = sys.argv[1]
r = json.load(open(d + "/ranks.json"))
ranks = {}
for line in r["bpe_ranks"].split("\n"):
    if not line: continue
    parts = line.split(" ")
    off = int(parts[1])
    for i, tok in enumerate(parts[2:]):
        ranks[base64.b64decode(tok)] = off + i
enc = tiktoken.Encoding("gpt2", pat_str=r["pat_str"], mergeable_ranks=ranks, special_tokens=r["special_tokens"])
docs = json.load(open(d + "/docs.json"))
enc.encode_ordinary_batch(docs[:4], num_threads=2)
t = time.perf_counter()
out = enc.encode_ordinary_batch(docs, num_threads=2)
sec = time.perf_counter() - t
ids = []
for i, o in enumerate(out):
    if i: ids.append(50256)
    ids.extend(o)
open(d + "/tiktoken.ids", "w").write(" ".join(map(str, ids)))
print(json.dumps({"seconds": sec, "version": tiktoken.__version__}))
`;
  writeFileSync(path.join(tmp, 'tiktoken_bench.py'), py);

  await textToTokenIdsAsync(verdict); // warm up the rank table and thread pool
  let oursBest = Infinity;
  let theirsBest = Infinity;
  let version = '';
  let ours;
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    ours = await textToTokenIdsAsync(text);
    oursBest = Math.min(oursBest, (performance.now() - t0) / 1e3);
    const res = JSON.parse(execFileSync('python3', [path.join(tmp, 'tiktoken_bench.py'), tmp], { encoding: 'utf8' }));
    theirsBest = Math.min(theirsBest, res.seconds);
    version = res.version;
  }
  const theirs = readFileSync(path.join(tmp, 'tiktoken.ids'), 'utf8').split(' ').map(Number);
  let same = theirs.length === ours.length;
  for (let i = 0; same && i < ours.length; i++) same = ours[i] === theirs[i];
  const cpu = (os.cpus()[0]?.model ?? 'unknown CPU').trim();
  const rows = [
    ['gptcuda', `${tokenizerThreads()} threads`, (mb / oursBest).toFixed(1)],
    [`tiktoken ${version}`, '2 threads', (mb / theirsBest).toFixed(1)],
  ];
  console.log(`tokenization of ${mb.toFixed(1)} MB (${docs.length} documents), ${cpu}, best of ${runs}`);
  console.log('tokenizer'.padEnd(18) + 'threads'.padEnd(12) + 'MB/s');
  for (const r of rows) console.log(r[0].padEnd(18) + r[1].padEnd(12) + r[2]);
  console.log(`ratio ours/tiktoken: ${(theirsBest / oursBest).toFixed(2)}x; ids identical: ${same ? 'yes' : 'NO'} (${ours.length} tokens)`);
  if (!same) process.exitCode = 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
