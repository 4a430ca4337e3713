// Naive float64 reference implementations of every native op, written from
// the math (plain loops over Float64Array), plus the tools the op tests need:
// a seeded input generator, central finite differences, tolerance checks and
// an independent Philox4x32-10.
//
// Nothing here is derived from the C++ code under test: each function follows
// the textbook definition named in its comment.

export type F64 = Float64Array;

// ---------------------------------------------------------------------------
// Seeded random inputs (mulberry32: a tiny 32-bit PRNG, good enough for data)
// ---------------------------------------------------------------------------

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SeededRandom {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Uniform in [0, 1). */
  uniform(): number {
    return this.next();
  }
  /** Standard normal (Box-Muller). */
  normal(): number {
    const u1 = Math.max(this.next(), 1e-12);
    const u2 = this.next();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  /** Integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo));
  }
  /** n normal values times `scale`, rounded to float32 (so the native op and the reference see the same numbers). */
  floats(n: number, scale = 1, shift = 0): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = shift + scale * this.normal();
    return out;
  }
  /** n uniform values in [lo, hi) as float32. */
  uniforms(n: number, lo: number, hi: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * this.next();
    return out;
  }
  ints(n: number, lo: number, hi: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(lo, hi);
    return out;
  }
}

export const f64 = (a: ArrayLike<number>): F64 => Float64Array.from(a);

// ---------------------------------------------------------------------------
// Comparisons
// ---------------------------------------------------------------------------

export interface CloseReport {
  ok: boolean;
  /** The largest |a - e| / (|e| + floor) over all elements (ok when <= rtol). */
  worst: number;
  worstIndex: number;
  actual: number;
  expected: number;
  /** ||a - e||_2 / ||e||_2 */
  relL2: number;
  message: string;
}

/**
 * Elementwise relative closeness with a floor: |a - e| <= rtol * (|e| + floorFrac * max|e|).
 * The floor keeps elements that are near zero by cancellation (whose float32
 * error is relative to the terms, not to the result) from failing spuriously,
 * while still catching a wrong element anywhere above 10% of the tensor's scale.
 */
export function closeness(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  floorFrac = 0.1,
): CloseReport {
  if (actual.length !== expected.length) {
    return {
      ok: false, worst: Infinity, worstIndex: -1, actual: NaN, expected: NaN, relL2: Infinity,
      message: `length mismatch: actual ${actual.length}, expected ${expected.length}`,
    };
  }
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
  const floor = Math.max(floorFrac * maxAbs, 1e-30);
  let worst = 0, worstIndex = -1, num = 0, den = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    const d = Math.abs(a - e);
    num += d * d;
    den += e * e;
    const r = Number.isNaN(a) || Number.isNaN(e) ? Infinity : d / (Math.abs(e) + floor);
    if (r > worst || worstIndex < 0) {
      worst = r;
      worstIndex = i;
    }
  }
  const relL2 = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
  const ok = worst <= rtol;
  const a = worstIndex >= 0 ? actual[worstIndex]! : NaN;
  const e = worstIndex >= 0 ? expected[worstIndex]! : NaN;
  return {
    ok, worst, worstIndex, actual: a, expected: e, relL2,
    message: `worst relative error ${worst.toExponential(3)} (tolerance ${rtol.toExponential(1)}) at index ${worstIndex}: actual ${a}, expected ${e}; relative L2 error ${relL2.toExponential(3)}`,
  };
}

/** Throws (with a useful message) unless closeness(...) holds. */
export function assertClose(
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  floorFrac = 0.1,
): void {
  const r = closeness(actual, expected, rtol, floorFrac);
  if (!r.ok) throw new Error(`${what}: ${r.message}`);
}

// ---------------------------------------------------------------------------
// Finite differences (central, float64)
// ---------------------------------------------------------------------------

