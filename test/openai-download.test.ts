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
  gpt2ParamCount,
  OPENAI_FILES,
  OPENAI_GPT2_HPARAMS,
  OPENAI_KNOWN_SIZES,
  type DownloadOptions,
  type DownloadProgress,
  type OpenAIFile,
} from '../ts/weights/openai-download.js';

const TOY = fileURLToPath(new URL('./fixtures/tf/keras-gpt2-toy/', import.meta.url));
const DATA: OpenAIFile = 'model.ckpt.data-00000-of-00001';

/** The toy checkpoint served as if it were a released model (the toy has no .meta; any bytes do). */
const files = new Map<string, Buffer>();

type Behaviour = 'ok' | 'cut' | 'stall' | 'ignore-range' | number;
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
    expect(err.message).toMatch(/model\.ckpt\.index.*size mismatch: the server's model\.ckpt\.index is 1302 bytes, expected 1301/s);
    expect(err.message).toContain(`${base}/primary/124M/model.ckpt.index`);
    expect(err.message).toContain(`${base}/mirror/124M/model.ckpt.index`);
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
  });

  it('reports HTTP errors with status and URL', async () => {
    rule = () => 403;
    const err = await downloadOpenAIModel(options()).catch((e) => e);
    expect(err.code).toBe('HTTP');
    expect(err.message).toContain(`${base}/primary/124M/checkpoint: HTTP 403 Forbidden`);
    expect(err.message).toContain(`${base}/mirror/124M/checkpoint: HTTP 403 Forbidden`);
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
