import { existsSync, promises as fsp } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  downloadOpenAIModel,
  DownloadError,
  OPENAI_FILES,
  OPENAI_KNOWN_SIZES,
  type DownloadOptions,
  type DownloadProgress,
  type OpenAIFile,
  smallFileProblem,
} from '../ts/weights/openai-download.js';
import { gpt2ParamCount, OPENAI_GPT2_HPARAMS } from '../ts/weights/openai-models.js';

const TOY = fileURLToPath(new URL('./fixtures/tf/keras-gpt2-toy/', import.meta.url));
const DATA: OpenAIFile = 'model.ckpt.data-00000-of-00001';

/** The toy checkpoint served as if it were a released model (the toy has no .meta; any bytes do). */
const files = new Map<string, Buffer>();

type Behaviour =
  | 'ok'
  | 'cut'
  | 'stall'
  | 'ignore-range'
  /** 200 without Content-Length, ending cleanly after two thirds of the file. */
  | 'no-length-short'
  /** Cut after (nth+1)*16 bytes; a resume request gets a 206 claiming the range starts at byte 0. */
  | 'wrong-range-cut'
  /** Always 200 from byte 0 (ignoring Range), cut after (nth+1)*16 bytes. */
  | 'from-zero-cut'
  /** Proper 206, but the connection drops after one byte. */
  | 'cut-one-byte'
  /** Accepts the request and never answers. */
  | 'idle'
  | number;
interface Logged {
  server: string;
  file: string;
  range: string | undefined;
}

