// Shared command-line plumbing: flag validation (naming the flag and what was
// given), unknown-flag suggestions, and hints written the way the user ran us.
import { basename, delimiter, join, relative, resolve } from 'node:path';
import { existsSync, realpathSync } from 'node:fs';
import type { Argv } from 'yargs';
import type { DeviceRequest } from '../tensor/device.js';
import { PRECISIONS, type Precision } from '../tensor/tensor.js';
import { resolvePresetWeights } from '../weights/load.js';
import { OPENAI_SIZE_OF_PRESET } from '../weights/openai-models.js';

/** The text the user typed for a flag (or one of its aliases), if any. */
export function rawValue(flag: string, aliases: string[] = [], argv: string[] = process.argv.slice(2)): string | undefined {
  const names = [flag, ...aliases].map((n) => `--${n}`);
  let found: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    for (const n of names) {
      if (a === n && i + 1 < argv.length) found = argv[i + 1];
      else if (a.startsWith(`${n}=`)) found = a.slice(n.length + 1);
    }
  }
  return found;
}

/** `(got 2)` for numbers, `(got "abc")` when what was typed is not a number. */
function got(flag: string, v: number): string {
  if (Number.isNaN(v)) {
    const raw = rawValue(flag, FLAG_ALIASES[flag] ?? []);
    return `(got ${JSON.stringify(raw ?? 'NaN')})`;
  }
  return `(got ${v})`;
}

export class Checker {
  check(flag: string, v: number | undefined, ok: (v: number) => boolean, what: string): this {
    if (v !== undefined && !ok(v)) throw new Error(`--${flag} must be ${what} ${got(flag, v)}`);
    return this;
  }
  posInt(flag: string, v: number | undefined): this {
    return this.check(flag, v, (x) => Number.isInteger(x) && x >= 1, 'a positive integer');
  }
  nonNegInt(flag: string, v: number | undefined): this {
    return this.check(flag, v, (x) => Number.isSafeInteger(x) && x >= 0, 'an integer >= 0');
  }
  positive(flag: string, v: number | undefined): this {
    return this.check(flag, v, (x) => Number.isFinite(x) && x > 0, 'a positive number');
  }
  nonNeg(flag: string, v: number | undefined): this {
    return this.check(flag, v, (x) => Number.isFinite(x) && x >= 0, 'a number >= 0');
  }
}

/** --device, as train, eval and generate take it. */
export function deviceOption<T>(y: Argv<T>): Argv<T> {
  return y.option('device', { type: 'string', choices: ['auto', 'cpu', 'cuda'], default: 'auto', describe: 'where to compute (auto: CUDA if usable)' }) as unknown as Argv<T>;
}

/** --dtype, as train, eval and generate take it. */
export function dtypeOption<T>(y: Argv<T>, describe: string): Argv<T> {
  return y.option('dtype', { type: 'string', choices: [...PRECISIONS], describe }) as unknown as Argv<T>;
}

/** The flags eval and generate share: the model they read, where it runs, its precision, and --json. */
export interface ModelCommandArgs {
  weights?: string;
  model?: string;
  modelsDir: string;
  device: DeviceRequest;
  dtype?: Precision;
  json: boolean;
}

/**
 * `usage`, then --weights or --model with --models-dir, then the command's
 * own flags, then --device: the flags of a command that reads a model.
 */
export function modelCommandOptions<T>(y: Argv, usage: string, weightsDescribe: string, own: (y: Argv) => Argv): Argv<T> {
  const withSource = y
    .usage(usage)
    .option('weights', { type: 'string', describe: weightsDescribe })
    .option('model', { type: 'string', choices: Object.keys(OPENAI_SIZE_OF_PRESET), describe: 'downloaded GPT-2 weights in --models-dir (instead of --weights)' })
    .option('models-dir', { type: 'string', default: 'models', describe: 'where `gptcuda download` put the weights' });
  const precision = 'weights, activations and KV cache in float32 or bfloat16 (bf16: half the bytes per token; float32 arithmetic either way) (default: fp32)';
  return dtypeOption(deviceOption(own(withSource as unknown as Argv)), precision) as unknown as Argv<T>;
}

/** The path modelCommandOptions' source flags name, if any. */
export function modelSourcePath(args: { weights?: string; model?: string; modelsDir: string }): string | undefined {
  return args.weights ?? (args.model ? resolvePresetWeights(args.model, args.modelsDir) : undefined);
}

/** nanoGPT / Hugging Face / llm.c names that mean the same as ours. */
export const FLAG_ALIASES: Record<string, string[]> = {
  'n-layers': ['n-layer'],
  'n-heads': ['n-head'],
  'emb-dim': ['n-embd'],
  'context-length': ['block-size'],
  lr: ['learning-rate'],
  'max-steps': ['max-iters'],
  'eval-freq': ['eval-interval'],
  'eval-iter': ['eval-iters'],
  'drop-rate': ['dropout'],
  out: ['output-dir'],
};

