// convert: float32 <-> bfloat16. The expected bits come from an independent
// rounding in float64 (the two bf16 neighbours, the nearer one, ties to even),
// not from bit tricks like the backends'.
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpEntry } from './context.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number) => ((f32[0] = x), u32[0]!);
const valueOf = (bits: number) => ((u32[0] = bits >>> 0), f32[0]!);
/** The float32 value of bf16 bits h (exact: bf16 is the top half of a float32). */
export const bf16Value = (h: number) => valueOf(h << 16);

/** Round-to-nearest-even float32 -> bf16, by comparing distances in float64. */
export function bf16Nearest(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  const bits = bitsOf(x);
  const down = bits >>> 16;
  if ((bits & 0xffff) === 0) return down;
  const up = down + 1; // the next bf16 away from zero (may be infinity)
  const dDown = Math.abs(x - bf16Value(down));
  const upValue = (up & 0x7fff) === 0x7f80 ? Math.sign(x) * 2 ** 128 : bf16Value(up); // 2^128: where rounding goes to inf
  const dUp = Math.abs(upValue - x);
  if (dDown !== dUp) return dDown < dUp ? down : up;
  return down % 2 === 0 ? down : up;
}

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
