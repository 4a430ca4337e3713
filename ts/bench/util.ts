// Shared pieces of the benchmark: timing, tables, memory readings.
import { native } from '../tensor/native.js';
import type { Device } from '../tensor/tensor.js';

export interface Timing {
  /** Median seconds per repetition. */
  median: number;
  min: number;
  reps: number;
}

export interface TimeOptions {
  warmup?: number;
  minReps?: number;
  maxReps?: number;
  /** Keep repeating (up to maxReps) until this much time was measured. */
  minSeconds?: number;
}

export const now = () => performance.now() / 1000;

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** Waits for the device's queued work (a no-op on the CPU, whose ops are synchronous). */
export function sync(device: Device): void {
  if (device === 'cuda') native().synchronize('cuda');
}

/** Median wall time of `fn` after warmup repetitions; each repetition ends synchronised. */
export function timeIt(fn: () => void, device: Device, o: TimeOptions = {}): Timing {
  const warmup = o.warmup ?? 1, minReps = o.minReps ?? 3, maxReps = o.maxReps ?? 20, minSeconds = o.minSeconds ?? 0.5;
  for (let i = 0; i < warmup; i++) fn();
  sync(device);
  const times: number[] = [];
  let total = 0;
  while (times.length < minReps || (total < minSeconds && times.length < maxReps)) {
    const t0 = now();
    fn();
    sync(device);
    const dt = now() - t0;
    times.push(dt);
    total += dt;
  }
  return { median: median(times), min: Math.min(...times), reps: times.length };
}

export type Cell = string | number;

/** A plain-text table: numbers right-aligned, text left-aligned. */
export function formatTable(headers: string[], rows: Cell[][]): string {
  const text = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || r[i] === '-'));
  const line = (cells: string[]) =>
    cells.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...text.map(line)].join('\n');
}

/** Numbers with 3-4 significant digits, no exponent for the usual ranges. */
export function fmt(x: number): string {
  if (!Number.isFinite(x) || Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 10) return x.toFixed(2);
  if (a >= 1) return x.toFixed(3);
  return x.toPrecision(3);
}

export const MB = 1024 * 1024;

/** The process's resident-set high-water mark in bytes (maxRSS is in KiB on Linux). */
export function maxRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/** Rounds for the JSON summary. */
export const round = (x: number, digits = 3) => Number(x.toFixed(digits));
