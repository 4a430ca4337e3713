// Tensor: a typed handle to native memory on a device. Memory is freed by
// dispose(); a FinalizationRegistry frees what was forgotten, as a backstop
// only (GC timing is no way to manage GPU memory).
import { native, type DType, type Device, type NativeTensor } from './native.js';

export type { DType, Device } from './native.js';
export type TypedData = Float32Array | Int32Array | Uint16Array;

/** A model's storage precision as users name it (`--dtype fp32|bf16`). */
export type Precision = 'fp32' | 'bf16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16'];
/** The tensor dtype that parameters, activations and gradients are stored in at a precision. */
export const storageDType = (p: Precision): DType => (p === 'bf16' ? 'bfloat16' : 'float32');

/** bfloat16 bit patterns widened into dst (exact: bf16 is the top half of a float32). */
export function bfloat16ToFloat32(src: Uint16Array, dst: Float32Array): void {
  if (dst.length < src.length) throw new RangeError('bfloat16ToFloat32: destination too short');
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
}

/** The same into a new array. */
export function bfloat16BitsToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  bfloat16ToFloat32(bits, out);
  return out;
}

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
}

const leakBackstop = new FinalizationRegistry<NativeTensor>((handle) => {
  if (!handle.disposed) handle.dispose();
});

export class Tensor {
  readonly handle: NativeTensor;
  /** The tensor owning the memory; a view keeps it reachable. */
  readonly base: Tensor | null;

  private constructor(handle: NativeTensor, base: Tensor | null) {
    this.handle = handle;
    this.base = base;
    if (!base) leakBackstop.register(this, handle, this);
  }

  /** A new zero-filled tensor. */
  static zeros(shape: readonly number[], options: TensorOptions = {}): Tensor {
    return new Tensor(native().createTensor([...shape], options.dtype ?? 'float32', options.device ?? 'cpu'), null);
  }

  /** A new tensor holding a copy of `data` (dtype from the array type unless given). */
  static from(data: TypedData | readonly number[], shape: readonly number[], options: TensorOptions = {}): Tensor {
    const dtype: DType =
      options.dtype ?? (data instanceof Int32Array ? 'int32' : data instanceof Uint16Array ? 'bfloat16' : 'float32');
    const typed =
      dtype === 'int32'
        ? data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>)
        : dtype === 'float32'
          ? data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>)
          : data instanceof Uint16Array ? data : Uint16Array.from(data as ArrayLike<number>);
    const t = Tensor.zeros(shape, { dtype, device: options.device });
    try {
      t.handle.write(typed);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  get shape(): number[] {
    return this.handle.shape;
  }
  get dtype(): DType {
    return this.handle.dtype;
  }
  get device(): Device {
    return this.handle.device;
  }
  get disposed(): boolean {
    return this.handle.disposed;
  }
  get numel(): number {
    return this.handle.shape.reduce((a, b) => a * b, 1);
  }

  /** A contiguous window of `shape` starting `offset` elements in; shares memory. */
  view(offset: number, shape: readonly number[]): Tensor {
    return new Tensor(this.handle.view(offset, [...shape]), this.base ?? this);
  }

  /** The values as float32 (a bfloat16 tensor is widened, exactly). */
  toFloat32Array(): Float32Array {
    if (this.dtype === 'bfloat16') return bfloat16BitsToFloat32(this.handle.read() as Uint16Array);
    if (this.dtype !== 'float32') throw new Error(`toFloat32Array: tensor is ${this.dtype}`);
    return this.handle.read() as Float32Array;
  }
  toInt32Array(): Int32Array {
    if (this.dtype !== 'int32') throw new Error(`toInt32Array: tensor is ${this.dtype}`);
    return this.handle.read() as Int32Array;
  }
  /** The value of a one-element tensor. */
  item(): number {
    if (this.numel !== 1) throw new Error(`item: tensor has shape [${this.shape.join(', ')}], not one element`);
    return this.dtype === 'bfloat16' ? this.toFloat32Array()[0]! : this.handle.read()[0];
  }

  /** Overwrites the contents from a typed array of the same dtype and length. */
  write(data: TypedData): void {
    this.handle.write(data);
  }

  /** Frees the memory now (for a view, only invalidates the view). */
  dispose(): void {
    if (!this.base) leakBackstop.unregister(this);
    this.handle.dispose();
  }

  /** Never throws (it runs inside error messages and debuggers): a disposed tensor says so. */
  toString(): string {
    if (this.disposed) return 'Tensor(disposed)';
    return `Tensor(${this.dtype}[${this.shape.join(', ')}] on ${this.device})`;
  }
}
