// What every op case talks to: the device under test (OpContext), the
// tolerance per (tolerance class, device/precision), and the checks (closeness
// to a float64 reference, exact equality, gradients against the float64
// analytic backward and that backward against central differences).
import { expect } from 'vitest';

import { Tensor, type DType, type Device } from '../../../ts/tensor/tensor.js';
import * as R from '../reference.js';

export type Precision = 'fp32' | 'tf32';
/** What sets the error budget of a result: see TOLERANCE. */
export type TolClass =
  'elementwise' | 'transcendental' | 'reduction' | 'cancellation' | 'gradient' | 'matmul' | 'attention' | 'sharpAttention' | 'moments' | 'update';

/** rtol for R.closeness, per (class, device/precision). */
const TOLERANCE: Record<TolClass, Record<`${Device}/${Precision}`, number>> = {
  // one float32 rounding of a product or quotient
  elementwise: { 'cpu/fp32': 1e-6, 'cuda/fp32': 1e-6, 'cuda/tf32': 1e-6, 'cpu/tf32': 1e-6 },
  // float32 log/sin/cos/tanh of different libms (CPU libm, CUDA's)
  transcendental: { 'cpu/fp32': 1e-5, 'cuda/fp32': 1e-5, 'cuda/tf32': 1e-5, 'cpu/tf32': 1e-5 },
  // float32 sums of up to ~1e6 terms (norms, LayerNorm statistics, softmax, embedding gradients), pairwise or blocked
  reduction: { 'cpu/fp32': 1e-5, 'cuda/fp32': 1e-5, 'cuda/tf32': 1e-5, 'cpu/tf32': 1e-5 },
  // results that lose digits to cancellation: a LayerNorm of inputs whose mean is 300 std, where each
  // float32 rounding of x - mean costs 300 * 2^-24 ~ 2e-5 relative to the result (and there are several)
  cancellation: { 'cpu/fp32': 1e-4, 'cuda/fp32': 3e-4, 'cuda/tf32': 3e-4, 'cpu/tf32': 3e-4 },
  // a float32 gradient against float64 central differences
  gradient: { 'cpu/fp32': 1e-4, 'cuda/fp32': 1e-4, 'cuda/tf32': 1e-4, 'cpu/tf32': 1e-4 },
  // float32 dot products of up to ~800 terms (the CPU GEMM's blocked sums stay within 1e-5; cuBLAS's
  // split-K orders are unknown); TF32 tensor cores round the factors to 10-bit mantissas
  matmul: { 'cpu/fp32': 1e-5, 'cuda/fp32': 5e-5, 'cuda/tf32': 1e-2, 'cpu/tf32': 1e-2 },
  // softmax(Q K^T) V and its backward; tensor cores (TF32, head sizes <= 64) as matmul
  attention: { 'cpu/fp32': 1e-5, 'cuda/fp32': 3e-5, 'cuda/tf32': 2e-2, 'cpu/tf32': 2e-2 },
  // the same with scores of std ~16: TF32's 2^-11 rounding of q and k moves a score by ~0.02, the softmax by ~2%
  sharpAttention: { 'cpu/fp32': 2e-5, 'cuda/fp32': 3e-5, 'cuda/tf32': 6e-2, 'cpu/tf32': 6e-2 },
  // AdamW's moments and parameters: a few float32 roundings per step, compounded over steps
  moments: { 'cpu/fp32': 1e-5, 'cuda/fp32': 1e-5, 'cuda/tf32': 1e-5, 'cpu/tf32': 1e-5 },
  // an AdamW step p_new - p_old: ~lr |u| against p's float32 rounding |p| 2^-24 (lr 1e-3: ~1e-4 relative)
  update: { 'cpu/fp32': 2e-3, 'cuda/fp32': 2e-3, 'cuda/tf32': 2e-3, 'cpu/tf32': 2e-3 },
};

/**
 * Analytic backwards against central differences: float64 on both sides, so
 * only the differences' truncation and rounding (~1e-9 here) separate them.
 */
const REFERENCE_RTOL = 1e-6;
const FD_EPS = 1e-6;
/** Analytic backwards already checked, by case and output: the check does not depend on the device. */
const checkedReferences = new Set<string>();

/** The device under test, as the driver sets it up; cases only talk to this. */
export class OpContext {
  private readonly live: Tensor[] = [];
  /** `caseId` names the case (op and case name) for the once-per-case reference checks. */
  constructor(readonly device: Device, readonly precision: Precision, readonly caseId: string) {}

