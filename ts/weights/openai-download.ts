/**
 * Downloads OpenAI's released GPT-2 checkpoints (the TensorFlow files) with
 * resumable transfers, mirror fallback and end-to-end verification.
 *
 * Design choices:
 * - Each file is fetched into `<file>.partial` and renamed only when complete,
 *   so the presence of `<file>` means "finished"; an interrupted run resumes
 *   from the partial with an HTTP Range request instead of starting over
 *   (the 1558M data file is 6.2 GB).
 * - Sizes are checked against a table of known sizes and the server's
 *   Content-Length; after that the checkpoint's own per-tensor CRC32Cs are
 *   verified, which catches corruption that a size check cannot.
 * - A run where every file is already present and verified touches no network,
 *   so `gptcuda download` is safe to call before every offline training run.
 */

import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { formatBytes } from '../io/bytes.js';
import { gpt2ParamCount, OPENAI_GPT2_HPARAMS, OPENAI_MODEL_SIZES, type OpenAIModelSize } from './openai-models.js';
import { openTfCheckpoint, TfCheckpointError } from './tf-checkpoint.js';

// ---------------------------------------------------------------------------
// Files

export const OPENAI_FILES = [
  'checkpoint',
  'encoder.json',
  'hparams.json',
  'model.ckpt.data-00000-of-00001',
  'model.ckpt.index',
  'model.ckpt.meta',
  'vocab.bpe',
] as const;
export type OpenAIFile = (typeof OPENAI_FILES)[number];

const DATA_FILE: OpenAIFile = 'model.ckpt.data-00000-of-00001';
const INDEX_FILE: OpenAIFile = 'model.ckpt.index';

export const OPENAI_BASE_URL = 'https://openaipublic.blob.core.windows.net/gpt-2/models';
export const FALLBACK_MIRROR_URL = 'https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2';

/**
 * Known byte sizes. The data file holds float32 tensors back to back, so its
 * size is 4 x the parameter count; the 124M and 355M figures are also the
 * observed sizes of the published files. Index sizes are known for the two
 * smaller models only; other files are checked against Content-Length.
 */
export const OPENAI_KNOWN_SIZES: Record<OpenAIModelSize, Partial<Record<OpenAIFile, number>>> = {
  '124M': { [DATA_FILE]: 497_759_232, [INDEX_FILE]: 5_215 },
  '355M': { [DATA_FILE]: 1_419_292_672, [INDEX_FILE]: 10_399 },
  '774M': { [DATA_FILE]: 4 * gpt2ParamCount(OPENAI_GPT2_HPARAMS['774M']) },
  '1558M': { [DATA_FILE]: 4 * gpt2ParamCount(OPENAI_GPT2_HPARAMS['1558M']) },
};

// ---------------------------------------------------------------------------
// Public API types

export interface DownloadProgress {
  file: OpenAIFile;
  /** Bytes present so far (including bytes from a resumed partial file). */
  bytes: number;
  /** Final size, or null while unknown. */
  total: number | null;
  /** Transfer rate in bytes per second over this run's transfer of the file (0 when nothing was fetched). */
  rate: number;
  /**
   * 'download' while bytes arrive, 'done' when a file finished, 'skipped' for a
   * file already complete, 'verify' while tensor CRCs are checked (file is the
   * data file, bytes/total count tensor bytes hashed).
   */
  phase: 'download' | 'done' | 'skipped' | 'verify';
  /** URL being fetched ('download' and 'done'). */
  url?: string;
}

export interface DownloadOptions {
  model: OpenAIModelSize;
  /** Parent folder; files go into `<dir>/<model>/`. */
  dir: string;
  /**
   * Extra server to try after the built-in ones. Files are fetched from
   * `<mirror>/<model>/<file>`, or, if the string contains `{model}` / `{file}`,
   * from the string with those substituted.
   */
  mirror?: string;
  /** Replaces the primary server (default {@link OPENAI_BASE_URL}); same URL rules as `mirror`. */
  baseUrl?: string;
  /** Servers tried after the primary (default [{@link FALLBACK_MIRROR_URL}]). */
  fallbackUrls?: string[];
  /** Replaces the built-in table of known sizes for this model (tests, private mirrors). */
  expectedSizes?: Partial<Record<OpenAIFile, number>>;
  onProgress?: (p: DownloadProgress) => void;
  /** Short human-readable notes (fallbacks, retries, deletions). */
  onLog?: (message: string) => void;
  /**
   * Check every tensor's CRC32C after downloading (default true). The check is
   * remembered in `.gptcuda-verified.json`, so unchanged files are not rehashed.
   */
  verify?: boolean;
  /** Consecutive failed attempts without progress before leaving a server (default 4). */
  maxAttempts?: number;
  /** First retry delay in ms, doubled per failure up to 30 s (default 1000). */
  retryDelayMs?: number;
  /** Abort and retry a transfer that receives nothing for this long (default 30 s). */
  stallTimeoutMs?: number;
  /** Abort and retry a request whose response headers take longer than this (default 30 s). */
  connectTimeoutMs?: number;
  /**
   * Give up on a file from one server after this long in all, retries included
   * (default: 10 min, or the time the file takes at 50 kB/s when its size is known, whichever is longer).
   */
  fileTimeoutMs?: number;
  /** Attempts per file per server in all, even when each one made progress (default 50). */
  maxTotalAttempts?: number;
  /**
   * What the small files must hold to count as complete (they are served without a
   * Content-Length, so a cut transfer looks finished): default the released models' 50257 tokens and 50000 merges.
   */
  expectedVocab?: { encoderEntries: number; merges: number };
  signal?: AbortSignal;
}

