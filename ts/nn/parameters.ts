// All parameters of a model in ONE flat float32 buffer, with named views; the
// gradients mirror it. AdamW is then a call over the flat buffers, the
// gradient norm one reduction, and a checkpoint a few large writes.
import { Tensor, type Device } from '../tensor/tensor.js';
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
  readonly flatGrad: Tensor;
  readonly numel: number;
  readonly device: Device;

  constructor(specs: ParameterSpec[], device: Device) {
    this.device = device;
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
    this.flat = Tensor.zeros([offset], { device });
    this.flatGrad = Tensor.zeros([offset], { device });
    for (const p of laid) {
      const param: Parameter = {
        ...p,
        value: this.flat.view(p.offset, p.shape),
        grad: this.flatGrad.view(p.offset, p.shape),
      };
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

  zeroGrad(): void {
    ops.fill(this.flatGrad, 0);
  }

  /** Host copy of all parameter values (one transfer). */
  readAll(): Float32Array {
    return this.flat.toFloat32Array();
  }

  writeAll(data: Float32Array): void {
    if (data.length !== this.numel) throw new Error(`expected ${this.numel} parameter values, got ${data.length}`);
    this.flat.write(data);
  }

  dispose(): void {
    this.flat.dispose();
    this.flatGrad.dispose();
  }
}
