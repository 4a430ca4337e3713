// All parameters of a model in ONE flat buffer, with named views; the
// gradients mirror it. AdamW is then a call over the flat buffers, the
// gradient norm one reduction, and a checkpoint a few large writes.
//
// At bf16 precision the flat buffer and its gradients are bfloat16 and a
// float32 master copy holds the authoritative values (llm.c's recipe): the
// optimizer updates the master and rounds it into the model's copy, and
// checkpoints save the master. An inference-only store has no master. Under
// ZeRO-1 a rank keeps only its part of the master (shardMaster).
import { Tensor, storageDType, type Device, type Precision } from '../tensor/tensor.js';
import * as ops from '../tensor/ops.js';

export type InitKind =
  | { kind: 'normal'; std: number }
  | { kind: 'uniform'; bound: number }
  | { kind: 'zeros' }
  | { kind: 'ones' };

export interface ParameterSpec {
  name: string;
  shape: number[];
  init: InitKind;
}

export interface Parameter extends ParameterSpec {
  offset: number;
  numel: number;
  value: Tensor;
  grad: Tensor;
}

/** Collects parameter declarations, then lays them out back to back. */
export class ParameterStore {
  readonly params: Parameter[] = [];
  readonly byName = new Map<string, Parameter>();
  readonly flat: Tensor;
  readonly numel: number;
  readonly device: Device;
  readonly precision: Precision;
  /** The float32 values AdamW updates: `flat` itself at fp32; at bf16 a separate copy, or null without one. */
  get master(): Tensor | null {
    return this.masterValues;
  }
  private masterValues: Tensor | null;
  /** Set by shardMaster: `master` then holds elements [start, start + length) of the flat buffer only. */
  masterShard: { start: number; length: number } | null = null;
  private readonly grads: Tensor;
  /** zeroGrad() was called and the zeros are not written yet (see zeroGrad). */
  private zeroPending = false;

  constructor(specs: ParameterSpec[], device: Device, precision: Precision = 'fp32', options: { masterWeights?: boolean } = {}) {
    this.device = device;
    this.precision = precision;
    let offset = 0;
    const laid: Omit<Parameter, 'value' | 'grad'>[] = [];
    const seen = new Set<string>();
    for (const s of specs) {
      if (this.byName.has(s.name) || seen.has(s.name)) throw new Error(`duplicate parameter ${s.name}`);
      seen.add(s.name);
      const numel = s.shape.reduce((a, b) => a * b, 1);
      laid.push({ ...s, offset, numel });
      offset += numel;
    }
    this.numel = offset;
    const dtype = storageDType(precision);
    this.flat = Tensor.zeros([offset], { device, dtype });
    this.grads = Tensor.zeros([offset], { device, dtype });
    this.masterValues = precision === 'fp32' ? this.flat : options.masterWeights === false ? null : Tensor.zeros([offset], { device });
    for (const p of laid) {
      const grad = this.grads.view(p.offset, p.shape);
      const param = { ...p, value: this.flat.view(p.offset, p.shape) } as Parameter;
      Object.defineProperty(param, 'grad', { enumerable: true, get: () => (this.settleGradients(), grad) });
      this.params.push(param);
      this.byName.set(p.name, param);
    }
  }

  get(name: string): Parameter {
    const p = this.byName.get(name);
    if (!p) throw new Error(`no parameter named ${name}`);
    return p;
  }

  /** A view spanning consecutive parameters `first`..`last` (fused Q/K/V). */
  span(first: string, last: string, shape: number[]): { value: Tensor; grad: Tensor } {
    const a = this.get(first), b = this.get(last);
    const numel = b.offset + b.numel - a.offset;
    if (shape.reduce((x, y) => x * y, 1) !== numel) throw new Error(`span ${first}..${last}: shape mismatch`);
    return { value: this.flat.view(a.offset, shape), grad: this.flatGrad.view(a.offset, shape) };
  }

  /** All gradients, back to back as the parameters (zeroed first when zeroGrad() left that pending). */
  get flatGrad(): Tensor {
    this.settleGradients();
    return this.grads;
  }

  /**
   * Sets the gradients to zero, lazily: whatever reads them first (flatGrad,
   * a parameter's grad) writes the zeros, and a backward pass that claims
   * them (claimGradients) writes its gradients instead of adding to zeros,
   * saving a pass over every gradient (650 MB for GPT-2 124M) per step.
   */
  zeroGrad(): void {
    this.zeroPending = true;
  }