export interface DownloadedFile {
  file: OpenAIFile;
  path: string;
  bytes: number;
  /** False when the file was already complete and skipped. */
  downloaded: boolean;
  url?: string;
}

export interface DownloadResult {
  model: OpenAIModelSize;
  /** `<dir>/<model>`: pass this to openTfCheckpoint. */
  dir: string;
  files: DownloadedFile[];
  /** True when tensor CRCs were checked in this run (false when skipped as already verified, or verify: false). */
  verified: boolean;
}

export type DownloadErrorCode = 'OFFLINE' | 'HTTP' | 'NETWORK' | 'DISK_FULL' | 'SIZE_MISMATCH' | 'CORRUPT' | 'ABORTED' | 'IO';

export class DownloadError extends Error {
  constructor(
    message: string,
    readonly code: DownloadErrorCode,
    options?: { cause?: unknown; details?: string[] },
  ) {
    super(message, options);
    this.name = 'DownloadError';
    this.details = options?.details ?? [];
  }

  /** What each server answered, when every one failed (the message names only the last). */
  readonly details: string[];
}

// ---------------------------------------------------------------------------
// Helpers

const STAMP_FILE = '.gptcuda-verified.json';
/** Download small files first so a bad server or missing network shows up before the long transfer. */
const DOWNLOAD_ORDER: OpenAIFile[] = [
  'checkpoint',
  'hparams.json',
  'encoder.json',
  'vocab.bpe',
  'model.ckpt.index',
  'model.ckpt.meta',
  'model.ckpt.data-00000-of-00001',
];
/** Error codes meaning "could not connect at all": the machine is offline or the host is unreachable. */
const UNREACHABLE_CODES = new Set([
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNREFUSED',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'UND_ERR_CONNECT_TIMEOUT',
]);

function buildUrl(base: string, model: string, file: string): string {
  if (base.includes('{file}') || base.includes('{model}')) {
    return base.replaceAll('{model}', model).replaceAll('{file}', file);
  }
  return `${base.replace(/\/+$/, '')}/${model}/${file}`;
}

/** Finds a system error code in an error or its cause chain (fetch wraps them: TypeError('fetch failed').cause). */
function errorCode(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 5) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (Array.isArray(e.errors)) {
    for (const sub of e.errors) {
      const c = errorCode(sub, depth + 1);
      if (c) return c;
    }
  }
  return errorCode(e.cause, depth + 1);
}

function errorText(err: unknown): string {
  const code = errorCode(err);
  const msg = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : undefined;
  const detail = cause && cause !== msg ? `${msg}: ${cause}` : msg;
  return code && !detail.includes(code) ? `${detail} (${code})` : detail;
}