/**
 * Central differences of a scalar function: g[i] = (f(x + eps e_i) - f(x - eps e_i)) / 2 eps.
 * With `indices`, only those coordinates are computed (the rest stay NaN).
 * x is restored afterwards.
 */
export function finiteDifference(
  f: (x: F64) => number,
  x: F64,
  eps = 1e-6,
  indices?: ArrayLike<number>,
): F64 {
  const g = new Float64Array(x.length);
  if (indices) g.fill(NaN);
  const n = indices ? indices.length : x.length;
  for (let j = 0; j < n; j++) {
    const i = indices ? indices[j]! : j;
    const x0 = x[i]!;
    x[i] = x0 + eps;
    const fp = f(x);
    x[i] = x0 - eps;
    const fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

/** Directional derivative (f(x + eps d) - f(x - eps d)) / 2 eps, a check of every coordinate at once. */
export function directionalDerivative(f: (x: F64) => number, x: F64, d: ArrayLike<number>, eps = 1e-6): number {
  const xp = new Float64Array(x.length), xm = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    xp[i] = x[i]! + eps * d[i]!;
    xm[i] = x[i]! - eps * d[i]!;
  }
  return (f(xp) - f(xm)) / (2 * eps);
}

/**
 * Compensated (Neumaier) sum of products: central differences of a loss over
 * ~1e5 terms subtract two sums that differ in a few terms, and a naive sum's
 * rounding (~n eps |sum|) would swamp that difference.
 */
export const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0, comp = 0;
  for (let i = 0; i < a.length; i++) {
    const v = a[i]! * b[i]!, t = s + v;
    comp += Math.abs(s) >= Math.abs(v) ? s - t + v : v - t + s;
    s = t;
  }
  return s + comp;
};

// ---------------------------------------------------------------------------
// Ops
// ---------------------------------------------------------------------------

/** out[b,t,:] = wte[ids[b,t],:] + wpe[pos0+t,:] */
export function embeddingRef(ids: ArrayLike<number>, wte: F64, wpe: F64, B: number, T: number, C: number, pos0 = 0): F64 {
  const out = new Float64Array(B * T * C);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const id = ids[b * T + t]!;
      for (let c = 0; c < C; c++) out[(b * T + t) * C + c] = wte[id * C + c]! + wpe[(pos0 + t) * C + c]!;
    }
  return out;
}

/** LayerNorm over the last dimension: biased variance, eps 1e-5. */
export function layernormRef(inp: F64, weight: F64, bias: F64, N: number, C: number): { out: F64; mean: F64; rstd: F64 } {
  const out = new Float64Array(N * C), mean = new Float64Array(N), rstd = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += inp[n * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (inp[n * C + c]! - m) ** 2;
    v /= C;
    const r = 1 / Math.sqrt(v + 1e-5);
    mean[n] = m;
    rstd[n] = r;
    for (let c = 0; c < C; c++) out[n * C + c] = (inp[n * C + c]! - m) * r * weight[c]! + bias[c]!;
  }
  return { out, mean, rstd };
}

/** Linear layer: y[M,N] = x[M,K] W[N,K]^T + b[N]. */
export function linearRef(x: F64, W: F64, bias: F64 | null, M: number, K: number, N: number): F64 {
  const y = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = bias ? bias[j]! : 0;
      for (let k = 0; k < K; k++) s += x[i * K + k]! * W[j * K + k]!;
      y[i * N + j] = s;
    }
  return y;
}

/**
 * C[M,N] = alpha op(A) op(B) + beta C (returns a new array), A stored [M,K] or
 * [K,M] (transA), B stored [K,N] or [N,K] (transB), all row-major.
 */
export function gemmRef(
  transA: boolean, transB: boolean, M: number, N: number, K: number,
  alpha: number, A: F64, B: F64, beta: number, C: F64,
): F64 {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const a = transA ? A[k * M + i]! : A[i * K + k]!;
        const b = transB ? B[j * K + k]! : B[k * N + j]!;
        s += a * b;
      }
      out[i * N + j] = alpha * s + beta * C[i * N + j]!;
    }
  return out;
}

/** GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
export function geluScalar(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}
export function geluRef(x: F64): F64 {
  return x.map(geluScalar);
}

/** Inverted dropout with a given keep predicate: kept values are scaled by 1/(1-p). */
export function dropoutRef(x: F64, p: number, keep: (i: number) => boolean): F64 {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = keep(i) ? x[i]! / (1 - p) : 0;
  return out;
}

/**
 * Causal multi-head self-attention over qkv [B,T,3C] (Q, K, V blocks of width
 * C; head h in columns h*hs..h*hs+hs-1 of each). Per head:
 *   S = Q K^T / sqrt(hs) with S[t,s] = -inf for s > t,   P = softmax_rows(S),
 *   lse[t] = log sum_s exp(S[t,s]),   P' = P * keep / (1-p),   O = P' V.
 * Returns out [B,T,C] and lse [B,NH,T].
 */
export function attentionRef(
  qkv: F64, B: number, T: number, C: number, NH: number,
  dropout?: { p: number; keep: (b: number, h: number, t: number, s: number) => boolean },
): { out: F64; lse: F64 } {
  const hs = C / NH;
  const scale = 1 / Math.sqrt(hs);
  const out = new Float64Array(B * T * C), lse = new Float64Array(B * NH * T);
  const S = new Float64Array(T);
  const at = (b: number, t: number, part: number, h: number, c: number) => qkv[(b * T + t) * 3 * C + part * C + h * hs + c]!;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < NH; h++)
      for (let t = 0; t < T; t++) {
        let mx = -Infinity;
        for (let s = 0; s <= t; s++) {
          let d = 0;
          for (let c = 0; c < hs; c++) d += at(b, t, 0, h, c) * at(b, s, 1, h, c);
          S[s] = d * scale;
          mx = Math.max(mx, S[s]!);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) z += Math.exp(S[s]! - mx);
        lse[(b * NH + h) * T + t] = mx + Math.log(z);
        for (let s = 0; s <= t; s++) {
          let pr = Math.exp(S[s]! - mx) / z;
          if (dropout) pr = dropout.keep(b, h, t, s) ? pr / (1 - dropout.p) : 0;
          for (let c = 0; c < hs; c++) out[(b * T + t) * C + h * hs + c]! += pr * at(b, s, 2, h, c);
        }
      }
  return { out, lse };
}

/**
 * Cross-entropy per row: losses[i] = logsumexp(logits[i]) - logits[i][targets[i]],
 * 0 for rows whose target is the ignore index; mean over the non-ignored rows.
 */
export function crossEntropyRef(
  logits: F64, targets: ArrayLike<number>, N: number, V: number, ignoreIndex = -100,
): { losses: F64; mean: number; nValid: number } {
  const losses = new Float64Array(N);
  let total = 0, nValid = 0;
  for (let i = 0; i < N; i++) {
    const tgt = targets[i]!;
    if (tgt === ignoreIndex) continue;
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[i * V + v]!);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[i * V + v]! - mx);
    losses[i] = mx + Math.log(z) - logits[i * V + tgt]!;
    total += losses[i]!;
    nValid++;
  }
  return { losses, mean: nValid ? total / nValid : 0, nValid };
}

/** Softmax of one row, in float64. */
export function softmaxRow(logits: F64, row: number, V: number): F64 {
  const p = new Float64Array(V);
  let mx = -Infinity;
  for (let v = 0; v < V; v++) mx = Math.max(mx, logits[row * V + v]!);
  let z = 0;
  for (let v = 0; v < V; v++) z += (p[v] = Math.exp(logits[row * V + v]! - mx));
  for (let v = 0; v < V; v++) p[v]! /= z;
  return p;
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * One AdamW step, PyTorch's torch.optim.AdamW semantics (in place, step t is 1-based):
 *   p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);  p -= lr * m_hat / (sqrt(v_hat) + eps)
 */
