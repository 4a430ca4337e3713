// The CLI's manners (issue 12): every flag validated before anything loads,
// one-line unknown-option errors with a suggestion, nanoGPT-style aliases,
// help that describes every option, hints written the way the tool was run.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandPrefix, nearest, unknownOptionMessage } from '../ts/cli/options.js';
import { spawnCli, type CliResult } from './helpers/cli.js';

const REPO = resolve(import.meta.dirname, '..');
const MAIN = join(REPO, 'dist', 'cli', 'main.js');
let root: string;


function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  // Not "run via npx" unless a test says so (vitest itself runs under npx).
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('npm_')));
  return spawnCli(args, { cwd: root, env: base, extraEnv: env });
}

/** Fails with exactly one line on stderr, that line, and nothing on stdout. */
function expectOneLine(r: CliResult, line: string): void {
  expect(r.code, r.stderr).not.toBe(0);
  expect(r.stderr.trimEnd()).toBe(`gptcuda: ${line}`);
  expect(r.stdout).toBe('');
}

beforeAll(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'gptcuda-cli-ux-'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('validation names the flag, before anything loads', () => {
  it('generate --top-p 2 fails before loading the model (the weights path does not even exist)', async () => {
    expectOneLine(await cli(['generate', '--top-p', '2', '--weights', join(root, 'no-such-ckpt.tar')]), '--top-p must be in (0, 1] (got 2)');
  });
  it('a non-number says what was given', async () => {
    expectOneLine(await cli(['train', '--batch-size', 'abc']), '--batch-size must be a positive integer (got "abc")');
    expectOneLine(await cli(['eval', '--batch-size=xyz', '--weights', 'nowhere']), '--batch-size must be a positive integer (got "xyz")');
  });
  it('model-config errors use flag names, also through the nanoGPT aliases', async () => {
    expectOneLine(await cli(['train', '--emb-dim', '64', '--n-heads', '3']), '--emb-dim (64) must be divisible by --n-heads (3)');
    expectOneLine(await cli(['train', '--n-embd', '64', '--n-head', '3']), '--emb-dim (64) must be divisible by --n-heads (3)');
  });
  it('generate checks temperature, top-k and max-new-tokens too', async () => {
    const rs = await Promise.all([
      cli(['generate', '--temperature', '-1', '--weights', 'x']),
      cli(['generate', '--top-k', '0', '--weights', 'x']),
      cli(['generate', '--max-new-tokens', 'lots', '--weights', 'x']),
    ]);
    expectOneLine(rs[0], '--temperature must be a number >= 0 (got -1)');
    expectOneLine(rs[1], '--top-k must be a positive integer (got 0)');
    expectOneLine(rs[2], '--max-new-tokens must be an integer >= 0 (got "lots")');
  });
});

describe('unknown options', () => {
  it('one line with the nearest valid flag, no help dump', async () => {
    const [a, b] = await Promise.all([cli(['train', '--bach-size', '2']), cli(['generate', '--top_p', '0.5'])]);
    expect(a.code).toBe(2);
    expectOneLine(a, 'unknown option --bach-size; did you mean --batch-size?');
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/did you mean --top-p\?/);
    expect(b.stderr.trim().split('\n')).toHaveLength(1);
  });
  it('a bad choice and a missing required flag: one line each, in flag names', async () => {
    const [a, b] = await Promise.all([cli(['train', '--device', 'gpu']), cli(['export'])]);
    expect(a.code).toBe(2);
    expectOneLine(a, '--device must be one of auto, cpu, cuda (got "gpu")');
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/^gptcuda: export needs --weights and --out \(see .*export --help\)\n$/);
  });
  it('nearest() and the message', () => {
    expect(unknownOptionMessage('--foo-bar', ['foo-baz', 'lr'])).toBe('unknown option --foo-bar; did you mean --foo-baz?');
    expect(unknownOptionMessage('--zzzzzzzzzz', ['lr'])).toBe('unknown option --zzzzzzzzzz');
    expect(nearest('n-layer', ['n-layers', 'n-heads'])).toBe('n-layers');
  });
});