async function fileSize(p: string): Promise<number | undefined> {
  try {
    return (await fsp.stat(p)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Why one server could not deliver a file; collected to explain a final failure. */
class SourceFailure extends Error {
  constructor(
    readonly kind: 'unreachable' | 'http' | 'size' | 'network' | 'incomplete',
    readonly url: string,
    message: string,
  ) {
    super(message);
  }
}

/** Failures that no other server can fix (disk full, permissions, cancellation). */
class FatalError extends Error {
  constructor(readonly error: DownloadError) {
    super(error.message);
  }
}

function parseContentRange(v: string | null): { start: number; total: number | null } | { unsatisfied: number | null } | null {
  if (!v) return null;
  let m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(v.trim());
  if (m) return { start: Number(m[1]), total: m[3] === '*' ? null : Number(m[3]) };
  m = /^bytes\s+\*\/(\d+|\*)$/i.exec(v.trim());
  if (m) return { unsatisfied: m[1] === '*' ? null : Number(m[1]) };
  return null;
}

// ---------------------------------------------------------------------------
// Small files: OpenAI serves them without a Content-Length, so a transfer cut
// short can look complete. They count as complete only when they parse.

export interface VocabFacts {
  encoderEntries: number;
  merges: number;
}
/** encoder.json and vocab.bpe of every released model: 50257 tokens = 256 bytes + 50000 merges + <|endoftext|>. */
export const OPENAI_VOCAB: VocabFacts = { encoderEntries: 50257, merges: 50000 };
const SMALL_FILES: ReadonlySet<OpenAIFile> = new Set<OpenAIFile>(['checkpoint', 'encoder.json', 'hparams.json', 'vocab.bpe']);
const HPARAM_KEYS = ['n_vocab', 'n_ctx', 'n_embd', 'n_head', 'n_layer'] as const;

/** Why a small file is not a complete copy, or null when it is (or is not a small file). */
export function smallFileProblem(file: OpenAIFile, text: string, facts: VocabFacts = OPENAI_VOCAB): string | null {
  if (!SMALL_FILES.has(file)) return null;
  if (file === 'checkpoint') {
    return /^model_checkpoint_path: "model\.ckpt"\n(all_model_checkpoint_paths: "[^"\n]*"\n)*$/.test(text)
      ? null
      : 'does not name model.ckpt (or is cut short)';
  }
  if (file === 'vocab.bpe') {
    if (!text.startsWith('#version:')) return 'has no #version line';
    if (!text.endsWith('\n')) return 'does not end with a newline (cut short?)';
    const merges = text.slice(text.indexOf('\n') + 1, -1).split('\n');
    if (merges.length !== facts.merges) return `holds ${merges.length} merges, expected ${facts.merges}`;
    const bad = merges.findIndex((m) => m.split(' ').length !== 2);
    return bad < 0 ? null : `merge line ${bad + 2} is not two tokens`;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return 'is not valid JSON (cut short?)';
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) return 'is not a JSON object';
  const obj = json as Record<string, unknown>;
  if (file === 'hparams.json') {
    const missing = HPARAM_KEYS.filter((k) => !(Number.isInteger(obj[k]) && (obj[k] as number) > 0));
    return missing.length === 0 ? null : `lacks positive integer ${missing.join(', ')}`;
  }
  const n = Object.keys(obj).length;
  return n === facts.encoderEntries ? null : `holds ${n} tokens, expected ${facts.encoderEntries}`;
}

async function smallFileProblemOnDisk(file: OpenAIFile, p: string, facts: VocabFacts): Promise<string | null> {
  if (!SMALL_FILES.has(file)) return null;
  return smallFileProblem(file, await fsp.readFile(p, 'utf8'), facts);
}

// ---------------------------------------------------------------------------
// One file from one server

interface TransferContext {
  model: OpenAIModelSize;
  file: OpenAIFile;
  partial: string;
  expected: number | undefined;
  maxAttempts: number;
  retryDelayMs: number;
  stallTimeoutMs: number;
  connectTimeoutMs: number;
  fileTimeoutMs: number;
  maxTotalAttempts: number;
  vocab: VocabFacts;
  signal: AbortSignal | undefined;
  onProgress: ((p: DownloadProgress) => void) | undefined;
  log: (m: string) => void;
}

/**
 * Brings `ctx.partial` to the complete file from `url`, resuming what is
 * already there. Throws SourceFailure when this server cannot deliver it,
 * FatalError when nothing else would help.
 */
async function fetchFromSource(url: string, ctx: TransferContext): Promise<void> {
  /** Set once the server answered a resume request from byte 0: from then on only a finished transfer is progress. */
  let rangeBroken = false;
  const startedAt = Date.now();
  const retry: RetryBudget = { failures: 0, attempts: 0, startedAt };
  const rate = { fetched: 0 }; // bytes received in this call, for the rate

  for (;;) {
    retry.attempts++;
    /** Set when this attempt did not move the file forward whatever its byte count says (restart from 0, bad content). */
    let noProgress = false;
    if (ctx.signal?.aborted) throw cancelledError(ctx);
    let have = (await fileSize(ctx.partial)) ?? 0;
    if (ctx.expected !== undefined && have > ctx.expected) {
      // Longer than the real file: not a prefix of it, so it cannot be resumed.
      ctx.log(`${ctx.partial} is larger than ${ctx.file} should be; starting it over`);
      await fsp.truncate(ctx.partial, 0);
      have = 0;
    }

    const attemptStartBytes = have;
    let kindOfRetry: 'network' | 'incomplete' = 'network';
    const retryable = async (why: string): Promise<void> => {
      const now = (await fileSize(ctx.partial)) ?? 0;
      await backOff(retry, { why, kind: kindOfRetry, progressed: now > attemptStartBytes && !noProgress && !rangeBroken, at: now }, url, ctx);
    };

    const watch = watchAttempt(ctx, startedAt);
    try {
      const headers: Record<string, string> = { 'accept-encoding': 'identity' };
      if (have > 0) headers.range = `bytes=${have}-`;
      let res: Response;
      watch.arm(ctx.connectTimeoutMs);
      if (retry.attempts === 1) {
        // A first notice right away, before the server answers (an unresponsive server must not look like a hang).
        ctx.onProgress?.({ file: ctx.file, bytes: have, total: ctx.expected ?? null, rate: 0, phase: 'download', url });
      }
      try {
        res = await fetch(url, { headers, signal: watch.signal, redirect: 'follow' });
      } catch (err) {
        if (watch.cancelled()) throw cancelledError(ctx);
        const code = errorCode(err);
        if (!watch.stalled && code && UNREACHABLE_CODES.has(code)) {
          throw new SourceFailure('unreachable', url, `cannot connect (${code})`);
        }
        await retryable(watch.stalled ? `server did not answer within ${ctx.connectTimeoutMs / 1000} s` : `request failed: ${errorText(err)}`);
        continue;
      }

      watch.arm();
      const start = await bodyStart(res, have, url, ctx);
      if (start.kind === 'complete') return;
      if (start.kind === 'retry') {
        if (start.rangeBroken) rangeBroken = true;
        await retryable(start.why);
        continue;
      }
      if (start.rangeBroken) rangeBroken = true;
      const { total, append } = start;
      have = start.have;

      const { bytes, bodyError } = await writeBody(res, { url, total, append, have, startedAt, rate, arm: () => watch.arm() }, ctx);
      if (watch.cancelled()) throw cancelledError(ctx);
      if (bodyError !== undefined || (total !== null && bytes < total)) {
        const why = watch.stalled
          ? `transfer stalled at byte ${bytes}`
          : `connection lost at byte ${bytes}${total !== null ? ` of ${total}` : ''}` +
            (bodyError !== undefined ? ` (${errorText(bodyError)})` : '');
        await retryable(why);
        continue;
      }
      const problem = await receivedProblem(bytes, url, ctx);
      if (problem !== null) {
        noProgress = true;
        kindOfRetry = 'incomplete';
        await retryable(problem);
        continue;
      }
      ctx.onProgress?.({ file: ctx.file, bytes, total, rate: transferRate(rate.fetched, startedAt), phase: 'done', url });
      return;
    } finally {
      watch.dispose();
    }
  }
}

/** One server's chances at one file. */
interface RetryBudget {
  /** Consecutive failed attempts without progress. */
  failures: number;
  attempts: number;
  readonly startedAt: number;
}

/**
 * Waits before the next attempt (doubling from ctx.retryDelayMs, back to the
 * first delay after progress), or throws SourceFailure once the server has
 * used up its attempts or the file's time.
 */
async function backOff(
  b: RetryBudget,
  failure: { why: string; kind: 'network' | 'incomplete'; progressed: boolean; at: number },
  url: string,
  ctx: TransferContext,
): Promise<void> {
  const { why, kind } = failure;
  b.failures = failure.progressed ? 1 : b.failures + 1;
  if (b.failures >= ctx.maxAttempts) {
    throw new SourceFailure(kind, url, `${why} (gave up after ${b.failures} attempts without progress)`);
  }
  if (b.attempts >= ctx.maxTotalAttempts) {
    throw new SourceFailure(kind, url, `${why} (gave up after ${b.attempts} attempts)`);
  }
  const delay = Math.min(30_000, ctx.retryDelayMs * 2 ** (b.failures - 1));
  if (Date.now() + delay - b.startedAt > ctx.fileTimeoutMs) {
    throw new SourceFailure(kind, url, `${why} (gave up after ${((Date.now() - b.startedAt) / 1000).toFixed(1)} s on this file)`);
  }
  ctx.log(`${ctx.file}: ${why}; retrying from byte ${failure.at} in ${(delay / 1000).toFixed(1)} s`);
  try {
    await sleep(delay, ctx.signal);
  } catch {
    throw cancelledError(ctx);
  }
}

function cancelledError(ctx: TransferContext): FatalError {
  return new FatalError(new DownloadError(`Download of ${ctx.file} cancelled`, 'ABORTED'));
}

function transferRate(fetched: number, startedAt: number): number {
  const secs = (Date.now() - startedAt) / 1000;
  return secs > 0 ? fetched / secs : 0;
}

/**
 * One attempt's abort signal: fired by the user's signal, by no data for the
 * stall timeout (`arm` restarts that clock), or by the file's time limit.
 */
function watchAttempt(ctx: TransferContext, startedAt: number) {
  const ac = new AbortController();
  let stallTimer: NodeJS.Timeout | undefined;
  const overTimer = setTimeout(
    () => ac.abort(new Error(`over ${ctx.fileTimeoutMs / 1000} s on this file`)),
    Math.max(0, ctx.fileTimeoutMs - (Date.now() - startedAt)),
  );
  const onUserAbort = () => ac.abort(ctx.signal!.reason);
  ctx.signal?.addEventListener('abort', onUserAbort, { once: true });
  const watch = {
    signal: ac.signal,
    stalled: false,
    arm(ms = ctx.stallTimeoutMs) {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        watch.stalled = true;
        ac.abort(new Error(`no data for ${ms / 1000} s`));
      }, ms);
    },
    cancelled: () => ctx.signal?.aborted === true,
    dispose() {
      clearTimeout(stallTimer);
      clearTimeout(overTimer);
      ctx.signal?.removeEventListener('abort', onUserAbort);
    },
  };
  return watch;
}

type BodyStart =
  | { kind: 'complete' }
  | { kind: 'retry'; why: string; rangeBroken?: boolean }
  | { kind: 'body'; total: number | null; append: boolean; have: number; rangeBroken?: boolean };

/**
 * Where the response's body starts and how big the whole file is, or that the
 * partial file is already complete, or why to retry (a partial that cannot be
 * resumed is truncated first). Throws SourceFailure for an answer no retry fixes.
 */
async function bodyStart(res: Response, have: number, url: string, ctx: TransferContext): Promise<BodyStart> {
  let total: number | null = null;
  let append = false;
  let rangeBroken = false;
  const contentLength = res.headers.get('content-length');
  const encoded = (res.headers.get('content-encoding') ?? 'identity').toLowerCase() !== 'identity';
  const bodyLength = contentLength !== null && !encoded ? Number(contentLength) : null;
  if (res.status === 416) {
    await res.body?.cancel().catch(() => {});
    const cr = parseContentRange(res.headers.get('content-range'));
    const realSize = cr && 'unsatisfied' in cr ? cr.unsatisfied : null;
    if (have > 0 && (realSize === have || (realSize === null && ctx.expected === have))) return { kind: 'complete' };
    ctx.log(`${ctx.file}: server rejected resuming at byte ${have}; starting over`);
    await fsp.truncate(ctx.partial, 0);
    return { kind: 'retry', why: 'range not satisfiable' };
  } else if (res.status === 206 && have > 0) {
    const cr = parseContentRange(res.headers.get('content-range'));
    if (!cr || !('start' in cr) || cr.start !== have) {
      await res.body?.cancel().catch(() => {});
      ctx.log(`${ctx.file}: server answered the resume request with an unexpected range; starting over`);
      await fsp.truncate(ctx.partial, 0);
      return { kind: 'retry', why: `unexpected Content-Range ${JSON.stringify(res.headers.get('content-range'))} for bytes=${have}-`, rangeBroken: true };
    }
    total = cr.total ?? (bodyLength !== null ? have + bodyLength : null);
    append = true;
  } else if (res.status === 200 || res.status === 206) {
    // 200 to a Range request means the server ignores ranges: take the whole body.
    if (have > 0) {
      ctx.log(`${ctx.file}: server does not support resuming; downloading from the start`);
      rangeBroken = true; // a restart: counts as a failed attempt if this transfer does not finish
    }
    total = bodyLength;
    have = 0;
  } else {
    await res.body?.cancel().catch(() => {});
    const status = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
    if (res.status >= 500 || res.status === 429 || res.status === 408) return { kind: 'retry', why: status };
    throw new SourceFailure('http', url, status);
  }

  if (ctx.expected !== undefined && total !== null && total !== ctx.expected) {
    await res.body?.cancel().catch(() => {});
    throw new SourceFailure(
      'size',
      url,
      `size mismatch: the server's ${ctx.file} is ${total} bytes, expected ${ctx.expected} (wrong model size or a different file?)`,
    );
  }
  if (!res.body) throw new SourceFailure('http', url, `HTTP ${res.status} with no body`);
  return { kind: 'body', total, append, have, rangeBroken };
}

/**
 * Streams the body onto the partial file (appending or from byte 0); a body
 * that breaks off is not an error here (`bodyError`), a failing disk is.
 */
async function writeBody(
  res: Response,
  t: { url: string; total: number | null; append: boolean; have: number; startedAt: number; rate: { fetched: number }; arm: () => void },
  ctx: TransferContext,
): Promise<{ bytes: number; bodyError: unknown }> {
  let fh: FileHandle;
  try {
    fh = await fsp.open(ctx.partial, t.append ? 'a' : 'w');
  } catch (err) {
    throw new FatalError(ioError(err, ctx.partial, ctx));
  }
  let lastReport = 0;
  const report = (bytes: number) => {
    const now = Date.now();
    if (now - lastReport < 100) return;
    lastReport = now;
    ctx.onProgress?.({ file: ctx.file, bytes, total: t.total, rate: transferRate(t.rate.fetched, t.startedAt), phase: 'download', url: t.url });
  };
  let bytes = t.have;
  let bodyError: unknown;
  const reader = res.body!.getReader();
  try {
    report(bytes);
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        bodyError = err;
        break;
      }
      if (chunk.done) break;
      t.arm();
      const data = chunk.value;
      try {
        for (let off = 0; off < data.length; ) {
          const { bytesWritten } = await fh.write(data, off, data.length - off);
          off += bytesWritten;
        }
      } catch (err) {
        throw new FatalError(ioError(err, ctx.partial, ctx));
      }
      bytes += data.length;
      t.rate.fetched += data.length;
      if (t.total !== null && bytes > t.total) {
        throw new SourceFailure('size', t.url, `size mismatch: received more than the announced ${t.total} bytes`);
      }
      report(bytes);
    }
  } finally {
    reader.cancel().catch(() => {});
    try {
      await fh.close();
    } catch (err) {
      // close() can report delayed write errors, ENOSPC among them.
      throw new FatalError(ioError(err, ctx.partial, ctx));
    }
  }
  return { bytes, bodyError };
}