export function adamwRef(p: F64, g: F64, m: F64, v: F64, h: AdamWHyper, t: number): void {
  const bc1 = 1 - h.beta1 ** t, bc2 = 1 - h.beta2 ** t;
  for (let i = 0; i < p.length; i++) {
    p[i] = p[i]! - h.lr * h.weightDecay * p[i]!;
    m[i] = h.beta1 * m[i]! + (1 - h.beta1) * g[i]!;
    v[i] = h.beta2 * v[i]! + (1 - h.beta2) * g[i]! * g[i]!;
    const mh = m[i]! / bc1, vh = v[i]! / bc2;
    p[i] = p[i]! - (h.lr * mh) / (Math.sqrt(vh) + h.eps);
  }
}

// ---------------------------------------------------------------------------
// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11), from the published algorithm
// ---------------------------------------------------------------------------

const PHILOX_M0 = 0xd2511f53, PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9, PHILOX_W1 = 0xbb67ae85;

/** High and low 32-bit words of a 32x32 -> 64-bit product, exact, via 16-bit halves. */
function mulhilo(a: number, b: number): [hi: number, lo: number] {
  const lo = Math.imul(a, b) >>> 0;
  const ah = a >>> 16, al = a & 0xffff, bh = b >>> 16, bl = b & 0xffff;
  // a*b = ah*bh 2^32 + (ah*bl + al*bh) 2^16 + al*bl; every partial is exact in a double.
  const mid = ah * bl + al * bh; // < 2^33
  const low = al * bl; // < 2^32
  const carry = Math.floor((mid * 65536 + low) / 4294967296); // mid*2^16 + low < 2^50: exact
  const hi = (ah * bh + carry) >>> 0;
  return [hi, lo];
}

/** Philox4x32-10 block: counter words c[0..3], key words k[0..1] -> four output words. */
export function philox4x32_10(c: readonly number[], k: readonly number[]): [number, number, number, number] {
  let c0 = c[0]! >>> 0, c1 = c[1]! >>> 0, c2 = c[2]! >>> 0, c3 = c[3]! >>> 0;
  let k0 = k[0]! >>> 0, k1 = k[1]! >>> 0;
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const [hi0, lo0] = mulhilo(PHILOX_M0, c0);
    const [hi1, lo1] = mulhilo(PHILOX_M1, c2);
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n1 = lo1, n2 = (hi0 ^ c3 ^ k1) >>> 0, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
  }
  return [c0, c1, c2, c3];
}

/** The same block function in BigInt arithmetic (no overflow tricks), to cross-check philox4x32_10. */
export function philox4x32_10BigInt(c: readonly number[], k: readonly number[]): [number, number, number, number] {
  const M = 0xffffffffn;
  let [c0, c1, c2, c3] = c.map((x) => BigInt(x >>> 0)) as [bigint, bigint, bigint, bigint];
  let [k0, k1] = k.map((x) => BigInt(x >>> 0)) as [bigint, bigint];
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + 0x9e3779b9n) & M;
      k1 = (k1 + 0xbb67ae85n) & M;
    }
    const p0 = 0xd2511f53n * c0, p1 = 0xcd9e8d57n * c2;
    const hi0 = p0 >> 32n, lo0 = p0 & M, hi1 = p1 >> 32n, lo1 = p1 & M;
    [c0, c1, c2, c3] = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0];
  }
  return [Number(c0), Number(c1), Number(c2), Number(c3)];
}

const TWO32 = 4294967296;
/** Low and high 32-bit words of a non-negative safe integer. */
export function split64(x: number): [lo: number, hi: number] {
  return [x % TWO32 >>> 0, Math.floor(x / TWO32) >>> 0];
}

