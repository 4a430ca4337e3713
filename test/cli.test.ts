// The `gptcuda` command line, run as a user would (`node dist/cli/main.js`):
// help for every command, a tiny `train` in text and JSON form, `eval`,
// `generate` (against the library's generate() and stream()), `inspect`,
// `export`, `info`, and the errors a user meets first (no weights, too little
// text, bad flag values): exit status non-zero, a clear message, no stack trace.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readSafetensorsFile } from '../ts/checkpoint/safetensors.js';
import { createLoaders } from '../ts/data/loader.js';
import { loadText } from '../ts/data/text.js';
import { textToTokenIds, tokenIdsToText } from '../ts/data/tokenizer.js';
import { GPTModel } from '../ts/index.js';
import { loaderLoss } from '../ts/train/loss.js';
import { spawnCli, type CliResult } from './helpers/cli.js';

const REPO = resolve(import.meta.dirname, '..');
const MAIN = join(REPO, 'dist', 'cli', 'main.js');
const DATA = join(REPO, 'data', 'the-verdict.txt');

const TINY = [
  '--n-layers', '2', '--emb-dim', '32', '--n-heads', '4', '--context-length', '32', '--batch-size', '2', '--drop-rate', '0.1',
  '--device', 'cpu',
];
/** TINY with one flag's value replaced (a repeated flag would make yargs pass an array). */
const tinyWith = (flag: string, value: string): string[] => TINY.map((a, i) => (TINY[i - 1] === flag ? value : a));

let root: string;


const cli = (args: string[]): Promise<CliResult> => spawnCli(args, { cwd: root });

