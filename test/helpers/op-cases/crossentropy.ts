// Cross-entropy over the last dimension, alone and fused with its gradient
// (dlogits written, possibly in place over the logits): ignored rows, a
// custom ignore index, rows whose exp overflows float32, V from 2 to GPT-2's
// 50257, 3-D logits, unaligned views (the CUDA scalar loads).
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpContext, type OpEntry } from './context.js';

interface CrossEntropyCase {
  /** Leading dimensions of the logits (rows N = their product). */
  rows: number[];
  V: number;
  ignore: number[];
  /** A row whose logits are ~90: exp overflows float32 unless the max is subtracted. */
  hot: number;
  ignoreIndex?: number;
  /** Element offset of logits and dlogits in their buffers. */
  offset?: number;
}
const CASES: CrossEntropyCase[] = [
  { rows: [21], V: 37, ignore: [2, 5, 20], hot: 3 },
  { rows: [1], V: 37, ignore: [], hot: -1 },
  { rows: [1], V: 2, ignore: [], hot: 0 },
  { rows: [3], V: 2, ignore: [1], hot: 0 },
  { rows: [6], V: 64, ignore: [1], hot: 4 }, // V % 4 == 0: float4 rows
  { rows: [5], V: 64, ignore: [0], hot: 2, offset: 1 }, // the same, unaligned
  { rows: [6], V: 9, ignore: [1, 4], hot: -1, ignoreIndex: -1 },
  { rows: [3, 7], V: 37, ignore: [4], hot: 6 }, // 3-D logits [B, T, V], targets [B, T]
  { rows: [128], V: 257, ignore: [0, 64, 127], hot: 10 },
  { rows: [65], V: 1003, ignore: [1], hot: 0 },
  { rows: [3], V: 2053, ignore: [], hot: 1, offset: 3 },
  { rows: [8], V: 5003, ignore: [7], hot: 2 },
  { rows: [4], V: 50257, ignore: [1], hot: 0 },
];
const label = (c: CrossEntropyCase) =>
  `${JSON.stringify([...c.rows, c.V])} ${c.ignore.length} ignored${c.ignoreIndex !== undefined ? ` (index ${c.ignoreIndex})` : ''}${c.hot >= 0 ? ', a row past exp overflow' : ''}${c.offset ? ` offset=${c.offset}` : ''}`;

function inputs(k: OpContext, c: CrossEntropyCase) {
  const N = c.rows.reduce((a, b) => a * b, 1), V = c.V, ignoreIndex = c.ignoreIndex ?? -100;
  const rng = new R.SeededRandom(N * V + (c.offset ?? 0));
  const logits = rng.floats(N * V, 2);
  if (c.hot >= 0) for (let v = 0; v < V; v++) logits[c.hot * V + v] = 90 + 20 * rng.normal();
  const targets = rng.ints(N, 0, V);
  targets[0] = V - 1;
  for (const r of c.ignore) targets[r] = ignoreIndex;
  logits.set(k.round(logits));
  return { rng, N, V, ignoreIndex, logits, targets, ref: R.crossEntropyRef(R.f64(logits), targets, N, V, ignoreIndex) };
}

const crossentropyForward: OpEntry = {
  op: 'crossentropyForward',
  cases: CASES.map((c) => ({
    name: label(c),
    run(k: OpContext) {
      const { N, V, ignoreIndex, logits, targets, ref } = inputs(k, c);
      const losses = k.tensor(new Float32Array(N).fill(7), c.rows, 'float32'); // garbage: written
      const l = k.placed(logits, c.offset ?? 0, [...c.rows, V]);
      ops.crossentropyForward(losses, l.view, k.tensor(targets, c.rows), ignoreIndex);
      // float32 losses of exact inputs: the float32 budget whatever the storage type
      k.close('losses', losses, ref.losses, 'reduction', 0.01, k.rtolFloat32('reduction'));
      k.exact('losses of ignored rows', c.ignore.map((r) => losses.toFloat32Array()[r]!), c.ignore.map(() => 0));
      k.exact('logits (read only)', l.read('logits'), logits);
    },
  })),
};

const crossentropyForwardBackward: OpEntry = {
  op: 'crossentropyForwardBackward',
  cases: CASES.flatMap((c) => [false, true].map((inPlace) => ({
    name: `${label(c)}${inPlace ? ', dlogits in place over the logits' : ''}`,
    run(k: OpContext) {
      const { rng, N, V, ignoreIndex, logits, targets, ref } = inputs(k, c);
      const off = c.offset ?? 0, shape = [...c.rows, V];
      const dloss = 1 / Math.max(1, ref.nValid);
      const losses = k.zeros(c.rows, 'float32');
      const l = k.placed(logits, off, shape);
      const dl = inPlace ? l : k.placed(k.round(rng.floats(N * V, 100)), off, shape); // garbage: dlogits is written, not accumulated
      ops.crossentropyForwardBackward(losses, dl.view, l.view, k.tensor(targets, c.rows), dloss, ignoreIndex);
      k.close('fused losses', losses, ref.losses, 'reduction', 0.01, k.rtolFloat32('reduction'));
      const g = dl.read('dlogits');
      const analytic = R.crossEntropyGradRef(R.f64(logits), targets, N, V, dloss, ignoreIndex);
      // the loss whose gradient dlogits is: dloss * the sum of the row losses
      const ones = new Float64Array(N).fill(1);
      const loss = (x: R.F64) => dloss * R.dot(R.crossEntropyRef(x, targets, N, V, ignoreIndex).losses, ones); // compensated sum
      k.gradient('dlogits', g, analytic, 'reduction', { loss, at: logits, coords: N * V > 1e5 ? 40 : 300, floorFrac: 0.01 }); // the softmax tails too
      for (const r of c.ignore) k.exact(`dlogits of ignored row ${r}`, g.subarray(r * V, (r + 1) * V), new Float32Array(V));
    },
  }))),
};

export const CROSSENTROPY: OpEntry[] = [crossentropyForward, crossentropyForwardBackward];