export function checkTrainFlags(args: {
  epochs?: number; maxSteps?: number; batchSize?: number; contextLength?: number; embDim?: number; nLayers?: number;
  nHeads?: number; gradAccum?: number; stride?: number; evalFreq?: number; evalIter?: number; saveEvery?: number;
  keepCheckpoints?: number; lr?: number; minLr?: number; weightDecay?: number; gradClip?: number; warmupSteps?: number;
  dropRate?: number; trainRatio?: number; seed?: number;
}): void {
  const c = new Checker();
  const ints: [string, number | undefined][] = [
    ['epochs', args.epochs], ['max-steps', args.maxSteps], ['batch-size', args.batchSize], ['context-length', args.contextLength],
    ['emb-dim', args.embDim], ['n-layers', args.nLayers], ['n-heads', args.nHeads], ['grad-accum', args.gradAccum],
    ['stride', args.stride], ['eval-freq', args.evalFreq], ['eval-iter', args.evalIter], ['save-every', args.saveEvery],
    ['keep-checkpoints', args.keepCheckpoints],
  ];
  for (const [flag, v] of ints) c.posInt(flag, v);
  c.positive('lr', args.lr).nonNeg('min-lr', args.minLr).nonNeg('weight-decay', args.weightDecay).positive('grad-clip', args.gradClip);
  c.check('warmup-steps', args.warmupSteps, (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0');
  c.check('drop-rate', args.dropRate, (v) => v >= 0 && v < 1, 'in [0, 1)');
  c.check('train-ratio', args.trainRatio, (v) => v > 0 && v < 1, 'between 0 and 1');
  c.nonNegInt('seed', args.seed);
}

/** Model-config errors in flag names, checked against the preset's values for flags not given. */
export function checkModelShape(given: { embDim?: number; nHeads?: number }, preset: { embDim: number; nHeads: number }): void {
  const embDim = given.embDim ?? preset.embDim;
  const nHeads = given.nHeads ?? preset.nHeads;
  if (embDim % nHeads !== 0) throw new Error(`--emb-dim (${embDim}) must be divisible by --n-heads (${nHeads})`);
}

export function checkGenerateFlags(args: { maxNewTokens?: number; temperature?: number; topK?: number; topP?: number; seed?: number }): void {
  new Checker()
    .nonNegInt('max-new-tokens', args.maxNewTokens)
    .nonNeg('temperature', args.temperature)
    .posInt('top-k', args.topK)
    .check('top-p', args.topP, (v) => v > 0 && v <= 1, 'in (0, 1]')
    .nonNegInt('seed', args.seed);
}

export function checkEvalFlags(args: { batchSize?: number; contextLength?: number; trainRatio?: number }): void {
  new Checker()
    .posInt('batch-size', args.batchSize)
    .posInt('context-length', args.contextLength)
    .check('train-ratio', args.trainRatio, (v) => v > 0 && v < 1, 'between 0 and 1');
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

export function nearest(name: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const dist = editDistance(name, c);
    if (dist < bestD) [best, bestD] = [c, dist];
  }
  return best !== undefined && bestD <= Math.max(2, Math.ceil(name.length / 2)) ? best : undefined;
}

/** `unknown option --foo-bar; did you mean --foo-baz?` */
export function unknownOptionMessage(unknown: string, flags: string[]): string {
  const name = unknown.replace(/^-+/, '');
  const kebab = name.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);
  const near = nearest(kebab, flags.filter((f) => f.length > 1 && !/[A-Z]/.test(f)));
  return `unknown option --${kebab}${near ? `; did you mean --${near}?` : ''}`;
}

/**
 * How to write a gptcuda command for this user: `npx gptcuda ...` under npx/npm,
 * `gptcuda ...` when that is on PATH and is us, else `node <path>/main.js ...`.
 */
export function commandPrefix(env: NodeJS.ProcessEnv = process.env, argv: string[] = process.argv): string {
  const script = argv[1] ?? '';
  if (env.npm_command === 'exec' || /[\\/]_npx[\\/]/.test(script) || (env.npm_execpath && /npx/.test(env.npm_execpath))) return 'npx gptcuda';
  if (env.npm_lifecycle_event && env.npm_command === 'run-script') return 'npx gptcuda';
  if (basename(script) === 'gptcuda' && !script.includes('/') ) return 'gptcuda';
  const onPath = (env.PATH ?? '').split(delimiter).some((d) => {
    const p = join(d, 'gptcuda');
    try {
      return existsSync(p) && realpathSync(p) === realpathSync(script);
    } catch {
      return false;
    }
  });
  if (onPath) return 'gptcuda';
  const rel = relative(process.cwd(), resolve(script));
  const shown = rel.startsWith('..') || rel === '' ? resolve(script) : rel.startsWith('.') ? rel : `./${rel}`;
  return `node ${shown}`;
}

/** A suggested command, e.g. hint('train --resume runs/x'). */
export function hint(rest: string): string {
  return `${commandPrefix()} ${rest}`;
}

/** "cuBLAS not found" out of "this addon was built without CUDA: not built: cuBLAS not found (set CUBLAS_ROOT ...)". */
export function shortCudaReason(reason: string): string {
  let r = reason;
  for (;;) {
    const next = r.replace(/^(this addon was built without CUDA|not built|CUDA is not available)\s*:\s*/i, '');
    if (next === r) break;
    r = next;
  }
  return r.replace(/\s*\(.*\)\s*$/, '').trim() || reason;
}

/** One short line: `device: cpu (CUDA not available: cuBLAS not found; see gptcuda info)`, under 100 characters. */
export function deviceLine(device: string, request: string, cudaReason: string | undefined): string {
  if (device !== 'cpu' || request !== 'auto' || !cudaReason) return `device: ${device}`;
  const why = shortCudaReason(cudaReason);
  const line = (see: string, w: string) => `device: cpu (CUDA not available: ${w}; see ${see})`;
  let out = line(hint('info'), why);
  if (out.length >= 100) out = line('gptcuda info', why);
  if (out.length >= 100) out = line('gptcuda info', why.slice(0, Math.max(10, why.length - (out.length - 96))) + '…');
  return out;
}