/** Uniform in [0, 1) with 24 bits: word 0 of Philox at counter (index, stream), key seed, >> 8, / 2^24. */
export function philoxUniform(seed: number, stream: number, index: number): number {
  const [i0, i1] = split64(index), [s0, s1] = split64(stream), [k0, k1] = split64(seed);
  return (philox4x32_10([i0, i1, s0, s1], [k0, k1])[0] >>> 8) / 16777216;
}

/** Element `index`'s 32 random bits: word index % 4 of the Philox block index / 4 (key seed, counter (block, stream)). */
export function philoxElementBits(seed: number, stream: number, index: number): number {
  const block = Math.floor(index / 4);
  const [i0, i1] = split64(block), [s0, s1] = split64(stream), [k0, k1] = split64(seed);
  return philox4x32_10([i0, i1, s0, s1], [k0, k1])[index % 4]! >>> 0;
}

/** Dropout keeps element `index` iff the top 24 of its element bits, / 2^24, are >= p (p as the float32 the op receives). */
export function dropoutKeep(seed: number, stream: number, index: number, p: number): boolean {
  return (philoxElementBits(seed, stream, index) >>> 8) / 16777216 >= Math.fround(p);
}

/** The attention dropout predicate: element index ((b*NH+h)*T+t)*T+s of the [B,NH,T,T] probabilities. */
export function attentionKeep(seed: number, stream: number, p: number, NH: number, T: number) {
  return (b: number, h: number, t: number, s: number) => dropoutKeep(seed, stream, ((b * NH + h) * T + t) * T + s, p);
}

// ---------------------------------------------------------------------------
// Analytic backwards (float64), each the chain rule of the forward above; the
// op table checks every one against central differences of its forward.
// ---------------------------------------------------------------------------

/** dwte[ids[b,t]] += dout[b,t]; dwpe[pos0+t] += dout[b,t]. */
export function embeddingBackwardRef(
  ids: ArrayLike<number>, dout: F64, B: number, T: number, C: number, V: number, P: number, pos0 = 0,
): { dwte: F64; dwpe: F64 } {
  const dwte = new Float64Array(V * C), dwpe = new Float64Array(P * C);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let c = 0; c < C; c++) {
        const g = dout[(b * T + t) * C + c]!;
        dwte[ids[b * T + t]! * C + c]! += g;
        dwpe[(pos0 + t) * C + c]! += g;
      }
  return { dwte, dwpe };
}

/**
 * LayerNorm backward with xhat = (x - mean) rstd and g = dout * weight:
 *   dinp = rstd (g - mean(g) - xhat mean(g xhat)),  dweight = sum_n dout xhat,  dbias = sum_n dout.
 * mean and rstd are inputs (as the op takes them).
 */
export function layernormBackwardRef(
  dout: F64, inp: F64, weight: F64, mean: ArrayLike<number>, rstd: ArrayLike<number>, N: number, C: number,
): { dinp: F64; dweight: F64; dbias: F64 } {
  const dinp = new Float64Array(N * C), dweight = new Float64Array(C), dbias = new Float64Array(C);
  for (let n = 0; n < N; n++) {
    let mg = 0, mgx = 0;
    for (let c = 0; c < C; c++) {
      const xhat = (inp[n * C + c]! - mean[n]!) * rstd[n]!, g = dout[n * C + c]! * weight[c]!;
      mg += g;
      mgx += g * xhat;
      dweight[c]! += dout[n * C + c]! * xhat;
      dbias[c]! += dout[n * C + c]!;
    }
    mg /= C;
    mgx /= C;
    for (let c = 0; c < C; c++) {
      const xhat = (inp[n * C + c]! - mean[n]!) * rstd[n]!;
      dinp[n * C + c] = rstd[n]! * (dout[n * C + c]! * weight[c]! - mg - xhat * mgx);
    }
  }
  return { dinp, dweight, dbias };
}