describe('help', () => {
  const commands = ['train', 'eval', 'generate', 'download', 'inspect', 'export', 'tokenize', 'info'];
  it('every option of every command has a description, and the aliases are listed', async () => {
    const rs = await Promise.all(commands.map((c) => cli([c, '--help'])));
    rs.forEach((r, i) => {
      expect(r.code, `${commands[i]} --help`).toBe(0);
      const options = r.stdout.split('\n').filter((l) => /^ {2}--/.test(l));
      expect(options.length).toBeGreaterThan(2);
      for (const l of options) {
        // "  --flag[, --alias]   description  [type] [default: ...]"
        const m = /^ {2}(--[\w-]+(?:, --[\w-]+)*)\s+(.*)$/.exec(l);
        expect(m, `${commands[i]}: ${l}`).not.toBeNull();
        const description = m![2].replace(/\s*\[[^\]]*\]/g, '').trim();
        expect(description, `${commands[i]}: ${l}`).not.toBe('');
      }
      const examples = r.stdout.split('Examples:')[1] ?? '';
      expect(examples.split('\n').filter((l) => l.includes(' ' + commands[i]) || l.includes('gptcuda')).length, commands[i]).toBeGreaterThanOrEqual(1);
    });
    const train = rs[0].stdout;
    for (const a of ['n-layer', 'n-head', 'n-embd', 'block-size', 'learning-rate', 'max-iters', 'eval-interval', 'eval-iters', 'dropout', 'output-dir'])
      expect(train).toContain(`--${a}`);
  });
});

describe('hints are written the way the tool was run', () => {
  it('npx, PATH, or node <path>', () => {
    expect(commandPrefix({ npm_command: 'exec' }, ['node', '/x/node_modules/.bin/gptcuda'])).toBe('npx gptcuda');
    expect(commandPrefix({}, ['node', '/home/u/.npm/_npx/abc/node_modules/.bin/gptcuda'])).toBe('npx gptcuda');
    const bin = fs.mkdtempSync(join(tmpdir(), 'gptcuda-bin-'));
    try {
      fs.symlinkSync(MAIN, join(bin, 'gptcuda'));
      expect(commandPrefix({ PATH: bin }, ['node', join(bin, 'gptcuda')])).toBe('gptcuda');
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
    expect(commandPrefix({ PATH: '' }, ['node', MAIN])).toMatch(/^node .*main\.js$/);
  });
  it('generate without weights suggests commands with that prefix', async () => {
    const r = await cli(['generate'], { PATH: process.env.PATH ?? '' });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/`node \S*main\.js train`/);
    const n = await cli(['generate'], { npm_command: 'exec' });
    expect(n.stderr).toMatch(/`npx gptcuda train`/);
    // Library messages too: a missing weights path suggests the download in the same form.
    const w = await cli(['generate', '--weights', join(root, 'missing')], { npm_command: 'exec' });
    expect(w.stderr).toMatch(/`npx gptcuda download --model 124M`/);
  });
});

const TINY = ['--n-layers', '1', '--emb-dim', '32', '--n-heads', '4', '--context-length', '32', '--batch-size', '2'];