async function cliOk(args: string[]): Promise<CliResult> {
  const r = await cli(args);
  if (r.code !== 0) throw new Error(`gptcuda ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return r;
}

/** A user-facing failure: non-zero exit, the message on stderr, no stack trace. */
function expectCleanError(r: CliResult, ...patterns: RegExp[]): void {
  expect(r.code, `exit status; stderr: ${r.stderr}`).not.toBe(0);
  expect(r.stderr).toMatch(/^gptcuda: /m);
  expect(r.stderr, 'no stack trace').not.toMatch(/^\s+at .+[:(]/m);
  for (const p of patterns) expect(r.stderr).toMatch(p);
}

type JsonEvent = Record<string, unknown> & { event: string };
const jsonLines = (stdout: string): JsonEvent[] =>
  stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as JsonEvent);

const EVAL_LINE = /^Ep (\d+) \(Step (\d{6})\): Train loss (\d+\.\d{3}), Val loss (\d+\.\d{3})$/;

let textRun: CliResult;
let textDir: string;
let jsonRun: CliResult;
let jsonDir: string;
/** The JSON run's final checkpoint: the fixed model of the commands below. */
let ckpt: string;

beforeAll(async () => {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npx tsc -p tsconfig.json\` first`);
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-cli-test-'));
  textDir = join(root, 'text-run');
  jsonDir = join(root, 'json-run');
  const started = performance.now();
  [textRun, jsonRun] = await Promise.all([
    cliOk(['train', ...TINY, '--max-steps', '9', '--eval-freq', '4', '--eval-iter', '3', '--lr', '2e-3', '--out', textDir]),
    // 7 training batches per epoch and 2 per update: updates of 2, 2, 2 and 1
    // batches, so 6 updates cross into epoch 2.
    cliOk(['train', ...TINY, '--train-ratio', '0.1', '--grad-accum', '2', '--max-steps', '6', '--eval-freq', '3', '--eval-iter', '2', '--save-every', '3', '--out', jsonDir, '--json']),
  ]);
  expect(performance.now() - started, 'tiny training runs take seconds').toBeLessThan(30_000);
  ckpt = join(jsonDir, 'ckpt-step00000006.tar');
});
afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('--help', () => {
  it('every command exits 0 and shows its options and examples', async () => {
    const commands = ['train', 'eval', 'generate', 'download', 'inspect', 'export', 'info'];
    const [top, ...each] = await Promise.all([cli(['--help']), ...commands.map((c) => cli([c, '--help']))]);
    expect(top.code).toBe(0);
    for (const c of commands) expect(top.stdout).toContain(c);
    expect(top.stdout).toContain('Examples:');
    each.forEach((r, i) => {
      expect(r.code, `${commands[i]} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout, commands[i]).toContain(`gptcuda ${commands[i]}`);
      expect(r.stdout, commands[i]).toContain('Examples:');
      expect(r.stdout, commands[i]).toMatch(/--json|--weights|--prompt/);
    });
    expect(each[0]!.stdout).toMatch(/--resume/);
    expect(each[0]!.stdout).toMatch(/--save-every/);
  });
});

describe('train', () => {
  it('text output: the book\'s evaluation lines, and the loss falls', () => {
    const lines = textRun.stdout.split('\n');
    const evals = lines.filter((l) => l.startsWith('Ep '));
    expect(evals.length).toBe(3); // steps 0, 4, 8
    for (const l of evals) expect(l).toMatch(EVAL_LINE);
    expect(evals[0]).toMatch(/^Ep 1 \(Step 000000\): Train loss \d+\.\d{3}, Val loss \d+\.\d{3}$/);
    expect(evals.map((l) => EVAL_LINE.exec(l)![2])).toEqual(['000000', '000004', '000008']);
    const train = evals.map((l) => Number(EVAL_LINE.exec(l)![3]));
    const val = evals.map((l) => Number(EVAL_LINE.exec(l)![4]));
    expect(train[0]).toBeGreaterThan(10); // ln(50257) = 10.8 at initialisation
    expect(train[2]).toBeLessThan(train[0]! - 0.2);
    expect(val[2]).toBeLessThan(val[0]!);
    // The greedy sample of the book's generate_and_print_sample, then the summary.
    expect(textRun.stdout).toMatch(/^Every effort moves you/m);
    expect(textRun.stdout).toMatch(/^done: this invocation: 9 steps, \d+ tokens in /m);
    expect(textRun.stdout).toContain(join(textDir, 'loss-plot.svg'));
    expect(fs.existsSync(join(textDir, 'ckpt-step00000009.tar'))).toBe(true);
  });

  it('--json: one JSON object per line, steps counted from 0, one per optimizer update', () => {
    const lines = jsonRun.stdout.split('\n').filter((l) => l !== '');
    const events = lines.map((l) => JSON.parse(l) as JsonEvent); // throws on any non-JSON line
    expect(lines.every((l) => l.startsWith('{') && l.endsWith('}'))).toBe(true);
    expect(events[0]).toMatchObject({ event: 'start', device: 'cpu', train_batches: 7, total_steps: 6 });
    expect(events[events.length - 1]).toMatchObject({ event: 'done', steps: 6, stopped_early: false, run_dir: jsonDir });

    const steps = events.filter((e) => e.event === 'step');
    expect(steps.map((e) => e.step)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(steps.map((e) => e.epoch)).toEqual([1, 1, 1, 1, 2, 2]);
    // 2 windows x 32 tokens per batch, 2 batches per update (1 at the end of an epoch).
    expect(steps.map((e) => e.tokens_seen)).toEqual([128, 256, 384, 448, 576, 704]);
    for (const s of steps) {
      expect(Object.keys(s).sort()).toEqual(['epoch', 'event', 'loss', 'lr', 'step', 'tokens_seen']);
      expect(s.loss).toBeGreaterThan(5);
      expect(s.loss).toBeLessThan(12);
      expect(s.lr).toBe(4e-4);
    }

    const evals = events.filter((e) => e.event === 'eval');
    expect(evals.map((e) => e.step)).toEqual([0, 3]);
    for (const e of evals) {
      expect(typeof e.train_loss).toBe('number');
      expect(typeof e.val_loss).toBe('number');
      expect(e.tokens_seen).toBe(steps[e.step as number]!.tokens_seen);
    }

    // A sample after each epoch (the book's) and one at the end of the run.
    const samples = events.filter((e) => e.event === 'sample');
    expect(samples.map((e) => e.epoch)).toEqual([1, 2]);
    for (const s of samples) expect(s.text).toMatch(/^Every effort moves you/);

    const checkpoints = events.filter((e) => e.event === 'checkpoint');
    expect(checkpoints.map((e) => e.step)).toEqual([3, 6]);
    expect(checkpoints.map((e) => e.path)).toEqual([join(jsonDir, 'ckpt-step00000003.tar'), ckpt]);
    expect(jsonRun.stderr).toBe('');
  });

  it('the run directory has log.jsonl and loss-plot.svg', () => {
    for (const dir of [textDir, jsonDir]) {
      const log = fs.readFileSync(join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as JsonEvent);
      expect(log[0]!.event).toBe('start');
      expect(log[log.length - 1]!.event).toBe('done');
      expect(log.filter((e) => e.event === 'step').length).toBeGreaterThan(0);
      const svg = fs.readFileSync(join(dir, 'loss-plot.svg'), 'utf8');
      expect(svg).toMatch(/<svg[\s>]/);
      expect(svg.trimEnd()).toMatch(/<\/svg>$/);
    }
    // The log holds what --json printed.
    const log = fs.readFileSync(join(jsonDir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as JsonEvent);
    const printed = jsonLines(jsonRun.stdout);
    const pick = (es: JsonEvent[]) => es.filter((e) => e.event === 'step' || e.event === 'eval');
    expect(pick(log)).toEqual(pick(printed));
  });
});

describe('eval, generate, inspect, export, info', () => {
  it('eval --json: losses over every window and perplexity = exp(loss), as the library computes them', async () => {
    // The first 4,000 characters of the bundled text keep this quick.
    const data = join(root, 'verdict-head.txt');
    fs.writeFileSync(data, loadText(DATA).slice(0, 4000));
    const r = await cliOk(['eval', '--weights', ckpt, '--data', data, '--json', '--batch-size', '4']);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    const out = JSON.parse(r.stdout) as Record<string, number>;
    expect(Object.keys(out).sort()).toEqual(['train_loss', 'train_perplexity', 'train_tokens', 'val_loss', 'val_perplexity', 'val_tokens']);
    expect(out.train_perplexity).toBeCloseTo(Math.exp(out.train_loss!), 9);
    expect(out.val_perplexity).toBeCloseTo(Math.exp(out.val_loss!), 9);
    expect(out.train_perplexity! / Math.exp(out.train_loss!)).toBeCloseTo(1, 12);

    const loaders = createLoaders({ text: loadText(data), contextLength: 32, batchSize: 4, shuffle: false, dropLast: false });
    expect(loaders.train.numWindows).toBeGreaterThan(10);
    expect(out.train_tokens).toBe(loaders.train.numWindows * 32);
    expect(out.val_tokens).toBe(loaders.val.numWindows * 32);
    const model = await GPTModel.load(ckpt);
    try {
      expect(out.train_loss).toBe(loaderLoss(model, loaders.train));
      expect(out.val_loss).toBe(loaderLoss(model, loaders.val));
    } finally {
      model.dispose();
    }
  });

  it('generate without --weights fails and says how to get weights', async () => {
    expectCleanError(await cli(['generate', '--prompt', 'Hello']), /--weights/, /(gptcuda|main\.js) train`/, /(gptcuda|main\.js) download/);
  });

  it('greedy generation is identical through the CLI (text and --json), model.generate() and model.stream()', async () => {
    const prompt = 'Every effort moves you';
    const args = ['generate', '--weights', ckpt, '--prompt', prompt, '--max-new-tokens', '12'];
    const [jsonOut, textOut] = await Promise.all([cliOk([...args, '--json']), cliOk(args)]);
    const out = JSON.parse(jsonOut.stdout) as { ids: number[]; text: string; tokens_per_s: number };
    expect(Object.keys(out).sort()).toEqual(['ids', 'text', 'tokens_per_s']);
    const promptIds = textToTokenIds(prompt);
    expect(out.ids).toHaveLength(promptIds.length + 12);
    expect(out.ids.slice(0, promptIds.length)).toEqual(promptIds);
    expect(out.text).toBe(tokenIdsToText(out.ids));
    expect(out.tokens_per_s).toBeGreaterThan(0);
    expect(textOut.stdout).toBe(out.text + '\n');

    const model = await GPTModel.load(ckpt);
    try {
      expect(await model.generate(promptIds, { maxNewTokens: 12 })).toEqual(out.ids);
      const streamed: number[] = [];
      for await (const t of model.stream(promptIds, { maxNewTokens: 12 })) streamed.push(t);
      expect([...promptIds, ...streamed]).toEqual(out.ids);
    } finally {
      model.dispose();
    }
  });

  it('inspect --json lists the tensors of a checkpoint and of an OpenAI-layout TensorFlow folder', async () => {
    const [ours, tf] = await Promise.all([
      cliOk(['inspect', ckpt, '--json']),
      cliOk(['inspect', join(REPO, 'test', 'fixtures', 'tf', 'keras-gpt2-toy'), '--json']),
    ]);
    type Inspect = { format: string; config: Record<string, number>; tensors: { name: string; dtype: string; shape: number[]; bytes: number }[]; total_bytes: number };
    const a = JSON.parse(ours.stdout) as Inspect;
    expect(a.format).toBe('gptcuda-checkpoint');
    expect(a.config).toMatchObject({ vocab_size: 50257, context_length: 32, emb_dim: 32, n_heads: 4, n_layers: 2 });
    const tok = a.tensors.find((t) => t.name === 'model.safetensors:tok_emb.weight');
    expect(tok).toEqual({ name: 'model.safetensors:tok_emb.weight', dtype: 'F32', shape: [50257, 32], bytes: 50257 * 32 * 4 });
    expect(a.tensors.map((t) => t.name)).toContain('optimizer.safetensors:exp_avg');
    expect(a.total_bytes).toBe(a.tensors.reduce((s, t) => s + t.bytes, 0));

    const b = JSON.parse(tf.stdout) as Inspect;
    expect(b.format).toBe('openai-tf');
    expect(b.config).toEqual({ n_vocab: 356, n_ctx: 20, n_embd: 15, n_head: 5, n_layer: 3 });
    expect(b.tensors).toContainEqual({ name: 'model/wte', dtype: 'float32', shape: [356, 15], bytes: 356 * 15 * 4 });
    expect(b.tensors.length).toBeGreaterThan(30);
  });

  it('export --format hf writes model.safetensors and config.json (and they load back to the same logits)', async () => {
    const out = join(root, 'hf-export');
    const r = await cliOk(['export', '--weights', ckpt, '--format', 'hf', '--out', out]);
    expect(r.stdout).toContain('model.safetensors');
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
    const config = JSON.parse(fs.readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ model_type: 'gpt2', vocab_size: 50257, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, tie_word_embeddings: false });
    const { tensors } = await readSafetensorsFile(join(out, 'model.safetensors'));
    const names = [...tensors.keys()];
    expect(names).toContain('transformer.wte.weight');
    expect(names).toContain('transformer.h.1.attn.c_attn.weight');
    expect(names).toContain('lm_head.weight');

    // Reading the export back gives the checkpoint's logits.
    const [orig, back] = [await GPTModel.load(ckpt), await GPTModel.load(out)];
    try {
      const ids = Int32Array.from(textToTokenIds('Every effort moves you forward'));
      orig.forward(ids, 1, ids.length);
      back.forward(ids, 1, ids.length);
      const x = orig.logits().toFloat32Array();
      const y = back.logits().toFloat32Array();
      let max = 0;
      for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i]! - y[i]!));
      expect(max).toBeLessThan(1e-5);
    } finally {
      orig.dispose();
      back.dispose();
    }
  });

  it('info --json parses and explains when CUDA is unavailable', async () => {
    const r = await cliOk(['info', '--json']);
    const info = JSON.parse(r.stdout) as { version: string; backends: { cpu: { threads: number }; cuda: { available: boolean; reason?: string } }; devices: { device: string }[] };
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(info.backends.cpu.threads).toBeGreaterThan(0);
    expect(typeof info.backends.cuda.available).toBe('boolean');
    expect(info.devices[0]!.device).toBe('cpu');
    if (!info.backends.cuda.available) {
      expect(info.backends.cuda.reason).toMatch(/\w{4}/);
      expect(info.devices.map((d) => d.device)).toEqual(['cpu']);
    } else {
      expect(info.devices.map((d) => d.device)).toContain('cuda');
    }
  });
});

