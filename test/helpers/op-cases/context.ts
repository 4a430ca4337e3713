// What every op case talks to: the device and storage dtype under test
// (OpContext), the tolerance per (tolerance class, device/precision) and per
// dtype, and the checks (closeness to a float64 reference, exact equality,
// gradients against the float64 analytic backward and that backward against
// central differences).
//
// The dtype axis: a case builds its tensors with k.tensor / k.placed /
// k.zeros, which hold activations, parameters and gradients in k.dtype
// (float32 or bfloat16), and asks for float32 explicitly where the op's
// argument always is (LayerNorm statistics, lse, losses, AdamW's master and
// moments, norms). In bfloat16 a case first rounds its float inputs with
// k.round (convert on the device, read back) and computes its float64
// reference from those rounded values, so the comparison measures the op, not
// the rounding of its inputs; k.tensor refuses an input that is not exactly a
// bfloat16 value, so a case cannot forget. Outputs are read back widened.
import { expect } from 'vitest';

import * as ops from '../../../ts/tensor/ops.js';
import { Tensor, type DType, type Device } from '../../../ts/tensor/tensor.js';
import * as R from '../reference.js';
import { bf16Nearest, bf16Value } from './bf16.js';

/** The storage types of the typed ops (native/include/backend_ops_typed.def). */
export type StorageDType = 'float32' | 'bfloat16';

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
 * rtol for bfloat16 storage, per class, on any device: the inputs are exact
 * (the reference sees the rounded values) and arithmetic is float32, so what
 * is left is the rounding of each stored result to 8 significant bits (at most
 * 2^-8 relative, 3.9e-3) and of stored intermediates the op reads back.
 */