  tensor(data: Float32Array | Int32Array, shape: number[]): Tensor {
    const t = Tensor.from(data, shape, { device: this.device });
    this.live.push(t);
    return t;
  }
  zeros(shape: number[], dtype: DType = 'float32'): Tensor {
    const t = Tensor.zeros(shape, { device: this.device, dtype });
    this.live.push(t);
    return t;
  }
  /** A CPU tensor, whatever the device under test (cross-device copies). */
  host(data: Float32Array | Int32Array, shape: number[]): Tensor {
    const t = Tensor.from(data, shape);
    this.live.push(t);
    return t;
  }
  /**
   * `data` as a view of shape `shape` at element `offset` of a buffer padded
   * with a sentinel on both sides (offset 1 is not 16-byte aligned: the CUDA
   * scalar paths). `read` returns the view's values and fails if anything
   * outside the view changed.
   */
  placed(data: Float32Array | Int32Array, offset: number, shape = [data.length]) {
    const sentinel = -777;
    const buf = data instanceof Int32Array ? new Int32Array(data.length + offset + 5) : new Float32Array(data.length + offset + 5);
    buf.fill(sentinel);
    buf.set(data, offset);
    const base = this.tensor(buf, [buf.length]);
    const view = base.view(offset, shape);
    const read = (what: string) => {
      const all = base.dtype === 'int32' ? base.toInt32Array() : base.toFloat32Array();
      this.exact(`${what}: the buffer outside the view`, [...all.subarray(0, offset), ...all.subarray(offset + data.length)],
        new Array(offset + 5).fill(sentinel));
      return all.subarray(offset, offset + data.length);
    };
    return { view, read };
  }
  dispose() {
    for (const t of this.live.splice(0)) if (!t.disposed) t.dispose();
  }
  rtol(cls: TolClass): number {
    return TOLERANCE[cls][`${this.device}/${this.precision}`];
  }
  close(what: string, actual: Tensor | ArrayLike<number>, expected: ArrayLike<number>, cls: TolClass, floorFrac = 0.1) {
    const a = actual instanceof Tensor ? actual.toFloat32Array() : actual;
    const r = R.closeness(a, expected, this.rtol(cls), floorFrac);
    expect(r.ok, `${what} on ${this.device}/${this.precision}: ${r.message}`).toBe(true);
  }
  /** |actual - expected| <= atol everywhere: results near 0 by cancellation (a mean), whose error scales with the inputs. */
  within(what: string, actual: Tensor | ArrayLike<number>, expected: ArrayLike<number>, atol: number) {
    const a = actual instanceof Tensor ? actual.toFloat32Array() : actual;
    expect(a.length, `${what}: length`).toBe(expected.length);
    for (let i = 0; i < a.length; i++)
      if (!(Math.abs(a[i]! - expected[i]!) <= atol))
        expect.fail(`${what} on ${this.device}/${this.precision}: element ${i}: ${a[i]}, expected ${expected[i]} within ${atol}`);
  }
  /** Element-by-element equality (RNG draws, copies): the same on every backend. */
  exact(what: string, actual: ArrayLike<number> | Tensor, expected: ArrayLike<number>) {
    const a = actual instanceof Tensor ? (actual.dtype === 'int32' ? actual.toInt32Array() : actual.toFloat32Array()) : actual;
    expect(a.length, `${what}: length`).toBe(expected.length);
    for (let i = 0; i < a.length; i++)
      if (a[i] !== expected[i]) expect.fail(`${what} on ${this.device}: element ${i}: ${a[i]}, expected ${expected[i]}`);
  }

  /**
   * A backward op's gradient `actual` (accumulated onto `prefill` when given)
   * against the float64 analytic backward `analytic`, every element; and,
   * once per case, `analytic` against central differences of `loss` (the
   * float64 forward, dotted with the upstream gradient) at `at`: on up to
   * `coords` coordinates, plus one directional derivative along a random
   * direction (which involves every coordinate at once).
   */
  gradient(
    what: string, actual: Tensor | ArrayLike<number>, analytic: R.F64, cls: TolClass,
    fd: { loss: (x: R.F64) => number; at: ArrayLike<number>; coords?: number; floorFrac?: number }, prefill?: ArrayLike<number>,
  ) {
    const key = `${this.caseId}: ${what}`;
    if (!checkedReferences.has(key)) {
      checkReferenceGradient(what, analytic, fd.loss, R.f64(fd.at), fd.coords ?? 400, hash(key));
      checkedReferences.add(key);
    }
    const expected = prefill ? analytic.map((g, i) => g + prefill[i]!) : analytic;
    this.close(prefill ? `${what} (accumulated onto a pre-filled gradient)` : what, actual, expected, cls, fd.floorFrac);
  }
}

/** FNV-1a: a seed per case, so that each case checks other coordinates. */
const hash = (s: string) => [...s].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261);

function checkReferenceGradient(what: string, analytic: R.F64, loss: (x: R.F64) => number, x: R.F64, coords: number, seed: number) {
  expect(analytic.length, `${what}: analytic gradient length`).toBe(x.length);
  const rng = new R.SeededRandom(seed);
  let indices: number[] | undefined;
  if (x.length > coords) {
    const pick = new Set<number>();
    while (pick.size < coords) pick.add(rng.int(0, x.length));
    indices = [...pick];
  }
  const fd = R.finiteDifference(loss, x, FD_EPS, indices);
  const idx = indices ?? Array.from({ length: x.length }, (_, i) => i);
  // A difference of two losses resolves gradients only down to the losses' rounding over 2 eps
  // (~1e-9 for a loss of 3): small components of a large loss (softmax tails) sit at that floor.
  const noise = (16 * Number.EPSILON * Math.abs(loss(x))) / FD_EPS;
  let scale = 0;
  for (const g of analytic) scale = Math.max(scale, Math.abs(g));
  for (const i of idx) {
    const err = Math.abs(analytic[i]! - fd[i]!) / (Math.abs(fd[i]!) + 0.1 * scale + 1e-30);
    if (!(err <= REFERENCE_RTOL) && !(Math.abs(analytic[i]! - fd[i]!) <= noise))
      expect.fail(`${what}: the float64 analytic backward at ${i} is ${analytic[i]}, central differences give ${fd[i]}`);
  }
  const d = Float64Array.from({ length: x.length }, () => rng.normal());
  const dd = R.directionalDerivative(loss, x, d);
  let gd = 0, mag = 0;
  for (let i = 0; i < x.length; i++) {
    gd += analytic[i]! * d[i]!;
    mag += Math.abs(analytic[i]! * d[i]!);
  }
  expect(Math.abs(gd - dd), `${what}: directional derivative, analytic ${gd} vs central differences ${dd}`).toBeLessThanOrEqual(
    REFERENCE_RTOL * mag + noise + 1e-12,
  );
}

export interface OpCase {
  name: string;
  run(k: OpContext): void;
}
export interface OpEntry {
  /** The native op name (a key of native().ops). */
  op: string;
  cases: OpCase[];
}