/** Linear backward (y = x W^T + b): dx = dy W, dW = dy^T x, db = sum_m dy. */
export function linearBackwardRef(dy: F64, x: F64, W: F64, M: number, K: number, N: number): { dx: F64; dW: F64; db: F64 } {
  const dx = new Float64Array(M * K), dW = new Float64Array(N * K), db = new Float64Array(N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      const g = dy[i * N + j]!;
      db[j]! += g;
      for (let k = 0; k < K; k++) {
        dx[i * K + k]! += g * W[j * K + k]!;
        dW[j * K + k]! += g * x[i * K + k]!;
      }
    }
  return { dx, dW, db };
}

/**
 * Backward of attentionRef. Per head, with P the softmax, M the dropout factor
 * (keep / (1-p), or 1) and O = (P M) V:
 *   dV_s = sum_t P_ts M_ts dO_t,   dP_ts = M_ts dO_t . V_s,   dS_ts = P_ts (dP_ts - sum_s' P_ts' dP_ts'),
 *   dQ_t = sum_s dS_ts K_s / sqrt(hs),   dK_s = sum_t dS_ts Q_t / sqrt(hs).
 */
/**
 * `out`, when given, is the forward output the op is handed (bfloat16 storage
 * rounds it): D_t = sum(dO_t * O_t) is then taken from it, as the op's
 * contract says, instead of from the exact sum(P * dP). Without it this is
 * the exact gradient.
 */
export function attentionBackwardRef(
  qkv: F64, dout: F64, B: number, T: number, C: number, NH: number,
  dropout?: { p: number; keep: (b: number, h: number, t: number, s: number) => boolean },
  out?: F64,
): F64 {
  const hs = C / NH;
  const scale = 1 / Math.sqrt(hs);
  const dqkv = new Float64Array(B * T * 3 * C);
  const at = (b: number, t: number, part: number, h: number) => (b * T + t) * 3 * C + part * C + h * hs;
  const P = new Float64Array(T), dP = new Float64Array(T);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < NH; h++)
      for (let t = 0; t < T; t++) {
        const q = at(b, t, 0, h), o = (b * T + t) * C + h * hs;
        let mx = -Infinity;
        for (let s = 0; s <= t; s++) {
          let d = 0;
          for (let c = 0; c < hs; c++) d += qkv[q + c]! * qkv[at(b, s, 1, h) + c]!;
          P[s] = d * scale;
          mx = Math.max(mx, P[s]!);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) z += (P[s] = Math.exp(P[s]! - mx));
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          P[s]! /= z;
          const m = dropout ? (dropout.keep(b, h, t, s) ? 1 / (1 - dropout.p) : 0) : 1;
          const v = at(b, s, 2, h);
          let d = 0;
          for (let c = 0; c < hs; c++) {
            d += dout[o + c]! * qkv[v + c]!;
            dqkv[v + c]! += P[s]! * m * dout[o + c]!;
          }
          dP[s] = d * m;
          sum += P[s]! * dP[s]!;
        }
        if (out) {
          sum = 0;
          for (let c = 0; c < hs; c++) sum += dout[o + c]! * out[o + c]!;
        }
        for (let s = 0; s <= t; s++) {
          const ds = P[s]! * (dP[s]! - sum) * scale, k = at(b, s, 1, h);
          for (let c = 0; c < hs; c++) {
            dqkv[q + c]! += ds * qkv[k + c]!;
            dqkv[k + c]! += ds * qkv[q + c]!;
          }
        }
      }
  return dqkv;
}

/** d(dloss * sum of the losses)/dlogits = dloss (softmax - onehot(target)), 0 on ignored rows. */
export function crossEntropyGradRef(logits: F64, targets: ArrayLike<number>, N: number, V: number, dloss: number, ignoreIndex = -100): F64 {
  const g = new Float64Array(N * V);
  for (let i = 0; i < N; i++) {
    if (targets[i] === ignoreIndex) continue;
    const p = softmaxRow(logits, i, V);
    for (let v = 0; v < V; v++) g[i * V + v] = dloss * (p[v]! - (v === targets[i] ? 1 : 0));
  }
  return g;
}