const BF16_ULP_HALF = 2 ** -8;
const TOLERANCE_BF16: Record<TolClass, number> = {
  // one rounding of the stored result
  elementwise: 1.05 * BF16_ULP_HALF,
  transcendental: 1.05 * BF16_ULP_HALF,
  gradient: 1.05 * BF16_ULP_HALF,
  // float32 sums rounded once (embedding, LayerNorm, norms; the classifier's softmax terms)
  reduction: 1.05 * BF16_ULP_HALF,
  cancellation: 1.05 * BF16_ULP_HALF,
  // float32 GEMM sums rounded once
  matmul: 1.05 * BF16_ULP_HALF,
  // float32 softmax and sums, each stored result rounded once (the backward's reference takes the rounded out it is given);
  // on bf16 tensor cores too, whose products take P and dS as bf16 pairs hi + lo (2^-18 relative, attention_tensor_core.cu)
  attention: 1.05 * BF16_ULP_HALF,
  sharpAttention: 1.05 * BF16_ULP_HALF,
  // AdamW's master and moments are float32 whatever the storage: the float32 budgets (see adamw's case)
  moments: 1e-5,
  update: 2e-3,
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
  constructor(readonly device: Device, readonly precision: Precision, readonly caseId: string, readonly dtype: StorageDType = 'float32') {}

  /**
   * `x` as the storage type holds it: for bfloat16 rounded by the device's
   * convert (checked bit for bit by its own case) and read back; x itself for float32.
   */
  round(x: Float32Array): Float32Array {
    if (this.dtype === 'float32') return x;
    const f = Tensor.from(x, [x.length], { device: this.device }), h = Tensor.zeros([x.length], { device: this.device, dtype: 'bfloat16' });
    try {
      ops.convert(h, f);
      ops.convert(f, h);
      return f.toFloat32Array();
    } finally {
      f.dispose();
      h.dispose();
    }
  }
  /** Float32 results as stored: rounded to nearest even by TypeScript for bfloat16 (expected values of exact checks). */
  stored(x: ArrayLike<number>): Float32Array {
    const f = Float32Array.from(x);
    return this.dtype === 'float32' ? f : f.map((v) => bf16Value(bf16Nearest(v)));
  }
  /** Float data in `dtype` (default: the storage type under test); int32 data stays int32. */
  tensor(data: Float32Array | Int32Array, shape: number[], dtype?: DType): Tensor {
    const t = this.make(data, shape, this.device, dtype);
    this.live.push(t);
    return t;
  }
  zeros(shape: number[], dtype: DType = this.dtype): Tensor {
    const t = Tensor.zeros(shape, { device: this.device, dtype });
    this.live.push(t);
    return t;
  }
  /** A CPU tensor, whatever the device under test (cross-device copies). */
  host(data: Float32Array | Int32Array, shape: number[], dtype?: DType): Tensor {
    const t = this.make(data, shape, 'cpu', dtype);
    this.live.push(t);
    return t;
  }
  private make(data: Float32Array | Int32Array, shape: number[], device: Device, dtype?: DType): Tensor {
    const dt: DType = data instanceof Int32Array ? 'int32' : (dtype ?? this.dtype);
    if (dt !== 'bfloat16') return Tensor.from(data, shape, { device, dtype: dt });
    const bits = Uint16Array.from(data, bf16Nearest);
    for (let i = 0; i < data.length; i++)
      if (!(bf16Value(bits[i]!) === data[i]) && !Number.isNaN(data[i]))
        throw new Error(`${this.caseId}: a bfloat16 input at ${i} is ${data[i]}, not a bfloat16 value: round the case's inputs with k.round`);
    return Tensor.from(bits, shape, { device });
  }
  /** Overwrites a tensor's contents (float data into a bfloat16 tensor must be bfloat16 values: k.round). */
  write(t: Tensor, data: Float32Array | Int32Array) {
    if (t.dtype !== 'bfloat16' || data instanceof Int32Array) return t.write(data);
    const tmp = this.make(data, [data.length], 'cpu', 'bfloat16');
    try {
      t.write(tmp.handle.read() as Uint16Array);
    } finally {
      tmp.dispose();
    }
  }
  /** A tensor's values as numbers: bfloat16 widened (exactly: it is the top half of a float32). */
  read(t: Tensor): Float32Array | Int32Array {
    if (t.dtype === 'int32') return t.toInt32Array();
    if (t.dtype === 'float32') return t.toFloat32Array();
    return Float32Array.from(t.handle.read() as Uint16Array, bf16Value);
  }
  /**
   * `data` as a view of shape `shape` at element `offset` of a buffer padded
   * with a sentinel on both sides (offset 1 is not 16-byte aligned: the CUDA
   * scalar paths). `read` returns the view's values and fails if anything
   * outside the view changed.
   */
  placed(data: Float32Array | Int32Array, offset: number, shape = [data.length], dtype?: DType) {
    const sentinel = -776; // a bfloat16 value too
    const buf = data instanceof Int32Array ? new Int32Array(data.length + offset + 5) : new Float32Array(data.length + offset + 5);
    buf.fill(sentinel);
    buf.set(data, offset);
    const base = this.tensor(buf, [buf.length], dtype);
    const view = base.view(offset, shape);
    const read = (what: string) => {
      const all = this.read(base);
      this.exact(`${what}: the buffer outside the view`, [...all.subarray(0, offset), ...all.subarray(offset + data.length)],
        new Array(offset + 5).fill(sentinel));
      return all.subarray(offset, offset + data.length);
    };
    return { view, read };
  }
  dispose() {
    for (const t of this.live.splice(0)) if (!t.disposed) t.dispose();
  }
  /** The rtol of a class for results in the storage type under test. */
  rtol(cls: TolClass): number {
    return this.dtype === 'bfloat16' ? TOLERANCE_BF16[cls] : this.rtolFloat32(cls);
  }
  /** The rtol of a class for float32 results (the outputs that are float32 whatever the storage type). */
  rtolFloat32(cls: TolClass): number {
    return TOLERANCE[cls][`${this.device}/${this.precision}`];
  }
  private get label() {
    return `${this.device}/${this.precision}${this.dtype === 'bfloat16' ? '/bfloat16' : ''}`;
  }
  /** `rtol` overrides the class's (the float32 budget of a float32 output in a bfloat16 run: k.rtolFloat32). */
  close(what: string, actual: Tensor | ArrayLike<number>, expected: ArrayLike<number>, cls: TolClass, floorFrac = 0.1, rtol = this.rtol(cls)) {
    const a = actual instanceof Tensor ? this.read(actual) : actual;
    const r = R.closeness(a, expected, rtol, floorFrac);
    expect(r.ok, `${what} on ${this.label}: ${r.message}`).toBe(true);
  }
  /** |actual - expected| <= atol everywhere: results near 0 by cancellation (a mean), whose error scales with the inputs. */
  within(what: string, actual: Tensor | ArrayLike<number>, expected: ArrayLike<number>, atol: number) {
    const a = actual instanceof Tensor ? this.read(actual) : actual;
    expect(a.length, `${what}: length`).toBe(expected.length);
    for (let i = 0; i < a.length; i++)
      if (!(Math.abs(a[i]! - expected[i]!) <= atol))
        expect.fail(`${what} on ${this.label}: element ${i}: ${a[i]}, expected ${expected[i]} within ${atol}`);
  }
  /** Element-by-element equality (RNG draws, copies): the same on every backend. */
  exact(what: string, actual: ArrayLike<number> | Tensor, expected: ArrayLike<number>) {
    const a = actual instanceof Tensor ? this.read(actual) : actual;
    expect(a.length, `${what}: length`).toBe(expected.length);
    for (let i = 0; i < a.length; i++)
      if (a[i] !== expected[i]) expect.fail(`${what} on ${this.label}: element ${i}: ${a[i]}, expected ${expected[i]}`);
  }

  /**
   * A backward op's gradient `actual` (accumulated onto `prefill` when given)
   * against the float64 analytic backward `analytic`, every element; and,
   * once per case, `analytic` against central differences of `loss` (the
   * float64 forward, dotted with the upstream gradient) at `at`: on up to
   * `coords` coordinates, plus one directional derivative along a random
   * direction (which involves every coordinate at once). With `given`, the
   * result is compared with it instead (checked analytic still validates the reference).
   */
  gradient(
    what: string, actual: Tensor | ArrayLike<number>, analytic: R.F64, cls: TolClass,
    fd: { loss: (x: R.F64) => number; at: ArrayLike<number>; coords?: number; floorFrac?: number; rtol?: number }, prefill?: ArrayLike<number>,
    given?: R.F64,
  ) {
    const key = `${this.caseId}: ${what}`;
    if (!checkedReferences.has(key)) {
      checkReferenceGradient(what, analytic, fd.loss, R.f64(fd.at), fd.coords ?? 400, hash(key));
      checkedReferences.add(key);
    }
    // `given`: the op's contract evaluated at the stored inputs it reads besides `at` (attention's bfloat16 out)
    const target = given ?? analytic;
    const expected = prefill ? target.map((g, i) => g + prefill[i]!) : target;
    this.close(prefill ? `${what} (accumulated onto a pre-filled gradient)` : what, actual, expected, cls, fd.floorFrac, fd.rtol ?? this.rtol(cls));
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
  /**
   * Set on the ops that have no storage type (fillNormal and fillUniform are
   * float32 only; convert is between both): they run once, in float32. Every
   * other entry runs in every storage dtype.
   */
  untyped?: true;
}
