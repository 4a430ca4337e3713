// convert: float32 <-> bfloat16. The expected bits come from an independent
// rounding in float64 (bf16.ts: the two bf16 neighbours, the nearer one, ties
// to even), not from bit tricks like the backends'.
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { bf16Nearest, bf16Value, valueOf } from './bf16.js';
import { type OpEntry } from './context.js';

function inputs(n: number, seed: number): Float32Array {
  const rng = new R.SeededRandom(seed);
  const x = Float32Array.from({ length: n }, () => rng.normal() * 10 ** rng.int(-6, 7));
  // exact ties (both parities), the largest finite float (rounds to inf), tiny and special values
  const special = [valueOf(0x3f808000), valueOf(0x3f818000), valueOf(0x7f7fffff), -valueOf(0x7f7fffff), 1e-40, -0, 0,
    Infinity, -Infinity, valueOf(0x3f80ffff)];
  x.set(special.slice(0, Math.min(n, special.length)));
  return x;
}

export const convert: OpEntry = {
  op: 'convert',
  untyped: true,
  cases: [7, 1031, 100_003].map((n) => ({
    name: `float32 -> bfloat16 -> float32, n=${n}, ties and overflow`,
    run(k) {
      const x = inputs(n, n);
      const src = k.tensor(x, [n]);
      const half = k.zeros([n], 'bfloat16');
      ops.convert(half, src);
      const bits = half.handle.read() as Uint16Array;
      k.exact('float32 -> bfloat16 bits', bits, Uint16Array.from(x, bf16Nearest));
      const back = k.zeros([n]);
      ops.convert(back, half);
      k.exact('bfloat16 -> float32', back, Float32Array.from(bits, bf16Value));
      // NaN keeps being NaN (its payload is the backend's business)
      const nan = k.tensor(Float32Array.of(NaN, -NaN), [2]);
      const nanHalf = k.zeros([2], 'bfloat16');
      ops.convert(nanHalf, nan);
      const nanBack = k.zeros([2]);
      ops.convert(nanBack, nanHalf);
      for (const v of nanBack.toFloat32Array()) if (!Number.isNaN(v)) throw new Error(`NaN converted to ${v}`);
    },
  })),
};
