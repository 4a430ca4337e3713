// What `train` writes while it runs: the run directory's log.jsonl and
// loss-plot.svg, and the terminal's text lines and progress bar, or JSON lines
// on stdout with --json. In a data-parallel job only rank 0 writes any of it.
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWriteFile } from '../checkpoint/atomic.js';
import { lossPlotSvg } from '../train/plot.js';
import type { TrainEvent, TrainState } from '../train/trainer.js';
import { JsonLines, Progress, plainProgressInterval } from './progress.js';

type LogRecord = Record<string, unknown>;

function formatEval(e: Extract<TrainEvent, { event: 'eval' }>): string {
  return `Ep ${e.epoch} (Step ${String(e.step).padStart(6, '0')}): Train loss ${e.train_loss.toFixed(3)}, Val loss ${e.val_loss.toFixed(3)}`;
}

export class TrainOutput {
  readonly logPath: string;
  readonly plotPath: string;
  private readonly json: JsonLines | null;
  private readonly writes: boolean;
  private progress: Progress | null = null;
  private tokensPerStep = 0;
  private lastTick = 0;
  private rate = 0;

  constructor(
    runDir: string,
    options: { json: boolean; writes: boolean },
  ) {
    this.logPath = join(runDir, 'log.jsonl');
    this.plotPath = join(runDir, 'loss-plot.svg');
    this.writes = options.writes;
    this.json = options.json && options.writes ? new JsonLines() : null;
  }

  get isJson(): boolean {
    return this.json !== null;
  }

  /** A line of text for a terminal (none with --json, or on ranks other than 0). */
  say(line: string): void {
    if (!this.json && this.writes) console.log(line);
  }

  /** A notice that must not mix with JSON lines on stdout: stderr with --json, above the bar otherwise. */
  notice(line: string): void {
    if (!this.writes) return;
    if (this.progress && !this.json) this.progress.log(line);
    else console.error(line);
  }

  /** A record for log.jsonl, and for stdout with --json. */
  record(r: LogRecord): void {
    if (!this.writes) return;
    appendFileSync(this.logPath, JSON.stringify(r) + '\n');
    this.json?.write(r);
  }

  /** A record for log.jsonl only (stdout gets its own line, e.g. on stderr). */
  logOnly(r: LogRecord): void {
    if (this.writes) appendFileSync(this.logPath, JSON.stringify(r) + '\n');
  }

  startProgress(total: number, start: number, tokensPerStep: number): void {
    this.tokensPerStep = tokensPerStep;
    this.lastTick = performance.now();
    this.progress = new Progress({
      total, label: 'train', unit: 'step', start, etaFromAverage: true,
      enabled: !this.json && this.writes && process.stderr.isTTY === true,
      plainIntervalMs: this.json || !this.writes ? undefined : plainProgressInterval(),
    });
  }

  /** A trainer event: logged, and shown as the bar (steps), a line (evals, samples) or a JSON line. */
  event(e: TrainEvent): void {
    if (!this.writes) return;
    this.record(e as unknown as LogRecord);
    if (this.json || !this.progress) return;
    if (e.event === 'step') {
      const now = performance.now();
      const inst = this.tokensPerStep / Math.max((now - this.lastTick) / 1000, 1e-9);
      this.rate = this.rate === 0 ? inst : 0.8 * this.rate + 0.2 * inst;
      this.lastTick = now;
      this.progress.update(e.step + 1, `loss ${e.loss.toFixed(3)} | ${Math.round(this.rate)} tok/s`);
    } else if (e.event === 'eval') {
      this.progress.log(formatEval(e));
    } else {
      this.progress.log(e.text);
    }
  }

  finishProgress(): void {
    this.progress?.finish();
  }

  /** The loss plot, replaced atomically: a viewer never sees half an SVG. */
  async writePlot(state: TrainState): Promise<void> {
    const h = state.history;
    if (!this.writes || h.trainLosses.length === 0) return;
    await atomicWriteFile(this.plotPath, lossPlotSvg({ epochsSeen: h.epochsSeen, tokensSeen: h.tokensSeen, trainLosses: h.trainLosses, valLosses: h.valLosses }));
  }
}
