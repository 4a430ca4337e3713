// bfloat16 in TypeScript, independently of the backends' bit tricks: round to
// nearest even and stochastic rounding decided by comparing distances and
// fractions in float64, with the Philox draws of test/helpers/reference.ts.
import * as R from '../reference.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
export const bitsOf = (x: number) => ((f32[0] = x), u32[0]!);
export const valueOf = (bits: number) => ((u32[0] = bits >>> 0), f32[0]!);
/** The float32 value of bf16 bits h (exact: bf16 is the top half of a float32). */
export const bf16Value = (h: number) => valueOf(h << 16);

/** The bf16 neighbours of float32 x: toward zero (truncation) and the next away from zero (may be infinity). */
function neighbours(x: number) {
  const down = bitsOf(x) >>> 16;
  const up = down + 1;
  const upValue = (up & 0x7fff) === 0x7f80 ? Math.sign(x) * 2 ** 128 : bf16Value(up); // 2^128: where rounding goes to inf
  return { down, up, downValue: bf16Value(down), upValue };
}

/** Round-to-nearest-even float32 -> bf16, by comparing distances in float64. */
export function bf16Nearest(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  if ((bitsOf(x) & 0xffff) === 0) return bitsOf(x) >>> 16;
  const { down, up, downValue, upValue } = neighbours(x);
  const dDown = Math.abs(x - downValue);
  const dUp = Math.abs(upValue - x);
  if (dDown !== dUp) return dDown < dUp ? down : up;
  return down % 2 === 0 ? down : up;
}

/**
 * Stochastic rounding of float32 x with a 16-bit uniform draw r: away from
 * zero with probability equal to x's distance past its truncation, as a
 * fraction f of the gap (a multiple of 2^-16, since bf16 drops 16 bits), i.e.
 * when r / 2^16 >= 1 - f. Infinities and NaN round to nearest; a finite value
 * never rounds to infinity.
 */
export function bf16Stochastic(x: number, r: number): number {
  if (!Number.isFinite(x)) return bf16Nearest(x);
  const { down, up, downValue, upValue } = neighbours(x);
  if (downValue === x) return down;
  const f = (Math.abs(x) - Math.abs(downValue)) / (Math.abs(upValue) - Math.abs(downValue));
  if (!(r / 65536 >= 1 - f)) return down;
  return Math.abs(upValue) === 2 ** 128 ? down : up;
}

/** The 16 random bits for element i: the low half of its Philox element bits (backend_ops_typed.def). */
export function roundingBits(seed: number, stream: number, i: number): number {
  return R.philoxElementBits(seed, stream, i) & 0xffff;
}
