/**
 * The book's `plot_losses` (chapter 5) as a standalone SVG, so a training run
 * can save its loss curve without matplotlib or any other dependency.
 *
 * Like the book: training loss solid, validation loss dash-dot, x axis in
 * epochs with integer ticks, legend in the upper right, and a second x axis on
 * top for tokens seen (matplotlib's `twiny`, scaled independently to the token
 * counts). Axes get matplotlib's 5% margins around the data.
 */

export interface LossHistory {
  epochsSeen: number[];
  tokensSeen: number[];
  trainLosses: number[];
  valLosses: number[];
}

export interface LossPlotOptions {
  /** Pixels; default 500 × 300 (the book's figsize=(5, 3) at 100 dpi). */
  width?: number;
  height?: number;
  title?: string;
}

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Shortest decimal for a coordinate; keeps the SVG small and free of "1e-7". */
function n(v: number): string {
  const r = Math.round(v * 100) / 100;
  return Object.is(r, -0) ? '0' : String(r);
}

interface Domain {
  lo: number;
  hi: number;
}

function paddedDomain(values: number[]): Domain {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!(hi > lo)) {
    // One distinct value: give it some room instead of a zero-width axis
    // (about what matplotlib does for a single point).
    const d = lo !== 0 ? Math.abs(lo) * 0.05 : 0.05;
    return { lo: lo - d, hi: hi + d };
  }
  const m = (hi - lo) * 0.05;
  return { lo: lo - m, hi: hi + m };
}

/** matplotlib's MaxNLocator steps; 2.5 is not used where ticks must be integers. */
function niceStep(raw: number, integer: boolean): number {
  const exp = Math.floor(Math.log10(raw));
  const base = Math.pow(10, exp);
  const f = raw / base;
  const steps = integer && base < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  // Smallest nice step at least as large as the raw one.
  const nf = steps.find((st) => st >= f - 1e-9) ?? 10;
  return nf * base;
}

/** Decimals needed to write `step` (and its multiples) exactly: 0.25 → 2, 5 → 0. */
function decimalsFor(step: number): number {
  for (let d = 0; d < 12; d++) {
    const scaled = step * Math.pow(10, d);
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
  }
  return 12;
}

/**
 * Ticks at round numbers (1, 2, 2.5, 5 × 10^k) inside the domain, spaced so
 * that the domain holds at most `maxBins` intervals (matplotlib's MaxNLocator).
 */