/**
 * A finished transfer checked: a wrong size fails this source; content that
 * is not what the file should hold is removed and returned as a retry reason.
 */
async function receivedProblem(bytes: number, url: string, ctx: TransferContext): Promise<string | null> {
  if (ctx.expected !== undefined && bytes !== ctx.expected) {
    await fsp.rm(ctx.partial, { force: true });
    throw new SourceFailure('size', url, `size mismatch: received ${bytes} bytes, expected ${ctx.expected}`);
  }
  const problem = await smallFileProblemOnDisk(ctx.file, ctx.partial, ctx.vocab);
  if (problem === null) return null;
  // Cannot tell how much is missing, so it cannot be resumed either.
  await fsp.rm(ctx.partial, { force: true });
  return `received ${ctx.file} (${bytes} bytes) ${problem}`;
}

function ioError(err: unknown, file: string, ctx: { model: string; expected?: number | undefined }): DownloadError {
  const code = errorCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new DownloadError(
      `Disk full (${code}) while writing ${file}. Free some space in ${path.dirname(file)}` +
        (ctx.expected !== undefined ? ` (this file needs ${formatBytes(ctx.expected)} in total)` : '') +
        ` and run \`gptcuda download --model ${ctx.model}\` again: the download resumes from the bytes already saved.`,
      'DISK_FULL',
      { cause: err },
    );
  }
  return new DownloadError(`Cannot write ${file}: ${errorText(err)}`, 'IO', { cause: err });
}