describe('clear errors', () => {
  it('a text too short for one window', async () => {
    const short = join(root, 'short.txt');
    fs.writeFileSync(short, 'Every effort moves you.\n');
    expectCleanError(await cli(['train', ...TINY, '--data', short, '--out', join(root, 'short-run')]), /Not enough text/, /--context-length/);
  });

  it('bad flag values', async () => {
    const results = await Promise.all([
      cli(['train', ...tinyWith('--batch-size', '-2'), '--out', join(root, 'bad-1')]),
      cli(['train', ...TINY, '--max-steps', '-1', '--out', join(root, 'bad-2')]),
      cli(['train', ...TINY, '--lr', 'abc', '--out', join(root, 'bad-3')]),
      cli(['train', '--init-from', ckpt, '--context-length', '64', '--out', join(root, 'bad-4')]),
      cli(['eval', '--weights', ckpt, '--context-length', '64']),
    ]);
    expectCleanError(results[0]!, /--batch-size must be a positive integer \(got -2\)/);
    expectCleanError(results[1]!, /--max-steps must be a positive integer \(got -1\)/);
    expectCleanError(results[2]!, /--lr must be a positive number \(got "abc"\)/);
    expectCleanError(results[3]!, /--context-length 64 exceeds the model's context length 32/);
    expectCleanError(results[4]!, /--context-length 64 exceeds the model's context length 32/);
    // Nothing was trained or written for the rejected runs.
    for (const d of ['bad-1', 'bad-2', 'bad-3']) expect(fs.existsSync(join(root, d))).toBe(false);
  });

  it('weights that are not a checkpoint', async () => {
    const junk = join(root, 'junk.tar');
    fs.writeFileSync(junk, Buffer.alloc(2048, 'junk'));
    const missing = join(root, 'nope.tar');
    const [a, b] = await Promise.all([cli(['generate', '--weights', junk]), cli(['eval', '--weights', missing])]);
    expectCleanError(a, /unrecognised weights file/);
    expectCleanError(b, /weights not found/);
  });
});

describe('tokenize', () => {
  it('writes a token file that train streams, split by tokens, with the same windows as the text', async () => {
    const tok = join(root, 'verdict.tok');
    const r = await cliOk(['tokenize', DATA, '--out', tok, '--json']);
    expect(JSON.parse(r.stdout.trim())).toMatchObject({ tokens: 5145 });
    const run = await cliOk(['train', '--data', tok, ...TINY, '--max-steps', '2', '--out', join(root, 'tokrun'), '--json']);
    const start = jsonLines(run.stdout).find((e) => e.event === 'start')!;
    // 90% of 5,145 tokens, split by tokens rather than characters.
    expect(start.train_tokens).toBe(Math.floor(0.9 * 5145));
    expect(jsonLines(run.stdout).filter((e) => e.event === 'step')).toHaveLength(2);
  });
});