  /**
   * For a backward pass, before it touches a gradient: true when they are
   * due to be zero, and the caller then writes every gradient (or zeroes
   * the ones it only adds to) instead of accumulating.
   */
  claimGradients(): boolean {
    const due = this.zeroPending;
    this.zeroPending = false;
    return due;
  }

  private settleGradients(): void {
    if (!this.zeroPending) return;
    this.zeroPending = false;
    ops.fill(this.grads, 0);
  }

  /** The master weights, for what updates them (the optimizer); an inference-only bf16 store has none. */
  requireMaster(what: string): Tensor {
    if (!this.masterValues)
      throw new Error(`${what}: this bf16 model was loaded for inference, without float32 master weights; load it with masterWeights: true (or --dtype fp32) to train`);
    this.unsharded(what);
    return this.masterValues;
  }

  /**
   * ZeRO-1 at bf16: keeps only elements [start, start + length) of the master
   * weights (this rank's part, which its optimizer updates) and frees the
   * rest; returns that part. The whole master is then only ever gathered
   * (ts/train/zero.ts), and what needs it here refuses.
   */
  shardMaster(start: number, length: number): Tensor {
    if (this.precision === 'fp32') throw new Error('shardMaster: at fp32 the master weights are the parameters themselves');
    if (!(Number.isInteger(start) && Number.isInteger(length) && start >= 0 && length > 0 && start + length <= this.numel))
      throw new Error(`shardMaster: [${start}, ${start + length}) is not a non-empty part of the ${this.numel} parameters`);
    const full = this.requireMaster('shardMaster');
    const part = Tensor.zeros([length], { device: this.device });
    ops.copy(part, full.view(start, [length]));
    full.dispose();
    this.masterValues = part;
    this.masterShard = { start, length };
    return part;
  }

  private unsharded(what: string): void {
    if (this.masterShard)
      throw new Error(`${what}: this rank keeps only its ZeRO-1 part of the float32 master weights; gather them across ranks first (fullOptimizerState in ts/train/zero.ts)`);
  }

  /** Host copy of all parameter values as float32: the master weights where there are any (one transfer). */
  readAll(): Float32Array {
    this.unsharded('readAll');
    return (this.master ?? this.flat).toFloat32Array();
  }

  /** Sets every parameter from float32 values (the model's bf16 copy rounded to nearest even). */
  writeAll(data: Float32Array): void {
    if (data.length !== this.numel) throw new Error(`expected ${this.numel} parameter values, got ${data.length}`);
    this.writeRange(0, data);
  }

  /** Sets one parameter from float32 values (as writeAll, for loaders that go tensor by tensor). */
  writeParameter(name: string, data: Float32Array, offset = 0): void {
    const p = this.get(name);
    if (offset < 0 || offset + data.length > p.numel) throw new Error(`${name}: ${data.length} values at ${offset} do not fit its ${p.numel}`);
    this.writeRange(p.offset + offset, data);
  }

  /** Flat elements at..at+data.length from float32: into the master (if any) and, at bf16, rounded into the copy. */
  private writeRange(at: number, data: Float32Array): void {
    this.unsharded('writeAll');
    if (this.precision === 'fp32') return this.flat.view(at, [data.length]).write(data);
    const staging = this.master ? this.master.view(at, [data.length]) : Tensor.zeros([data.length], { device: this.device });
    try {
      staging.write(data);
      ops.convert(this.flat.view(at, [data.length]), staging);
    } finally {
      if (!this.master) staging.dispose();
    }
  }

  /** Rounds the master weights into the model's bf16 copy (to nearest even), after they were set in place. */
  syncFromMaster(): void {
    if (this.precision !== 'fp32') ops.convert(this.flat, this.requireMaster('syncFromMaster'));
  }

  /** The bf16 copy's bit patterns (for checkpoints that resume exactly); null at fp32. */
  readStorageBits(): Uint16Array | null {
    return this.precision === 'fp32' ? null : (this.flat.handle.read() as Uint16Array);
  }

  /** Restores the bf16 copy's exact bits (what readStorageBits gave). */
  writeStorageBits(bits: Uint16Array): void {
    if (this.precision === 'fp32') throw new Error('writeStorageBits: the parameters are float32');
    if (bits.length !== this.numel) throw new Error(`expected ${this.numel} bf16 parameter values, got ${bits.length}`);
    this.flat.write(bits);
  }

  dispose(): void {
    if (this.master && this.master !== this.flat) this.master.dispose();
    this.flat.dispose();
    this.grads.dispose();
  }
}
