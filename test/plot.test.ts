import { describe, expect, it } from 'vitest';

import { escapeXml, lossPlotSvg, niceTicks, type LossHistory } from '../ts/train/plot.js';

/**
 * Minimal XML well-formedness check (no parser among the dependencies): every
 * tag closes in order, attributes are quoted, and text has no raw `<` or bare `&`.
 */
function assertWellFormed(svg: string): void {
  const stack: string[] = [];
  const tagRe = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = tagRe.exec(svg)) !== null) {
    const text = svg.slice(pos, m.index);
    expect(text).not.toMatch(/[<>]/);
    expect(text).not.toMatch(/&(?!(amp|lt|gt|quot|#39);)/);
    pos = m.index + m[0].length;
    const [, closing, name, , selfClosing] = m;
    if (closing) expect(stack.pop()).toBe(name);
    else if (!selfClosing) stack.push(name!);
  }
  expect(svg.slice(pos).trim()).toBe('');
  expect(stack).toEqual([]);
}

function polylines(svg: string, cls: string): Array<Array<[number, number]>> {
  const re = new RegExp(`<polyline class="${cls}" points="([^"]*)"([^>]*)/>`, 'g');
  return [...svg.matchAll(re)].map((m) => m[1]!.split(' ').map((p) => p.split(',').map(Number) as [number, number]));
}

function texts(svg: string, groupClass: string): string[] {
  const g = svg.match(new RegExp(`<g class="tick-labels ${groupClass}"[^>]*>([\\s\\S]*?)</g>`));
  return g ? [...g[1]!.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!) : [];
}

// Like the book's run: 10 epochs, evaluated every few steps.
function history(n: number): LossHistory {
  const epochsSeen = Array.from({ length: n }, (_, i) => (i * 10) / Math.max(1, n - 1));
  const tokensSeen = Array.from({ length: n }, (_, i) => 512 + i * 2560);
  const trainLosses = epochsSeen.map((e) => 0.5 + 9.5 * Math.exp(-e / 2));
  const valLosses = epochsSeen.map((e) => 6.3 + 3.7 * Math.exp(-e / 2));
  return { epochsSeen, tokensSeen, trainLosses, valLosses };
}

describe('lossPlotSvg', () => {
  it('is a well-formed standalone SVG', () => {
    const svg = lossPlotSvg(history(19));
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    assertWellFormed(svg);
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
  });

  it('draws training solid and validation dash-dot, one vertex per point', () => {
    const h = history(19);
    const svg = lossPlotSvg(h);
    const train = polylines(svg, 'train-loss');
    const val = polylines(svg, 'val-loss');
    expect(train.length).toBe(1);
    expect(val.length).toBe(1);
    expect(train[0]!.length).toBe(19);
    expect(val[0]!.length).toBe(19);
    expect(svg).toMatch(/<polyline class="val-loss"[^>]*stroke-dasharray=/);
    expect(svg).not.toMatch(/<polyline class="train-loss"[^>]*stroke-dasharray=/);
    // x increases with epochs; SVG y grows downwards, so falling loss means rising y.
    const xs = train[0]!.map((p) => p[0]);
    expect(xs).toEqual(xs.slice().sort((a, b) => a - b));
    expect(train[0]![0]![1]).toBeLessThan(train[0]![18]![1]);
    // Validation loss stays above training loss at the end → smaller y.
    expect(val[0]![18]![1]).toBeLessThan(train[0]![18]![1]);
    // Same epochs → same x positions for both series.
    expect(val[0]!.map((p) => p[0])).toEqual(xs);
  });

  it('labels the axes and the legend, and has a tokens-seen axis on top', () => {
    const svg = lossPlotSvg(history(19));
    for (const label of ['>Epochs<', '>Loss<', '>Tokens seen<', '>Training loss<', '>Validation loss<']) expect(svg).toContain(label);
    // Epoch ticks are integers (MaxNLocator(integer=True)) spanning 0..10.
    const epochs = texts(svg, 'x-bottom');
    expect(epochs).toContain('0');
    expect(epochs).toContain('10');
    for (const t of epochs) expect(t).toMatch(/^-?\d+$/);
    // Tokens run from 512 to 46,592: round ticks with k suffixes.
    const tokens = texts(svg, 'x-top');
    expect(tokens.length).toBeGreaterThanOrEqual(3);
    expect(tokens).toContain('20k');
    expect(tokens).toContain('40k');
    const losses = texts(svg, 'y-left');
    expect(losses.length).toBeGreaterThanOrEqual(3);
    expect(svg).toMatch(/<g class="axis x-top"/);
  });

  it('handles a single point', () => {
    const svg = lossPlotSvg({ epochsSeen: [0], tokensSeen: [512], trainLosses: [9.8], valLosses: [9.9] });
    assertWellFormed(svg);
    expect(svg).not.toMatch(/NaN|Infinity|undefined/);
    expect((svg.match(/<circle /g) ?? []).length).toBe(2);
    expect(polylines(svg, 'train-loss')[0]!.length).toBe(1);
    expect(texts(svg, 'x-bottom')).toEqual(['0']);
  });

  it('breaks the line at NaN/Infinity losses instead of emitting NaN', () => {
    const svg = lossPlotSvg({
      epochsSeen: [0, 1, 2, 3, 4],
      tokensSeen: [0, 1e6, 2e6, 3e6, 4e6],
      trainLosses: [9.5, 5, Number.NaN, 3, 2.5],
      valLosses: [9.9, 6, Number.POSITIVE_INFINITY, 5, 5.5],
    });
    assertWellFormed(svg);
    expect(svg).not.toMatch(/NaN|Infinity/);
    expect(polylines(svg, 'train-loss').map((s) => s.length)).toEqual([2, 2]);
    expect(polylines(svg, 'val-loss').map((s) => s.length)).toEqual([2, 2]);
    expect(texts(svg, 'x-top')).toContain('2M');
  });

  it('draws empty axes for no data', () => {
    const svg = lossPlotSvg({ epochsSeen: [], tokensSeen: [], trainLosses: [], valLosses: [] });
    assertWellFormed(svg);
    expect(svg).toContain('no data');
    expect(svg).toContain('>Epochs<');
  });

  it('escapes text and validates input', () => {
    const svg = lossPlotSvg(history(3), { title: 'run <a> & "b"' });
    assertWellFormed(svg);
    expect(svg).toContain('run &lt;a&gt; &amp; &quot;b&quot;');
    expect(escapeXml(`<&>"'`)).toBe('&lt;&amp;&gt;&quot;&#39;');
    expect(() => lossPlotSvg({ epochsSeen: [0, 1], tokensSeen: [0], trainLosses: [1, 2], valLosses: [1, 2] })).toThrow(/tokensSeen/);
    expect(() => lossPlotSvg({ epochsSeen: [0, Number.NaN], tokensSeen: [0, 1], trainLosses: [1, 2], valLosses: [1, 2] })).toThrow(/finite/);
  });
});

describe('niceTicks', () => {
  it('picks round steps within the domain', () => {
    expect(niceTicks(0, 10, 5)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(-0.5, 10.5, 7, true)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(-0.05, 1.05, 7, true)).toEqual([0, 1]);
    expect(niceTicks(0.3, 2.6, 5)).toEqual([0.5, 1, 1.5, 2, 2.5]);
    expect(niceTicks(0, 1, 4)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(niceTicks(1, 1)).toEqual([]);
  });
});
