/**
 * Seeded pseudo-random numbers: xoshiro128** (Blackman & Vigna) seeded through
 * splitmix32.
 *
 * Why not Math.random: training runs must be reproducible from a seed and
 * resumable bit-for-bit from a checkpoint, so the generator's whole state has
 * to be readable and restorable. xoshiro128** is small (4 × u32), fast with
 * 32-bit integer math in JS, and passes BigCrush.
 *
 * This is not PyTorch's Mersenne Twister, so numbers drawn here never match
 * `torch.manual_seed(123)`; only the *distributions* match the book.
 */

/** JSON-serialisable generator state; `JSON.parse(JSON.stringify(s))` restores it exactly. */
export interface RngState {
  kind: 'xoshiro128**';
  /** The four 32-bit state words, as unsigned integers. */
  s: [number, number, number, number];
  /**
   * Box–Muller yields normals in pairs; the second one waits here. It is part of
   * the state because otherwise a resumed run would draw a different sequence.
   * Doubles survive a JSON round trip exactly, so this stays bit-for-bit.
   */
  spare: number | null;
}

const TWO_POW_26 = 67108864;
const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;
const TWO_PI = 2 * Math.PI;

function splitmix32(state: { x: number }): number {
  state.x = (state.x + 0x9e3779b9) | 0;
  let z = state.x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;
  private spare: number | null = null;

  /**
   * @param seed any finite number; integers up to 2^53 are all distinct seeds
   *   (both the low and the high 32 bits feed the seeding).
   */
  constructor(seed = 123) {
    this.seed(seed);
  }

  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }

  seed(seed: number): void {
    if (!Number.isFinite(seed)) throw new Error(`Rng seed must be a finite number, got ${seed}`);
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    // Two independent splitmix streams folded together so that seeds differing
    // only in their high word still produce unrelated states.
    const a = { x: lo };
    const b = { x: hi ^ 0x6a09e667 };
    this.s0 = (splitmix32(a) ^ splitmix32(b)) >>> 0;
    this.s1 = (splitmix32(a) ^ splitmix32(b)) >>> 0;
    this.s2 = (splitmix32(a) ^ splitmix32(b)) >>> 0;
    this.s3 = (splitmix32(a) ^ splitmix32(b)) >>> 0;
    // The all-zero state is a fixed point of xoshiro; never start there.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
    this.spare = null;
  }

  getState(): RngState {
    return { kind: 'xoshiro128**', s: [this.s0, this.s1, this.s2, this.s3], spare: this.spare };
  }

  setState(state: RngState): void {
    if (state === null || typeof state !== 'object' || state.kind !== 'xoshiro128**') {
      throw new Error(`Rng.setState: not an xoshiro128** state: ${JSON.stringify(state)}`);
    }
    const s = state.s;
    if (!Array.isArray(s) || s.length !== 4 || !s.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32)) {
      throw new Error(`Rng.setState: state words must be four unsigned 32-bit integers, got ${JSON.stringify(s)}`);
    }
    if ((s[0] | s[1] | s[2] | s[3]) === 0) throw new Error('Rng.setState: the all-zero state is invalid');
    if (state.spare !== null && !(typeof state.spare === 'number' && Number.isFinite(state.spare))) {
      throw new Error(`Rng.setState: spare must be null or a finite number, got ${String(state.spare)}`);
    }
    this.s0 = s[0];
    this.s1 = s[1];
    this.s2 = s[2];
    this.s3 = s[3];
    this.spare = state.spare;
  }

  clone(): Rng {
    return Rng.fromState(this.getState());
  }

  /** Next raw output, an unsigned 32-bit integer. */
  nextU32(): number {
    const s0 = this.s0;
    const s1 = this.s1;
    const s2 = this.s2;
    const s3 = this.s3;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    this.s1 = (s1 ^ n2) >>> 0;
    this.s0 = (s0 ^ n3) >>> 0;
    this.s2 = (n2 ^ t) >>> 0;
    this.s3 = ((n3 << 11) | (n3 >>> 21)) >>> 0;
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  uniform(): number {
    const a = this.nextU32() >>> 5;
    const b = this.nextU32() >>> 6;
    return (a * TWO_POW_26 + b) / TWO_POW_53;
  }

  /** Standard normal via Box–Muller; every second call returns the cached partner. */
  normal(): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return z;
    }
    // 1 - u lies in (0, 1], so the log is finite.
    const u1 = 1 - this.uniform();
    const u2 = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = TWO_PI * u2;
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Uniform integer in [0, n), unbiased for n ≤ 2^32. */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > Number.MAX_SAFE_INTEGER) {
      throw new Error(`Rng.int: n must be a positive safe integer, got ${n}`);
    }
    if (n <= TWO_POW_32) {
      // Rejection keeps it unbiased: only accept draws below the largest multiple of n.
      const limit = TWO_POW_32 - (TWO_POW_32 % n);
      let x = this.nextU32();
      while (x >= limit) x = this.nextU32();
      return x % n;
    }
    return Math.floor(this.uniform() * n);
  }

  /** Fisher–Yates shuffle in place; returns the same array. */
  shuffle<A extends { length: number; [i: number]: unknown }>(array: A): A {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = array[i];
      array[i] = array[j];
      array[j] = tmp;
    }
    return array;
  }
}

/** Fill `out` with N(mean, std²) samples (the book's `torch.nn.init.normal_`). */
export function fillNormal(out: Float32Array, std: number, rng: Rng, mean = 0): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = mean + std * rng.normal();
  return out;
}

/** Fill `out` with U[lo, hi) samples. */
export function fillUniform(out: Float32Array, lo: number, hi: number, rng: Rng): Float32Array {
  const span = hi - lo;
  for (let i = 0; i < out.length; i++) out[i] = lo + span * rng.uniform();
  return out;
}
