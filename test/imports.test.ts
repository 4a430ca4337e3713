// The layering of ts/: no import circle, and no folder imports one above it.
// Type-only and dynamic imports count: a circle through types is still one
// concern depending on another both ways.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

const TS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'ts');

// Lowest first. A file may import its own folder or a folder before it;
// folders of equal rank (one inner array) may not import each other.
const LAYERS: string[][] = [
  ['io'],
  ['tensor'],
  ['nn'],
  ['model'],
  ['data'],
  ['generate'],
  ['train'],
  ['checkpoint'],
  ['weights'],
  ['cli', 'bench'],
  ['.'], // ts/index.ts, the library entry
];

type Graph = Map<string, string[]>;

const IMPORT_PATTERNS = [
  /\b(?:import|export)\b[^'";]*?\bfrom\s*['"](\.[^'"]+)['"]/g, // import x from './a.js', export { y } from './b.js'
  /\bimport\s*\(\s*['"](\.[^'"]+)['"]\s*\)/g, // await import('./c.js')
  /^\s*import\s*['"](\.[^'"]+)['"]/gm, // import './d.js'
];

/** Relative imports of every .ts file under `root`, as paths relative to root with .ts endings. */
function importGraph(root: string): Graph {
  const graph: Graph = new Map();
  for (const file of fs.readdirSync(root, { recursive: true, encoding: 'utf8' })) {
    if (!file.endsWith('.ts')) continue;
    const text = fs.readFileSync(path.join(root, file), 'utf8').replace(/^\s*\/\/.*$/gm, '');
    const targets = new Set<string>();
    for (const pattern of IMPORT_PATTERNS) {
      for (const m of text.matchAll(pattern)) {
        const target = path.relative(root, path.resolve(root, path.dirname(file), m[1])).replace(/\.js$/, '.ts');
        targets.add(target.split(path.sep).join('/'));
      }
    }
    graph.set(file.split(path.sep).join('/'), [...targets].sort());
  }
  return graph;
}

/** One import circle as a path a -> ... -> a, or null when there is none. */
function findCircle(graph: Graph): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): string[] | null => {
    if (state.get(node) === 'done') return null;
    if (state.get(node) === 'open') return [...stack.slice(stack.indexOf(node)), node];
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      const circle = visit(next);
      if (circle) return circle;
    }
    stack.pop();
    state.set(node, 'done');
    return null;
  };
  for (const node of graph.keys()) {
    const circle = visit(node);
    if (circle) return circle;
  }
  return null;
}

const folderOf = (file: string) => (file.includes('/') ? file.slice(0, file.indexOf('/')) : '.');

/** Imports that break LAYERS, as "from -> to" lines. */
function layerViolations(graph: Graph, layers: string[][]): string[] {
  const rank = new Map(layers.flatMap((folders, r) => folders.map((f) => [f, r] as const)));
  const bad: string[] = [];
  for (const [from, targets] of graph) {
    const a = folderOf(from);
    for (const to of targets) {
      const b = folderOf(to);
      const [ra, rb] = [rank.get(a), rank.get(b)];
      if (ra === undefined || rb === undefined) bad.push(`${from} -> ${to} (a folder missing from LAYERS)`);
      else if (a !== b && rb >= ra) bad.push(`${from} -> ${to}`);
    }
  }
  return bad;
}

describe('imports of ts/', () => {
  const graph = importGraph(TS);

  it('are read in every form: static, re-export, type-only, dynamic, multi-line', () => {
    expect(graph.get('index.ts')).toContain('model/gpt.ts'); // export { ... } from
    expect(graph.get('model/gpt.ts')).toEqual(expect.arrayContaining(['model/config.ts', 'tensor/ops.ts']));
    expect(graph.get('generate/generate.ts')).toContain('model/gpt.ts');
    expect(graph.get('checkpoint/checkpoint.ts')).toContain('train/trainer.ts'); // import type
    expect(graph.size).toBeGreaterThan(40);
    const tmp = fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? '/tmp'), 'gptcuda-imports-'));
    try {
      fs.mkdirSync(path.join(tmp, 'a'));
      fs.writeFileSync(path.join(tmp, 'a', 'x.ts'), "import {\n  y,\n} from '../b/y.js';\nconst z = await import('./z.js');\n// import q from './q.js';\n");
      expect(importGraph(tmp).get('a/x.ts')).toEqual(['a/z.ts', 'b/y.ts']);
    } finally {
      fs.rmSync(tmp, { recursive: true });
    }
  });

  it('the checks catch a circle and an upward import', () => {
    const g: Graph = new Map([
      ['tensor/a.ts', ['tensor/b.ts']],
      ['tensor/b.ts', ['model/c.ts']],
      ['model/c.ts', ['tensor/a.ts']],
    ]);
    expect(findCircle(g)).toEqual(['tensor/a.ts', 'tensor/b.ts', 'model/c.ts', 'tensor/a.ts']);
    expect(layerViolations(g, LAYERS)).toEqual(['tensor/b.ts -> model/c.ts']);
    expect(layerViolations(new Map([['cli/a.ts', ['bench/b.ts']]]), LAYERS)).toEqual(['cli/a.ts -> bench/b.ts']);
    expect(findCircle(new Map([['a.ts', ['b.ts']], ['b.ts', []]]))).toBeNull();
  });

  it('form no circle', () => {
    expect(findCircle(graph)).toBeNull();
  });

  it('never go from a folder to one above it (io < tensor < nn < model < data < generate < train < checkpoint < weights < cli, bench)', () => {
    expect(layerViolations(graph, LAYERS)).toEqual([]);
  });
});