let tmp: string;
let server: http.Server;
let base = '';
let requests: Logged[] = [];
/** Decides per request how the fake server behaves; reset after each test. */
let rule: (server: string, file: string, nth: number) => Behaviour = () => 'ok';

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(tmpdir(), 'gptcuda-download-'));
  for (const f of OPENAI_FILES) {
    files.set(f, f === 'model.ckpt.meta' ? Buffer.from('not a real MetaGraphDef, never parsed') : await fsp.readFile(path.join(TOY, f)));
  }
  server = http.createServer((req, res) => {
    const m = /^\/(primary|mirror)\/124M\/([^/?]+)$/.exec(req.url ?? '');
    const body = m ? files.get(m[2]!) : undefined;
    if (!m || !body) {
      res.writeHead(404).end('not found');
      return;
    }
    const [, srv, file] = m as unknown as [string, string, string];
    const range = req.headers.range;
    const nth = requests.filter((r) => r.server === srv && r.file === file).length;
    requests.push({ server: srv, file, range });
    const behaviour = rule(srv, file, nth);
    if (typeof behaviour === 'number') {
      res.writeHead(behaviour).end(`status ${behaviour}`);
      return;
    }
    if (behaviour === 'idle') return;
    if (behaviour === 'no-length-short') {
      res.writeHead(200).end(body.subarray(0, Math.floor((body.length * 2) / 3)));
      return;
    }
    if (behaviour === 'from-zero-cut' || behaviour === 'wrong-range-cut') {
      const wrong = behaviour === 'wrong-range-cut' && range !== undefined;
      res.writeHead(wrong ? 206 : 200, {
        'content-length': body.length,
        ...(wrong ? { 'content-range': `bytes 0-${body.length - 1}/${body.length}` } : {}),
      });
      res.write(body.subarray(0, (nth + 1) * 16), () => setTimeout(() => res.socket?.destroy(), 10));
      return;
    }
    let start = 0;
    const rm = /^bytes=(\d+)-$/.exec(range ?? '');
    if (rm && behaviour !== 'ignore-range') {
      start = Number(rm[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else {
      res.writeHead(200, { 'content-length': body.length });
    }
    const rest = body.subarray(start);
    if (behaviour === 'cut-one-byte') {
      res.write(rest.subarray(0, 1), () => setTimeout(() => res.socket?.destroy(), 10));
      return;
    }
    if (behaviour === 'cut') {
      // Send part of the file, then drop the connection as a flaky network would.
      res.write(rest.subarray(0, Math.floor(rest.length / 3)), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    if (behaviour === 'stall') {
      // Send part of the file, then go silent without closing.
      res.write(rest.subarray(0, Math.floor(rest.length / 3)));
      return;
    }
    res.end(rest);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(() => {
  rule = () => 'ok';
  requests = [];
  server.closeAllConnections();
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await fsp.rm(tmp, { recursive: true, force: true });
});

let dirCount = 0;
function options(extra: Partial<DownloadOptions> = {}): DownloadOptions {
  return {
    model: '124M',
    dir: path.join(tmp, `run${dirCount++}`),
    baseUrl: `${base}/primary`,
    fallbackUrls: [`${base}/mirror`],
    expectedSizes: {}, // the toy is not the size of the real 124M files
    expectedVocab: { encoderEntries: 7, merges: 27 }, // the toy's encoder.json and vocab.bpe
    maxAttempts: 2,
    retryDelayMs: 1,
    ...extra,
  };
}

async function expectFilesMatch(modelDir: string): Promise<void> {
  for (const f of OPENAI_FILES) {
    expect((await fsp.readFile(path.join(modelDir, f))).equals(files.get(f)!), f).toBe(true);
    expect(existsSync(path.join(modelDir, `${f}.partial`))).toBe(false);
  }
}

async function prefill(dir: string): Promise<string> {
  const modelDir = path.join(dir, '124M');
  await fsp.mkdir(modelDir, { recursive: true });
  for (const f of OPENAI_FILES) await fsp.writeFile(path.join(modelDir, f), files.get(f)!);
  return modelDir;
}

/** A port nothing listens on, for "offline". */
async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

describe('model size facts', () => {
  it('data file sizes equal 4 x the GPT-2 parameter count of each hparams', () => {
    expect(gpt2ParamCount(OPENAI_GPT2_HPARAMS['124M'])).toBe(124_439_808);
    expect(gpt2ParamCount(OPENAI_GPT2_HPARAMS['355M'])).toBe(354_823_168);
    expect(gpt2ParamCount(OPENAI_GPT2_HPARAMS['774M'])).toBe(774_030_080);
    expect(gpt2ParamCount(OPENAI_GPT2_HPARAMS['1558M'])).toBe(1_557_611_200);
    expect(OPENAI_KNOWN_SIZES['124M'][DATA]).toBe(497_759_232);
    expect(OPENAI_KNOWN_SIZES['355M'][DATA]).toBe(1_419_292_672);
    for (const m of ['124M', '355M', '774M', '1558M'] as const) {
      expect(OPENAI_KNOWN_SIZES[m][DATA]).toBe(4 * gpt2ParamCount(OPENAI_GPT2_HPARAMS[m]));
    }
  });
});

describe('downloadOpenAIModel against a local server', () => {
  it('downloads all files, resuming with Range after the server cuts the connection', async () => {
    rule = (srv, file, nth) => (file === DATA && nth === 0 ? 'cut' : 'ok');
    const progress: DownloadProgress[] = [];
    const opts = options({ onProgress: (p) => progress.push(p) });
    const result = await downloadOpenAIModel(opts);

    expect(result.dir).toBe(path.join(opts.dir, '124M'));
    expect(result.verified).toBe(true);
    expect(result.files.map((f) => f.file)).toEqual([...OPENAI_FILES]);
    expect(result.files.every((f) => f.downloaded && f.url?.includes('/primary/'))).toBe(true);
    await expectFilesMatch(result.dir);

    const dataReqs = requests.filter((r) => r.file === DATA);
    expect(dataReqs).toHaveLength(2);
    expect(dataReqs[0]!.range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(dataReqs[1]!.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThan(files.get(DATA)!.length);

    const dataDone = progress.find((p) => p.file === DATA && p.phase === 'done')!;
    expect(dataDone.bytes).toBe(files.get(DATA)!.length);
    expect(dataDone.total).toBe(files.get(DATA)!.length);
    expect(progress.some((p) => p.phase === 'verify')).toBe(true);
    const dataBytes = progress.filter((p) => p.file === DATA && p.phase !== 'verify').map((p) => p.bytes);
    expect(dataBytes).toEqual([...dataBytes].sort((a, b) => a - b)); // never goes backwards
  });

  it('aborts a stalled transfer and resumes it', async () => {
    rule = (srv, file, nth) => (file === DATA && nth === 0 ? 'stall' : 'ok');
    const logs: string[] = [];
    const result = await downloadOpenAIModel(options({ stallTimeoutMs: 150, onLog: (m) => logs.push(m) }));
    const dataReqs = requests.filter((r) => r.file === DATA);
    expect(dataReqs).toHaveLength(2);
    expect(dataReqs[1]!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(logs.join('\n')).toMatch(/stalled/);
    await expectFilesMatch(result.dir);
  });

  it('finishes a .partial that is already complete (server answers 416)', async () => {
    const opts = options();
    const modelDir = path.join(opts.dir, '124M');
    await fsp.mkdir(modelDir, { recursive: true });
    await fsp.writeFile(path.join(modelDir, `${DATA}.partial`), files.get(DATA)!);
    await downloadOpenAIModel(opts);
    expect(requests.find((r) => r.file === DATA)!.range).toBe(`bytes=${files.get(DATA)!.length}-`);
    await expectFilesMatch(modelDir);
  });

  it('stops when cancelled', async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await downloadOpenAIModel(options({ signal: ac.signal })).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('ABORTED');
  });

  it('resumes a .partial left by an earlier run', async () => {
    const opts = options();
    const modelDir = path.join(opts.dir, '124M');
    await fsp.mkdir(modelDir, { recursive: true });
    await fsp.writeFile(path.join(modelDir, `${DATA}.partial`), files.get(DATA)!.subarray(0, 1000));
    await downloadOpenAIModel(opts);
    expect(requests.find((r) => r.file === DATA)!.range).toBe('bytes=1000-');
    await expectFilesMatch(modelDir);
  });

  it('starts over when the server ignores Range', async () => {
    rule = () => 'ignore-range';
    const opts = options();
    const modelDir = path.join(opts.dir, '124M');
    await fsp.mkdir(modelDir, { recursive: true });
    await fsp.writeFile(path.join(modelDir, `${DATA}.partial`), Buffer.alloc(1000, 7)); // garbage that must not survive
    await downloadOpenAIModel(opts);
    await expectFilesMatch(modelDir);
  });

  it('falls back to the mirror after a 404', async () => {
    rule = (srv, file) => (srv === 'primary' && file === DATA ? 404 : 'ok');
    const result = await downloadOpenAIModel(options());
    expect(result.files.find((f) => f.file === DATA)!.url).toContain('/mirror/124M/');
    expect(result.files.find((f) => f.file === 'vocab.bpe')!.url).toContain('/primary/124M/');
    expect(requests.filter((r) => r.server === 'primary' && r.file === DATA)).toHaveLength(1); // a 404 is not retried
    await expectFilesMatch(result.dir);
  });

  it('retries a 500, then falls back to the mirror', async () => {
    rule = (srv, file) => (srv === 'primary' && file === 'model.ckpt.index' ? 500 : 'ok');
    const logs: string[] = [];
    const result = await downloadOpenAIModel(options({ onLog: (m) => logs.push(m) }));
    expect(requests.filter((r) => r.server === 'primary' && r.file === 'model.ckpt.index')).toHaveLength(2);
    expect(result.files.find((f) => f.file === 'model.ckpt.index')!.url).toContain('/mirror/');
    expect(logs.join('\n')).toMatch(/HTTP 500/);
    await expectFilesMatch(result.dir);
  });

  it('tries a user mirror after the built-in servers', async () => {
    rule = (srv) => (srv === 'primary' ? 503 : 'ok');
    const result = await downloadOpenAIModel(options({ fallbackUrls: [], mirror: `${base}/mirror`, maxAttempts: 1 }));
    expect(result.files.every((f) => f.url?.includes('/mirror/'))).toBe(true);
  });

  it('detects a size mismatch against the known sizes', async () => {
    const err = await downloadOpenAIModel(options({ expectedSizes: { 'model.ckpt.index': 1301 } })).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(err.message).toMatch(/model\.ckpt\.index.*size mismatch: the server's model\.ckpt\.index is 1302 bytes, expected 1301/);
    expect(err.message).toContain(`${base}/mirror/124M/model.ckpt.index`);
    expect(err.message).not.toContain('\n');
    expect(err.details).toHaveLength(2);
    expect(err.details[0]).toMatch(new RegExp(`^${base}/primary/124M/model\\.ckpt\\.index: size mismatch`));
    expect(err.details[1]).toMatch(new RegExp(`^${base}/mirror/124M/model\\.ckpt\\.index: size mismatch`));
  });

  it('detects corrupt data through the tensor CRCs and deletes the bad file', async () => {
    const good = files.get(DATA)!;
    const bad = Buffer.from(good);
    bad[500]! ^= 0xff;
    files.set(DATA, bad);
    try {
      const opts = options();
      const err = await downloadOpenAIModel(opts).catch((e) => e);
      expect(err).toBeInstanceOf(DownloadError);
      expect(err.code).toBe('CORRUPT');
      expect(err.message).toMatch(/CRC32C mismatch in 1 of 40 tensors/);
      expect(err.message).toMatch(/gptcuda download --model 124M/);
      expect(existsSync(path.join(opts.dir, '124M', DATA))).toBe(false);
      expect(existsSync(path.join(opts.dir, '124M', 'vocab.bpe'))).toBe(true);
    } finally {
      files.set(DATA, good);
    }
  });

  it('skips files that are already complete (no requests), verifying once', async () => {
    const opts = options();
    const modelDir = await prefill(opts.dir);
    const progress: DownloadProgress[] = [];
    const first = await downloadOpenAIModel({ ...opts, onProgress: (p) => progress.push(p) });
    expect(requests).toHaveLength(0);
    expect(first.files.every((f) => !f.downloaded)).toBe(true);
    expect(first.verified).toBe(true); // never verified before
    expect(progress.filter((p) => p.phase === 'skipped')).toHaveLength(7);
    const second = await downloadOpenAIModel(opts);
    expect(second.verified).toBe(false); // the stamp says these exact files were verified
    expect(requests).toHaveLength(0);
    await expectFilesMatch(modelDir);
  });

  it('re-fetches an existing file whose size is wrong for the known size', async () => {
    const opts = options({ expectedSizes: { 'model.ckpt.index': 1302 } });
    const modelDir = await prefill(opts.dir);
    await fsp.truncate(path.join(modelDir, 'model.ckpt.index'), 700); // an interrupted copy
    await downloadOpenAIModel(opts);
    expect(requests).toEqual([{ server: 'primary', file: 'model.ckpt.index', range: 'bytes=700-' }]);
    await expectFilesMatch(modelDir);
  });

  it('succeeds offline when everything is present', async () => {
    const port = await closedPort();
    const opts = options({ baseUrl: `http://127.0.0.1:${port}`, fallbackUrls: [] });
    await prefill(opts.dir);
    const result = await downloadOpenAIModel(opts);
    expect(result.files).toHaveLength(7);
    expect(result.verified).toBe(true);
  });

  it('says it is offline, and which URL, when nothing can be reached', async () => {
    const port = await closedPort();
    const url = `http://127.0.0.1:${port}`;
    const err = await downloadOpenAIModel(options({ baseUrl: url, fallbackUrls: [] })).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('OFFLINE');
    expect(err.message).toMatch(/you appear to be offline/);
    expect(err.message).toContain(`${url}/124M/checkpoint: cannot connect (ECONNREFUSED)`);
    expect(err.message).not.toContain('\n');
  });

  it('reports HTTP errors with status and URL', async () => {
    rule = () => 403;
    const err = await downloadOpenAIModel(options()).catch((e) => e);
    expect(err.code).toBe('HTTP');
    // One line: the file, how many servers, the last one's answer and the fix; each server's answer in details.
    expect(err.message).not.toContain('\n');
    expect(err.message).toMatch(/^Cannot download checkpoint for GPT-2 124M: all 2 servers failed /);
    expect(err.message).toContain(`(last: ${base}/mirror/124M/checkpoint: HTTP 403 Forbidden)`);
    expect(err.message).toMatch(/--mirror/);
    expect(err.details).toEqual([`${base}/primary/124M/checkpoint: HTTP 403 Forbidden`, `${base}/mirror/124M/checkpoint: HTTP 403 Forbidden`]);
  });

  it.skipIf(!existsSync('/dev/full'))('reports a full disk (ENOSPC) and keeps nothing half-renamed', async () => {
    const opts = options();
    const modelDir = path.join(opts.dir, '124M');
    await fsp.mkdir(modelDir, { recursive: true });
    // Writes to /dev/full fail with ENOSPC, which is how a full disk looks to the writer.
    await fsp.symlink('/dev/full', path.join(modelDir, 'checkpoint.partial'));
    const err = await downloadOpenAIModel(opts).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('DISK_FULL');
    expect(err.message).toMatch(/Disk full \(ENOSPC\) while writing .*checkpoint\.partial/);
    expect(existsSync(path.join(modelDir, 'checkpoint'))).toBe(false);
  });
});

describe('never keeps a truncated file', () => {
  // OpenAI's real 124M small files (see shared/fixtures/README.md), wherever the shared fixtures are.
  const REAL =
    [
      fileURLToPath(new URL('../shared/fixtures/tf/openai-gpt2-124M-index', import.meta.url)),
      fileURLToPath(new URL('../../shared/fixtures/tf/openai-gpt2-124M-index', import.meta.url)),
      fileURLToPath(new URL('../../../shared/fixtures/tf/openai-gpt2-124M-index', import.meta.url)),
    ].find((d) => existsSync(path.join(d, 'vocab.bpe'))) ?? '';
  it.skipIf(REAL === '')("accepts OpenAI's real small files and refuses them cut short", async () => {
    for (const f of ['checkpoint', 'hparams.json', 'encoder.json', 'vocab.bpe'] as const) {
      const text = await fsp.readFile(path.join(REAL, f), 'utf8');
      expect(smallFileProblem(f, text), f).toBeNull();
      expect(smallFileProblem(f, text.slice(0, Math.floor(text.length * 0.9))), f).not.toBeNull();
      expect(smallFileProblem(f, text.slice(0, 40)), f).not.toBeNull();
    }
    // Cut right after a line break: still short by its merge count.
    const bpe = await fsp.readFile(path.join(REAL, 'vocab.bpe'), 'utf8');
    expect(smallFileProblem('vocab.bpe', bpe.slice(0, bpe.lastIndexOf('\n', bpe.length - 2) + 1))).toMatch(/49999 merges/);
  });

  it('refuses a small file served without Content-Length and cut short, then takes a complete copy', async () => {
    rule = (srv, file, nth) => (file === 'hparams.json' && nth === 0 ? 'no-length-short' : 'ok');
    const logs: string[] = [];
    const result = await downloadOpenAIModel(options({ onLog: (m) => logs.push(m) }));
    expect(requests.filter((r) => r.file === 'hparams.json')).toHaveLength(2);
    expect(logs.join('\n')).toMatch(/hparams\.json.*not valid JSON/);
    await expectFilesMatch(result.dir);
  });

  it('gives up on a small file that always arrives cut short, keeping nothing', async () => {
    rule = (srv, file) => (file === 'vocab.bpe' ? 'no-length-short' : 'ok');
    const opts = options();
    const err = await downloadOpenAIModel(opts).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('CORRUPT');
    expect(err.message).toMatch(/vocab\.bpe \(\d+ bytes\) .*cut short.*gave up after 2 attempts/);
    expect(existsSync(path.join(opts.dir, '124M', 'vocab.bpe'))).toBe(false);
    expect(existsSync(path.join(opts.dir, '124M', 'vocab.bpe.partial'))).toBe(false);
  });

  it('gives up when the server answers resume requests with a 206 from byte 0', async () => {
    rule = (srv, file, nth) => (file === DATA ? 'wrong-range-cut' : 'ok');
    const logs: string[] = [];
    const err = await downloadOpenAIModel(options({ fallbackUrls: [], maxAttempts: 3, onLog: (m) => logs.push(m) })).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/gave up after 3 attempts without progress/);
    expect(logs.join('\n')).toMatch(/unexpected Content-Range "bytes 0-/);
    expect(requests.filter((r) => r.file === DATA)).toHaveLength(3);
  });

  it('gives up when the server always answers from byte 0 and cuts the connection', async () => {
    rule = (srv, file) => (file === DATA ? 'from-zero-cut' : 'ok');
    const err = await downloadOpenAIModel(options({ fallbackUrls: [], maxAttempts: 3 })).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/gave up after 3 attempts without progress/);
    expect(requests.filter((r) => r.file === DATA)).toHaveLength(3);
  });

  it('gives up after a bounded number of tries when every connection is cut', async () => {
    rule = (srv, file) => (file === 'checkpoint' ? 'cut-one-byte' : 'ok');
    const err = await downloadOpenAIModel(options({ fallbackUrls: [], maxTotalAttempts: 5 })).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/checkpoint.*connection lost.*gave up after 5 attempts/);
    expect(err.message).not.toContain('\n');
    expect(requests.filter((r) => r.file === 'checkpoint')).toHaveLength(5);
  });

  it('times out quickly on a server that never answers, after a first progress notice', async () => {
    rule = () => 'idle';
    const progress: DownloadProgress[] = [];
    const t0 = Date.now();
    const err = await downloadOpenAIModel(
      options({ fallbackUrls: [], connectTimeoutMs: 100, onProgress: (p) => progress.push(p) }),
    ).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.code).toBe('NETWORK');
    expect(err.message).toMatch(/did not answer within 0\.1 s.*gave up after 2 attempts/s);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(progress[0]).toMatchObject({ file: 'checkpoint', bytes: 0, phase: 'download' });
  });

  it('bounds the total time spent on one file', async () => {
    rule = () => 'idle';
    const t0 = Date.now();
    const err = await downloadOpenAIModel(
      options({ fallbackUrls: [], maxAttempts: 100, connectTimeoutMs: 60_000, fileTimeoutMs: 200 }),
    ).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.message).toMatch(/gave up after 0\.\d s on this file/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});

describe('a failed download leaves no empty model folder', () => {
  it('removes the models/<size> folder (and models/) it created', async () => {
    rule = () => 403;
    const root = path.join(tmp, `run${dirCount++}`);
    await fsp.mkdir(root);
    const dir = path.join(root, 'models');
    const err = await downloadOpenAIModel(options({ dir })).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(existsSync(path.join(dir, '124M'))).toBe(false);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(root)).toBe(true);
  });

  it('keeps a folder that already held files, and partial data worth resuming', async () => {
    rule = (srv, file) => (file === DATA ? 403 : 'ok');
    const opts = options();
    const modelDir = path.join(opts.dir, '124M');
    await fsp.mkdir(modelDir, { recursive: true });
    await fsp.writeFile(path.join(modelDir, 'notes.txt'), 'mine');
    await downloadOpenAIModel(opts).catch(() => {});
    expect(await fsp.readFile(path.join(modelDir, 'notes.txt'), 'utf8')).toBe('mine');
    expect(existsSync(path.join(modelDir, 'vocab.bpe'))).toBe(true);

    rule = (srv, file) => (file === DATA ? (srv === 'primary' ? 'cut' : 403) : 'ok');
    const opts2 = options({ maxAttempts: 1 });
    await downloadOpenAIModel(opts2).catch(() => {});
    expect(existsSync(path.join(opts2.dir, '124M', 'vocab.bpe'))).toBe(true);
  });
});
