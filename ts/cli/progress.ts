/**
 * Terminal progress for long jobs (pretokenizing, training, downloads).
 *
 * The bar lives on one line of stderr and is redrawn in place with `\r`, so
 * it never mixes with machine-readable stdout (JSON lines). When stderr is not
 * a terminal (CI logs, redirects) the bar is not drawn at all: a log full of
 * carriage-return frames helps nobody. Lines given to `log()` are printed in
 * both cases.
 */

/** The subset of a stream we need; lets tests pass a fake terminal. */
export interface OutStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Compact durations: "0.4s", "42s", "3m07s", "2h05m", "3d04h". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const pad = (n: number): string => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${pad(Math.floor((s % 86400) / 3600))}h`;
}

/** A count with an SI suffix: 950, 12.3k, 4.56M. */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return '--';
  const a = Math.abs(n);
  const fmt = (v: number, suffix: string): string => `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)}${suffix}`;
  if (a < 1000) return Number.isInteger(n) ? String(n) : n.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2);
  const sign = n < 0 ? '-' : '';
  if (a < 1e6) return sign + fmt(a / 1e3, 'k');
  if (a < 1e9) return sign + fmt(a / 1e6, 'M');
  if (a < 1e12) return sign + fmt(a / 1e9, 'G');
  return sign + fmt(a / 1e12, 'T');
}

/** "12.3k tok/s"; `unit` empty gives "12.3k/s". */
export function formatRate(perSecond: number, unit = ''): string {
  return `${formatCount(perSecond)}${unit ? ' ' + unit : ''}/s`;
}

export interface ProgressOptions {
  /** Units of work in all, if known (no percentage or ETA otherwise). */
  total?: number;
  /** Shown before the bar, e.g. "train". */
  label?: string;
  /** Unit for the default rate display, e.g. "tok" → "12.3k tok/s". */
  unit?: string;
  /** Custom rate display, e.g. `(r) => formatBytes(r) + '/s'`. */
  formatRate?: (perSecond: number) => string;
  /** Custom done/total display, e.g. formatBytes. */
  formatAmount?: (n: number) => string;
  /** Work already done when the bar starts (a resumed run); the rate counts only new work. */
  start?: number;
  /** Where the bar goes; default process.stderr. */
  stream?: OutStream;
  /** Where log() lines go; default process.stdout. */
  logStream?: OutStream;
  /** Draw the bar? Default: whether `stream` is a TTY. */
  enabled?: boolean;
  /**
   * When the bar is not drawn (stderr not a terminal), print a plain progress
   * line to `stream` instead, at most this often (ms) as updates come, and at
   * least every 60 s while the event loop is free. Off when undefined.
   */
  plainIntervalMs?: number;
  /**
   * ETA from the average rate since the start, not the recent one: periodic
   * pauses (training's evaluations) are then counted in it, and it does not
   * jump after each one.
   */
  etaFromAverage?: boolean;
  /** Fewest milliseconds between redraws (default 100, i.e. ≤ 10/s). */
  minIntervalMs?: number;
  /** Clock in milliseconds; tests inject one. */
  now?: () => number;
}

const RATE_WINDOW_MS = 10_000;
const PLAIN_MAX_SILENCE_MS = 60_000;

/** Plain-line interval when stderr is not a terminal: 10 s, or GPTCUDA_PROGRESS_INTERVAL_MS (tests). */
export function plainProgressInterval(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env.GPTCUDA_PROGRESS_INTERVAL_MS);
  return Number.isFinite(v) && v >= 0 ? v : 10_000;
}

export class Progress {
  readonly enabled: boolean;
  private total: number | undefined;
  private done = 0;
  private status = '';
  private readonly label: string;
  private readonly stream: OutStream;
  private readonly logStream: OutStream;
  private readonly minIntervalMs: number;
  private readonly now: () => number;
  private readonly rateFmt: (perSecond: number) => string;
  private readonly amountFmt: (n: number) => string;
  private lastDraw = -Infinity;
  private drawn = false;
  private finished = false;
  private readonly plainIntervalMs: number | undefined;
  private readonly etaFromAverage: boolean;
  private readonly startTime: number;
  private readonly startDone: number;
  private lastPlain: number;
  private plainTimer: ReturnType<typeof setInterval> | undefined;
  /** Recent (time, done) samples, for a rate that follows speed changes. */
  private samples: Array<[number, number]> = [];

  constructor(options: ProgressOptions = {}) {
    this.stream = options.stream ?? process.stderr;
    this.logStream = options.logStream ?? process.stdout;
    this.enabled = options.enabled ?? this.stream.isTTY === true;
    this.total = options.total;
    this.label = options.label ?? '';
    this.minIntervalMs = options.minIntervalMs ?? 100;
    this.now = options.now ?? (() => performance.now());
    const unit = options.unit ?? '';
    this.rateFmt = options.formatRate ?? ((r) => formatRate(r, unit));
    // Exact counts read better for steps/batches; compact ones only when long.
    this.amountFmt = options.formatAmount ?? ((v) => (Number.isInteger(v) && Math.abs(v) < 100_000 ? String(v) : formatCount(v)));
    this.done = options.start ?? 0;
    this.samples.push([this.now(), this.done]);
    this.etaFromAverage = options.etaFromAverage ?? false;
    this.startTime = this.now();
    this.startDone = this.done;
    this.plainIntervalMs = this.enabled ? undefined : options.plainIntervalMs;
    this.lastPlain = this.now();
    if (this.plainIntervalMs !== undefined) {
      this.plainTimer = setInterval(() => {
        if (this.now() - this.lastPlain >= PLAIN_MAX_SILENCE_MS) this.plain();
      }, PLAIN_MAX_SILENCE_MS);
      this.plainTimer.unref();
    }
  }

  private plain(): void {
    if (this.finished) return;
    this.lastPlain = this.now();
    this.stream.write(`${this.render(200)}\n`);
  }

  /** Set absolute progress (and optionally the status text). */
  update(done: number, status?: string): void {
    if (status !== undefined) this.status = status;
    this.done = done;
    const t = this.now();
    // Coalesce very frequent updates so the sample list stays small.
    const lastSample = this.samples[this.samples.length - 1]!;
    if (this.samples.length > 1 && t - lastSample[0] < 50) {
      lastSample[0] = t;
      lastSample[1] = done;
    } else {
      this.samples.push([t, done]);
    }
    while (this.samples.length > 2 && t - this.samples[1]![0] > RATE_WINDOW_MS) this.samples.shift();
    this.draw(false);
  }

  tick(delta = 1, status?: string): void {
    this.update(this.done + delta, status);
  }

  setStatus(status: string): void {
    this.status = status;
    this.draw(false);
  }

  setTotal(total: number | undefined): void {
    this.total = total;
    this.draw(false);
  }

  /** Units of work per second over the last few seconds. */
  rate(): number {
    const first = this.samples[0]!;
    const last = this.samples[this.samples.length - 1]!;
    const dt = (last[0] - first[0]) / 1000;
    return dt > 0 ? (last[1] - first[1]) / dt : NaN;
  }

  /** The bar's text for a given width (exposed for tests). */
  render(columns: number): string {
    const parts: string[] = [];
    if (this.label) parts.push(this.label);
    const total = this.total;
    const known = total !== undefined && total > 0;
    const frac = known ? Math.min(1, Math.max(0, this.done / total)) : 0;
    const amount = known ? `${this.amountFmt(this.done)}/${this.amountFmt(total)}` : this.amountFmt(this.done);
    const rate = this.rate();
    const tail: string[] = [amount];
    if (known) tail.push(`${(frac * 100).toFixed(frac < 0.1 ? 1 : 0)}%`);
    if (Number.isFinite(rate) && rate > 0) {
      tail.push(this.rateFmt(rate));
      const elapsed = (this.now() - this.startTime) / 1000;
      const avg = elapsed > 0 ? (this.done - this.startDone) / elapsed : NaN;
      const etaRate = this.etaFromAverage && Number.isFinite(avg) && avg > 0 ? avg : rate;
      if (known && this.done < total) tail.push(`ETA ${formatDuration((total - this.done) / etaRate)}`);
    }
    if (this.status) tail.push(this.status);
    const text = tail.join(' ');
    const head = parts.join(' ');
    let line: string;
    if (known) {
      // Give the bar whatever room is left, within reason.
      const room = columns - 1 - (head ? head.length + 1 : 0) - text.length - 3;
      const width = Math.max(0, Math.min(20, room));
      if (width >= 5) {
        const filled = Math.round(frac * width);
        const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
        line = [head, bar, text].filter(Boolean).join(' ');
      } else {
        line = [head, text].filter(Boolean).join(' ');
      }
    } else {
      line = [head, text].filter(Boolean).join(' ');
    }
    // A line that wraps cannot be redrawn with "\r", so never fill the last column.
    const max = Math.max(1, columns - 1);
    const cps = Array.from(line);
    return cps.length > max ? cps.slice(0, max).join('') : line;
  }

  private columns(): number {
    const c = this.stream.columns;
    return typeof c === 'number' && c > 10 ? c : 80;
  }

  private draw(force: boolean): void {
    if (this.plainIntervalMs !== undefined && !this.finished && this.now() - this.lastPlain >= this.plainIntervalMs) this.plain();
    if (!this.enabled || this.finished) return;
    const t = this.now();
    if (!force && t - this.lastDraw < this.minIntervalMs) return;
    this.lastDraw = t;
    this.stream.write(`\r\x1b[2K${this.render(this.columns())}`);
    this.drawn = true;
  }

  private clear(): void {
    if (this.enabled && this.drawn && !this.finished) {
      this.stream.write('\r\x1b[2K');
      this.drawn = false;
    }
  }

  /** Run `fn` (which writes to the terminal) with the bar out of the way, then redraw it. */
  withCleared<T>(fn: () => T): T {
    const wasDrawn = this.drawn;
    this.clear();
    try {
      return fn();
    } finally {
      if (wasDrawn) this.draw(true);
    }
  }

  /** Print a line above the bar. */
  log(line: string): void {
    this.withCleared(() => {
      this.logStream.write(line.endsWith('\n') ? line : line + '\n');
    });
  }

  /** Draw the final state and leave it on its own line; later log() lines print plainly. */
  finish(status?: string): void {
    if (this.finished) return;
    if (this.plainTimer) clearInterval(this.plainTimer);
    if (status !== undefined) this.status = status;
    if (this.enabled) {
      this.draw(true);
      this.stream.write('\n');
    }
    this.finished = true;
  }
}

/** One JSON object per line on stdout, for scripts (`--json`). */
export class JsonLines {
  constructor(
    private readonly stream: OutStream = process.stdout,
    /** If given, its bar is cleared around each line so they cannot interleave on a shared terminal. */
    private readonly progress?: Progress,
  ) {}

  write(record: Record<string, unknown>): void {
    // BigInt has no JSON form; a string keeps its exact value.
    const line = JSON.stringify(record, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n';
    if (this.progress) this.progress.withCleared(() => this.stream.write(line));
    else this.stream.write(line);
  }
}