// ---------------------------------------------------------------------------
// Verification stamp

interface Stamp {
  version: 1;
  files: Record<string, { size: number; mtimeMs: number }>;
}

async function currentStamp(modelDir: string): Promise<Stamp> {
  const files: Stamp['files'] = {};
  for (const f of [INDEX_FILE, DATA_FILE]) {
    const st = await fsp.stat(path.join(modelDir, f));
    files[f] = { size: st.size, mtimeMs: Math.floor(st.mtimeMs) };
  }
  return { version: 1, files };
}

async function stampMatches(modelDir: string): Promise<boolean> {
  try {
    const saved = JSON.parse(await fsp.readFile(path.join(modelDir, STAMP_FILE), 'utf8')) as Stamp;
    return JSON.stringify(saved) === JSON.stringify(await currentStamp(modelDir));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Entry point

/**
 * Downloads (or completes, or just checks) one released GPT-2 model into
 * `<dir>/<model>/` and returns where its files are.
 */
export async function downloadOpenAIModel(options: DownloadOptions): Promise<DownloadResult> {
  const { model } = options;
  if (!OPENAI_MODEL_SIZES.includes(model)) {
    throw new DownloadError(
      `Unknown GPT-2 model "${String(model)}": choose one of ${OPENAI_MODEL_SIZES.join(', ')} (117M is now 124M, 345M is 355M)`,
      'IO',
    );
  }
  const modelDir = path.resolve(options.dir, model);
  const sources = [
    options.baseUrl ?? OPENAI_BASE_URL,
    ...(options.fallbackUrls ?? [FALLBACK_MIRROR_URL]),
    ...(options.mirror ? [options.mirror] : []),
  ];
  const log = options.onLog ?? (() => {});

  let created: string | undefined;
  try {
    created = await fsp.mkdir(modelDir, { recursive: true });
  } catch (err) {
    throw new DownloadError(`Cannot create ${modelDir}: ${errorText(err)}`, 'IO', { cause: err });
  }
  try {
    return await downloadInto(modelDir, sources, options, log);
  } catch (err) {
    if (created !== undefined) await removeIfEmpty(modelDir, created);
    throw err;
  }
}

/**
 * Removes the folders this run created (`modelDir` up to `created`, the first
 * one mkdir made) when a failed run left nothing in them but empty .partial
 * files. A folder holding anything else stays as it is.
 */
async function removeIfEmpty(modelDir: string, created: string): Promise<void> {
  try {
    const entries = await fsp.readdir(modelDir);
    for (const e of entries) {
      const p = path.join(modelDir, e);
      if (!e.endsWith('.partial') || (await fsp.lstat(p)).size !== 0 || !(await fsp.lstat(p)).isFile()) return;
    }
    for (const e of entries) await fsp.rm(path.join(modelDir, e));
    for (let d = modelDir; ; d = path.dirname(d)) {
      await fsp.rmdir(d); // fails, and stops here, on a folder that is not empty
      if (path.resolve(d) === path.resolve(created) || path.dirname(d) === d) break;
    }
  } catch {
    // best effort: leaving an empty folder behind is not worth hiding the real error
  }
}

function transferOptions(options: DownloadOptions, expected: number | undefined) {
  return {
    maxAttempts: Math.max(1, options.maxAttempts ?? 4),
    maxTotalAttempts: Math.max(1, options.maxTotalAttempts ?? 50),
    retryDelayMs: options.retryDelayMs ?? 1000,
    stallTimeoutMs: options.stallTimeoutMs ?? 30_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
    fileTimeoutMs: options.fileTimeoutMs ?? Math.max(600_000, ((expected ?? 0) / 50_000) * 1000),
    vocab: options.expectedVocab ?? OPENAI_VOCAB,
    signal: options.signal,
    onProgress: options.onProgress,
  };
}

/**
 * Decides what to do with a file already at its final path: true when it is
 * complete (skip it); otherwise moves it out of the way (to the .partial when
 * it looks like the start of the file) and returns false.
 */
async function keepExisting(
  file: OpenAIFile,
  finalPath: string,
  partial: string,
  expected: number | undefined,
  vocab: VocabFacts,
  log: (m: string) => void,
): Promise<number | undefined> {
  const existing = await fileSize(finalPath);
  if (existing === undefined) return undefined;
  if (expected === undefined || existing === expected) {
    const problem = await smallFileProblemOnDisk(file, finalPath, vocab);
    if (problem === null) return existing;
    log(`${file} ${problem}; downloading it again`);
    await fsp.rm(finalPath, { force: true });
    return undefined;
  }
  if (existing < expected && (await fileSize(partial)) === undefined) {
    // Probably an interrupted copy: keep its bytes and resume after them.
    log(`${file} is ${existing} bytes, expected ${expected}; resuming it`);
    await fsp.rename(finalPath, partial);
  } else {
    log(`${file} is ${existing} bytes, expected ${expected}; downloading it again`);
    await fsp.rm(finalPath, { force: true });
  }
  return undefined;
}

/** Tries each server in turn for one file; returns the URL that delivered it. */
async function fetchFromAnySource(sources: string[], ctx: TransferContext): Promise<string> {
  const failures: SourceFailure[] = [];
  for (const base of sources) {
    const url = buildUrl(base, ctx.model, ctx.file);
    try {
      await fetchFromSource(url, ctx);
      return url;
    } catch (err) {
      if (err instanceof FatalError) throw err.error;
      if (!(err instanceof SourceFailure)) throw err;
      failures.push(err);
      ctx.log(`${url}: ${err.message}${base !== sources[sources.length - 1] ? '; trying the next server' : ''}`);
    }
  }
  throw allSourcesFailed(ctx.file, ctx.model, path.dirname(ctx.partial), failures);
}

async function downloadInto(
  modelDir: string,
  sources: string[],
  options: DownloadOptions,
  log: (m: string) => void,
): Promise<DownloadResult> {
  const { model } = options;
  const sizes = options.expectedSizes ?? OPENAI_KNOWN_SIZES[model];
  const vocab = options.expectedVocab ?? OPENAI_VOCAB;
  const results: DownloadedFile[] = [];
  let changed = false;

  for (const file of DOWNLOAD_ORDER) {
    const finalPath = path.join(modelDir, file);
    const partial = `${finalPath}.partial`;
    const expected = sizes[file];

    const kept = await keepExisting(file, finalPath, partial, expected, vocab, log);
    if (kept !== undefined) {
      results.push({ file, path: finalPath, bytes: kept, downloaded: false });
      options.onProgress?.({ file, bytes: kept, total: kept, rate: 0, phase: 'skipped' });
      continue;
    }

    await checkFreeSpace(modelDir, partial, expected, model);
    const ctx: TransferContext = { model, file, partial, expected, log, ...transferOptions(options, expected) };
    const doneUrl = await fetchFromAnySource(sources, ctx);

    try {
      await fsp.rename(partial, finalPath);
    } catch (err) {
      throw new DownloadError(`Cannot rename ${partial} to ${finalPath}: ${errorText(err)}`, 'IO', { cause: err });
    }
    changed = true;
    results.push({ file, path: finalPath, bytes: (await fileSize(finalPath)) ?? 0, downloaded: true, url: doneUrl });
  }

  let verified = false;
  if (options.verify !== false && (changed || !(await stampMatches(modelDir)))) {
    await verifyCheckpoint(modelDir, model, options.onProgress);
    await fsp.writeFile(path.join(modelDir, STAMP_FILE), JSON.stringify(await currentStamp(modelDir)));
    verified = true;
  }

  // Report in the canonical file order, not download order.
  results.sort((a, b) => OPENAI_FILES.indexOf(a.file) - OPENAI_FILES.indexOf(b.file));
  return { model, dir: modelDir, files: results, verified };
}

async function checkFreeSpace(dir: string, partial: string, expected: number | undefined, model: string): Promise<void> {
  if (expected === undefined) return;
  const need = expected - ((await fileSize(partial)) ?? 0);
  let free: number;
  try {
    const st = await fsp.statfs(dir);
    free = st.bavail * st.bsize;
  } catch {
    return; // statfs unsupported here: rely on ENOSPC during the write
  }
  if (free < need) {
    throw new DownloadError(
      `Not enough disk space in ${dir}: ${path.basename(partial, '.partial')} needs ${formatBytes(need)} more, ` +
        `only ${formatBytes(free)} free. Free some space (or pass another --dir) and run \`gptcuda download --model ${model}\` again.`,
      'DISK_FULL',
    );
  }
}

function allSourcesFailed(file: string, model: string, modelDir: string, failures: SourceFailure[]): DownloadError {
  // One line for the user; every server's answer stays in `details` (printed with GPTCUDA_DEBUG=1).
  const last = failures[failures.length - 1];
  const servers = `${failures.length} server${failures.length === 1 ? '' : 's'}`;
  const lastError = last ? `${last.url}: ${last.message}` : 'no server to try';
  const details = failures.map((f) => `${f.url}: ${f.message}`);
  if (failures.length > 0 && failures.every((f) => f.kind === 'unreachable')) {
    return new DownloadError(
      `Cannot download ${file} for GPT-2 ${model}: you appear to be offline (none of ${servers} could be reached; last: ${lastError}); ` +
        `connect to the internet, pass --mirror with a server you can reach, or copy the files (${OPENAI_FILES.join(', ')}) into ${modelDir} and run again`,
      'OFFLINE',
      { details },
    );
  }
  const code: DownloadErrorCode = failures.some((f) => f.kind === 'size')
    ? 'SIZE_MISMATCH'
    : failures.some((f) => f.kind === 'incomplete')
      ? 'CORRUPT'
    : failures.some((f) => f.kind === 'http')
      ? 'HTTP'
      : 'NETWORK';
  return new DownloadError(
    `Cannot download ${file} for GPT-2 ${model}: all ${servers} failed (last: ${lastError}); ` +
      `run the same command again to resume (partial data is kept), or pass --mirror with another server`,
    code,
    { details },
  );
}

/**
 * Hashes every tensor against the CRC32C stored in the index. A corrupt file is
 * deleted so the next run fetches it again instead of trusting it.
 */
async function verifyCheckpoint(
  modelDir: string,
  model: OpenAIModelSize,
  onProgress: ((p: DownloadProgress) => void) | undefined,
): Promise<void> {
  const startedAt = Date.now();
  let lastReport = 0;
  let ckpt;
  try {
    ckpt = await openTfCheckpoint(path.join(modelDir, 'model.ckpt'));
    await ckpt.verifyAll((p) => {
      const now = Date.now();
      if (p.index !== p.count && now - lastReport < 100) return;
      lastReport = now;
      const secs = (now - startedAt) / 1000;
      onProgress?.({
        file: DATA_FILE,
        bytes: p.bytes,
        total: p.totalBytes,
        rate: secs > 0 ? p.bytes / secs : 0,
        phase: 'verify',
      });
    });
  } catch (err) {
    if (!(err instanceof TfCheckpointError)) throw err;
    const bad = err.file && path.basename(err.file) === INDEX_FILE ? INDEX_FILE : DATA_FILE;
    await fsp.rm(path.join(modelDir, bad), { force: true });
    await fsp.rm(path.join(modelDir, STAMP_FILE), { force: true });
    throw new DownloadError(
      `${err.message}\nThe corrupt ${bad} was deleted; run \`gptcuda download --model ${model}\` again to fetch it afresh.`,
      'CORRUPT',
      { cause: err },
    );
  } finally {
    await ckpt?.close();
  }
}