export function niceTicks(lo: number, hi: number, maxBins = 7, integer = false): number[] {
  if (!(hi > lo) || !Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  let step = niceStep((hi - lo) / Math.max(1, maxBins), integer);
  if (integer) step = Math.max(1, Math.round(step));
  const first = Math.ceil(lo / step - 1e-9);
  const last = Math.floor(hi / step + 1e-9);
  const decimals = decimalsFor(step);
  const ticks: number[] = [];
  for (let k = first; k <= last; k++) ticks.push(Number((k * step).toFixed(decimals)));
  return ticks;
}

function formatTick(v: number, step: number): string {
  return (v === 0 ? 0 : v).toFixed(decimalsFor(step));
}

/** Token counts get k/M/B suffixes so the top labels stay narrow. */
function formatTokens(v: number, step: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  const scaled = (div: number, suffix: string): string => `${(v / div).toFixed(decimalsFor(step / div))}${suffix}`;
  if (a >= 1e9 || step >= 1e9) return scaled(1e9, 'B');
  if (a >= 1e6 || step >= 1e6) return scaled(1e6, 'M');
  if (a >= 1e3 || step >= 1e3) return scaled(1e3, 'k');
  return formatTick(v, step);
}

const TRAIN_COLOR = '#1f77b4';
const VAL_COLOR = '#ff7f0e';
/** matplotlib's "-." pattern (6.4, 1.6, 1, 1.6) scaled by its 1.5 px line width. */
const DASH_DOT = '9.6,2.4,1.5,2.4';

export function lossPlotSvg(history: LossHistory, options: LossPlotOptions = {}): string {
  const { epochsSeen, tokensSeen, trainLosses, valLosses } = history;
  const count = epochsSeen.length;
  for (const [name, arr] of [
    ['tokensSeen', tokensSeen],
    ['trainLosses', trainLosses],
    ['valLosses', valLosses],
  ] as const) {
    if (arr.length !== count) {
      throw new Error(`lossPlotSvg: ${name} has ${arr.length} values but epochsSeen has ${count}`);
    }
  }
  for (let i = 0; i < count; i++) {
    if (!Number.isFinite(epochsSeen[i]!) || !Number.isFinite(tokensSeen[i]!)) {
      throw new Error(`lossPlotSvg: epochsSeen/tokensSeen must be finite numbers (index ${i})`);
    }
  }

  const W = options.width ?? 500;
  const H = options.height ?? 300;
  const title = options.title;
  const left = 58;
  const right = 14;
  const top = title ? 66 : 48;
  const bottom = 42;
  const x0 = left;
  const x1 = W - right;
  const y0 = top;
  const y1 = H - bottom;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">`,
  );
  out.push(`<title>${escapeXml(title ?? 'Training and validation loss')}</title>`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  if (title) out.push(`<text x="${n((x0 + x1) / 2)}" y="16" text-anchor="middle" font-size="13">${escapeXml(title)}</text>`);

  // Losses may contain NaN/Infinity after a divergence: those points are left
  // out (breaking the line) rather than poisoning the axis range.
  const finiteLosses = [...trainLosses, ...valLosses].filter((v) => Number.isFinite(v));
  if (count === 0 || finiteLosses.length === 0) {
    out.push(`<rect x="${x0}" y="${y0}" width="${n(x1 - x0)}" height="${n(y1 - y0)}" fill="none" stroke="#000000" stroke-width="0.8"/>`);
    out.push(`<text x="${n((x0 + x1) / 2)}" y="${n((y0 + y1) / 2)}" text-anchor="middle" fill="#555555">no data</text>`);
    pushAxisLabels(out, x0, x1, y0, y1, H);
    out.push('</svg>');
    return out.join('\n') + '\n';
  }

  const ed = paddedDomain(epochsSeen);
  const td = paddedDomain(tokensSeen);
  const ld = paddedDomain(finiteLosses);
  const sx = (e: number): number => x0 + ((e - ed.lo) / (ed.hi - ed.lo)) * (x1 - x0);
  const sxTok = (t: number): number => x0 + ((t - td.lo) / (td.hi - td.lo)) * (x1 - x0);
  const sy = (l: number): number => y1 - ((l - ld.lo) / (ld.hi - ld.lo)) * (y1 - y0);

  // Bottom axis: epochs, integer ticks (the book's MaxNLocator(integer=True)).
  pushAxis(out, 'x-bottom', 'middle', niceTicks(ed.lo, ed.hi, 7, true),
    (t) => `<line x1="${n(sx(t))}" y1="${n(y1)}" x2="${n(sx(t))}" y2="${n(y1 + 4)}"/>`,
    (t, step) => `<text x="${n(sx(t))}" y="${n(y1 + 16)}">${escapeXml(formatTick(t, step))}</text>`);
  // Top axis: tokens seen.
  pushAxis(out, 'x-top', 'middle', niceTicks(td.lo, td.hi, 6, true),
    (t) => `<line x1="${n(sxTok(t))}" y1="${n(y0)}" x2="${n(sxTok(t))}" y2="${n(y0 - 4)}"/>`,
    (t, step) => `<text x="${n(sxTok(t))}" y="${n(y0 - 8)}">${escapeXml(formatTokens(t, step))}</text>`);
  // Left axis: loss.
  pushAxis(out, 'y-left', 'end', niceTicks(ld.lo, ld.hi, 7, false),
    (t) => `<line x1="${n(x0 - 4)}" y1="${n(sy(t))}" x2="${n(x0)}" y2="${n(sy(t))}"/>`,
    (t, step) => `<text x="${n(x0 - 7)}" y="${n(sy(t) + 4)}">${escapeXml(formatTick(t, step))}</text>`);

  out.push(`<rect class="frame" x="${x0}" y="${y0}" width="${n(x1 - x0)}" height="${n(y1 - y0)}" fill="none" stroke="#000000" stroke-width="0.8"/>`);

  pushSeries(out, 'train-loss', epochsSeen, trainLosses, sx, sy, TRAIN_COLOR, null);
  pushSeries(out, 'val-loss', epochsSeen, valLosses, sx, sy, VAL_COLOR, DASH_DOT);

  // Legend, upper right as in the book.
  const lw = 128;
  const lh = 42;
  const lx = x1 - lw - 8;
  const ly = y0 + 8;
  out.push('<g class="legend">');
  out.push(`<rect x="${n(lx)}" y="${n(ly)}" width="${lw}" height="${lh}" rx="3" fill="#ffffff" fill-opacity="0.8" stroke="#cccccc"/>`);
  out.push(`<line x1="${n(lx + 8)}" y1="${n(ly + 13)}" x2="${n(lx + 36)}" y2="${n(ly + 13)}" stroke="${TRAIN_COLOR}" stroke-width="1.5"/>`);
  out.push(`<text x="${n(lx + 44)}" y="${n(ly + 17)}">${escapeXml('Training loss')}</text>`);
  out.push(
    `<line x1="${n(lx + 8)}" y1="${n(ly + 30)}" x2="${n(lx + 36)}" y2="${n(ly + 30)}" stroke="${VAL_COLOR}" stroke-width="1.5" stroke-dasharray="${DASH_DOT}"/>`,
  );
  out.push(`<text x="${n(lx + 44)}" y="${n(ly + 34)}">${escapeXml('Validation loss')}</text>`);
  out.push('</g>');

  pushAxisLabels(out, x0, x1, y0, y1, H);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** One axis's tick marks and tick labels, as two groups named after its side; labels get the tick spacing. */
function pushAxis(
  out: string[],
  side: string,
  anchor: 'middle' | 'end',
  ticks: number[],
  mark: (t: number) => string,
  label: (t: number, step: number) => string,
): void {
  const step = ticks.length > 1 ? ticks[1]! - ticks[0]! : 1;
  out.push(`<g class="axis ${side}" stroke="#000000" stroke-width="0.8">`);
  for (const t of ticks) out.push(mark(t));
  out.push('</g>');
  out.push(`<g class="tick-labels ${side}" text-anchor="${anchor}">`);
  for (const t of ticks) out.push(label(t, step));
  out.push('</g>');
}

function pushAxisLabels(out: string[], x0: number, x1: number, y0: number, y1: number, H: number): void {
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  out.push(`<text class="axis-label x-bottom" x="${n(cx)}" y="${n(H - 8)}" text-anchor="middle" font-size="12">Epochs</text>`);
  out.push(`<text class="axis-label x-top" x="${n(cx)}" y="${n(y0 - 26)}" text-anchor="middle" font-size="12">Tokens seen</text>`);
  out.push(`<text class="axis-label y-left" x="14" y="${n(cy)}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${n(cy)})">Loss</text>`);
}

function pushSeries(
  out: string[],
  cls: string,
  xs: number[],
  ys: number[],
  sx: (v: number) => number,
  sy: (v: number) => number,
  color: string,
  dash: string | null,
): void {
  const segments: Array<Array<[number, number]>> = [];
  let cur: Array<[number, number]> = [];
  for (let i = 0; i < xs.length; i++) {
    const y = ys[i]!;
    if (Number.isFinite(y)) {
      cur.push([sx(xs[i]!), sy(y)]);
    } else if (cur.length > 0) {
      segments.push(cur);
      cur = [];
    }
  }
  if (cur.length > 0) segments.push(cur);
  const dashAttr = dash ? ` stroke-dasharray="${dash}"` : '';
  out.push(`<g class="series ${cls}">`);
  for (const seg of segments) {
    if (seg.length === 1) {
      // A one-point polyline draws nothing; mark the point instead.
      out.push(`<circle cx="${n(seg[0]![0])}" cy="${n(seg[0]![1])}" r="2.5" fill="${color}"/>`);
    }
    out.push(
      `<polyline class="${cls}" points="${seg.map(([x, y]) => `${n(x)},${n(y)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="1.5" stroke-linejoin="round"${dashAttr}/>`,
    );
  }
  out.push('</g>');
}