describe('train output', () => {
  it('piped: plain progress lines (step, loss, tok/s, ETA), a short device line, a labelled summary', async () => {
    const r = await cli(['train', ...TINY, '--max-steps', '6', '--eval-freq', '100', '--out', join(root, 'piped')], { GPTCUDA_PROGRESS_INTERVAL_MS: '0' });
    expect(r.code, r.stderr).toBe(0);
    const progress = r.stderr.split('\n').filter((l) => /^train .*\d+\/6 /.test(l));
    expect(progress.length).toBeGreaterThan(0);
    expect(r.stderr).not.toContain('\r');
    expect(progress.some((l) => /ETA/.test(l) && /loss \d/.test(l) && /tok\/s/.test(l))).toBe(true);
    const device = r.stdout.split('\n').find((l) => l.startsWith('device: '));
    expect(device).toBeDefined();
    expect(device!.length).toBeLessThan(100);
    expect(r.stdout).toMatch(/^done: this invocation: 6 steps, \d+ tokens in /m);
  });
  it("--sample-prompt '' turns the end-of-epoch samples off (and does not fail the run)", async () => {
    const r = await cli(['train', ...TINY, '--max-steps', '2', '--sample-prompt', '', '--json', '--out', join(root, 'nosample')]);
    expect(r.code, r.stderr).toBe(0);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string });
    expect(events.filter((e) => e.event === 'step')).toHaveLength(2);
    expect(events.some((e) => e.event === 'sample')).toBe(false);
    const withSample = await cli(['train', ...TINY, '--max-steps', '2', '--json', '--out', join(root, 'sample')]);
    expect(withSample.stdout.trim().split('\n').some((l) => (JSON.parse(l) as { event: string }).event === 'sample')).toBe(true);
  });
  it('the default plain interval is 10 s', async () => {
    const { plainProgressInterval } = await import('../ts/cli/progress.js');
    expect(plainProgressInterval({})).toBe(10_000);
  });
  it('--model gpt2-small: says it trains from scratch, and that the bundled text is too short for its context', async () => {
    const r = await cli(['train', '--model', 'gpt2-small', '--out', join(root, 'g2')]);
    expect(r.stdout.split('\n')[0]).toBe("training gpt2-small from scratch (use --init-from models/124M for OpenAI's weights)");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/too short for context length 1024; use --context-length 256/);
  });
});

describe('info and generate notes', () => {
  it('info gives the CUDA reason once', async () => {
    const r = await cli(['info']);
    expect(r.code).toBe(0);
    const m = /not found|not built|unavailable: (.*)/.exec(r.stdout);
    if (m && /cuBLAS not found/.test(r.stdout)) expect(r.stdout.split('cuBLAS not found').length - 1).toBe(1);
  });
  it('--top-k without --temperature warns that it has no effect', async () => {
    const r = await cli(['generate', '--top-k', '5', '--weights', join(root, 'none')]);
    expect(r.stderr).toMatch(/warning: --top-k has no effect in greedy decoding/);
  });
});

describe('text-input errors', () => {
  it('a non-UTF-8 file: file, byte offset and an iconv fix', async () => {
    const f = join(root, 'latin.txt');
    fs.writeFileSync(f, Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0x61]));
    const r = await cli(['train', '--data', f]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`${f}: not valid UTF-8 text at byte 3 (0xe9)`);
    expect(r.stderr).toMatch(/iconv -f latin1 -t utf-8 \S+latin\.txt > \S+/);
  });
  it('a .tok file without the magic is not a token file', async () => {
    const f = join(root, 'notes.tok');
    fs.writeFileSync(f, 'plain words, not tokens');
    const r = await cli(['train', '--data', f]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/notes\.tok is not a gptcuda token file/);
  });
  it('a prompt longer than the context is cut, said once on stderr', async () => {
    // The piped run above left a context-32 checkpoint.
    const prompt = Array.from({ length: 60 }, (_, i) => `word${i}`).join(' ');
    const r = await cli(['generate', '--weights', join(root, 'piped'), '--prompt', prompt, '--max-new-tokens', '2', '--device', 'cpu']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.match(/cut to the last 32 tokens/g)).toHaveLength(1);
  });
});

describe('progress ETA', () => {
  it('counts pauses such as evaluations: from the average rate, so it does not jump after one', async () => {
    const { Progress } = await import('../ts/cli/progress.js');
    let t = 0;
    const out: string[] = [];
    const p = new Progress({ total: 100, label: 'train', enabled: true, etaFromAverage: true, now: () => t, stream: { write: (s: string) => out.push(s), isTTY: true } });
    // 10 steps at 1 s each, then a 10 s evaluation, then one more step.
    for (let i = 1; i <= 10; i++) { t = i * 1000; p.update(i); }
    t = 21_000;
    p.update(11);
    // 11 steps in 21 s: 89 left at 0.524 step/s = 170 s, not the recent-rate figure.
    expect(p.render(200)).toMatch(/ETA 2m50s/);
  });
});
