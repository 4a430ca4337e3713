// Token + position embedding, forward (one float32 addition: bit-exact) and
// backward (rows accumulated over repeated ids and over the batch).
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpContext, type OpEntry } from './context.js';

interface EmbeddingCase {
  B: number; T: number; C: number; V: number; pos0: number;
  /** Rows of wpe (at least pos0 + T). */
  P: number;
  /** Element offset of out, wte, wpe and dout in their buffers (1: unaligned, the CUDA scalar path). */
  offset?: number;
  /** Ids drawn from [0, idRange) (default V): a small range repeats ids. */
  idRange?: number;
}
const CASES: EmbeddingCase[] = [
  { B: 3, T: 7, C: 6, V: 37, pos0: 0, P: 7 },
  { B: 2, T: 1, C: 5, V: 11, pos0: 3, P: 8 }, // T = 1
  { B: 1, T: 5, C: 3, V: 4, pos0: 2, P: 7 }, // tiny vocabulary: many repeated ids
  { B: 2, T: 5, C: 4, V: 3, pos0: 0, P: 5, idRange: 1 }, // one id everywhere (id 0, and V-1 once)
  { B: 2, T: 7, C: 37, V: 11, pos0: 0, P: 7 },
  { B: 3, T: 5, C: 64, V: 9, pos0: 4, P: 9 }, // C % 4 == 0: float4 rows
  { B: 3, T: 5, C: 64, V: 9, pos0: 4, P: 10, offset: 1 }, // the same, unaligned
  { B: 1, T: 9, C: 300, V: 50, pos0: 2, P: 11, offset: 1 }, // rows wider than one 256-thread block
  { B: 2, T: 64, C: 48, V: 101, pos0: 5, P: 80 },
  { B: 4, T: 65, C: 96, V: 1003, pos0: 7, P: 74, idRange: 9 },
];
const label = (c: EmbeddingCase) =>
  `B=${c.B} T=${c.T} C=${c.C} V=${c.V} pos0=${c.pos0}${c.offset ? ` offset=${c.offset}` : ''}${c.idRange ? ` ids<${c.idRange}` : ''}`;

function inputs(k: OpContext, c: EmbeddingCase) {
  const rng = new R.SeededRandom(c.B * 1000 + c.T * 10 + c.C + (c.offset ?? 0));
  const ids = rng.ints(c.B * c.T, 0, c.idRange ?? c.V);
  ids[0] = c.V - 1; // the last row is reachable
  if (c.B * c.T > 2) ids[c.B * c.T - 1] = ids[1]!; // a repeated id
  return { rng, ids, wte: k.round(rng.floats(c.V * c.C)), wpe: k.round(rng.floats(c.P * c.C)) };
}

const embeddingForward: OpEntry = {
  op: 'embeddingForward',
  cases: CASES.map((c) => ({
    name: label(c),
    run(k: OpContext) {
      const { B, T, C, pos0, offset = 0 } = c;
      const { rng, ids, wte, wpe } = inputs(k, c);
      const out = k.placed(k.round(rng.floats(B * T * C)), offset, [B, T, C]); // garbage: the forward overwrites
      ops.embeddingForward(out.view, k.tensor(ids, [B, T]), k.placed(wte, offset, [c.V, C]).view,
        k.placed(wpe, offset, [c.P, C]).view, pos0);
      // one float32 addition per element (then, bfloat16, one rounding to nearest even): correctly rounded on every backend
      k.exact('embedding out', out.read('embedding out'), k.stored(R.embeddingRef(ids, R.f64(wte), R.f64(wpe), B, T, C, pos0)));
    },
  })),
};

const embeddingBackward: OpEntry = {
  op: 'embeddingBackward',
  cases: CASES.flatMap((c) => (['both', 'dwte', 'dwpe'] as const)
    .filter((want) => want === 'both' || c.V * c.C < 5000)
    .map((want) => ({
      name: `${label(c)} ${want === 'both' ? 'dwte and dwpe' : `${want} alone`}, accumulates`,
      run(k: OpContext) {
        const { B, T, C, V, P, pos0, offset = 0 } = c;
        const { rng, ids, wte, wpe } = inputs(k, c);
        const dout = k.round(rng.floats(B * T * C));
        const pre = { dwte: k.round(rng.floats(V * C, 0.5)), dwpe: k.round(rng.floats(P * C, 0.5)) };
        const dwte = k.placed(pre.dwte, offset, [V, C]), dwpe = k.placed(pre.dwpe, offset, [P, C]);
        ops.embeddingBackward(want === 'dwpe' ? null : dwte.view, want === 'dwte' ? null : dwpe.view,
          k.placed(dout, offset, [B, T, C]).view, k.tensor(ids, [B, T]), pos0);
        const g = R.embeddingBackwardRef(ids, R.f64(dout), B, T, C, V, P, pos0);
        const d64 = R.f64(dout);
        const check = (name: 'dwte' | 'dwpe', analytic: R.F64, loss: (x: R.F64) => number, at: Float32Array) => {
          const got = (name === 'dwte' ? dwte : dwpe).read(name);
          if (want !== 'both' && want !== name) return k.exact(`${name} (not wanted) untouched`, got, pre[name]);
          k.gradient(name, got, analytic, 'reduction', { loss, at }, pre[name]);
          // rows no token or position reaches are left exactly as they were
          const untouched = (row: number) => analytic.subarray(row * C, (row + 1) * C).every((v) => v === 0);
          for (let row = 0; row < at.length / C; row++)
            if (untouched(row)) k.exact(`${name} row ${row} (not reached)`, got.subarray(row * C, (row + 1) * C), pre[name].subarray(row * C, (row + 1) * C));
        };
        check('dwte', g.dwte, (x) => R.dot(d64, R.embeddingRef(ids, x, R.f64(wpe), B, T, C, pos0)), wte);
        check('dwpe', g.dwpe, (x) => R.dot(d64, R.embeddingRef(ids, R.f64(wte), x, B, T, C, pos0)), wpe);
      },
    }))),
};

export const EMBEDDING: OpEntry[] = [embeddingForward, embeddingBackward];
