// Loads the native addon once, from the package's build/ folder (the same
// path whether running from ts/ under vitest or from dist/).
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type DType = 'float32' | 'int32' | 'bfloat16';
export type Device = 'cpu' | 'cuda';

/** The handle the addon gives for a tensor: a view into one device allocation. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DType;
  readonly device: Device;
  readonly disposed: boolean;
  readonly offset: number;
  view(offset: number, shape: number[]): NativeTensor;
  dispose(): void;
  read(): Float32Array | Int32Array | Uint16Array;
  write(data: Float32Array | Int32Array | Uint16Array): void;
}

/** Opaque handle of a recorded op sequence. */
export type NativeRecording = { readonly __recording: unique symbol };

export interface BackendsInfo {
  cpu: { threads: number; gemm: string };
  cuda: { built: boolean; buildInfo: string; available: boolean; reason?: string };
}

export interface DeviceInfo {
  name: string;
  totalMemory: number;
  freeMemory: number;
  computeCapability: string;
  memoryInUse: number;
  peakMemory: number;
}

type T = NativeTensor;
type OptT = NativeTensor | null;

/** The op table: every op validates its arguments natively. */
export interface NativeOps {
  fill(x: T, value: number): void;
  scale(x: T, factor: number): void;
  add(out: T, a: T, b: T): void;
  accumulate(dst: T, src: T): void;
  copy(dst: T, src: T): void;
  convert(dst: T, src: T): void;
  fillNormal(x: T, mean: number, std: number, seed: number, stream: number): void;
  fillUniform(x: T, lo: number, hi: number, seed: number, stream: number): void;
  embeddingForward(out: T, ids: T, wte: T, wpe: T, pos0: number): void;
  embeddingBackward(dwte: OptT, dwpe: OptT, dout: T, ids: T, pos0: number): void;
  layernormForward(out: T, mean: T, rstd: T, inp: T, weight: T, bias: T): void;
  layernormBackward(dinp: OptT, dweight: OptT, dbias: OptT, dout: T, inp: T, weight: T, mean: T, rstd: T): void;
  residualLayernormForward(residualOut: T, lnOut: T, mean: T, rstd: T, a: T, b: T, weight: T, bias: T): void;
  gemm(c: T, a: T, b: T, transA: boolean, transB: boolean, alpha: number, beta: number): void;
  matmulForward(out: T, inp: T, weight: T, bias: OptT): void;
  matmulBackward(dinp: OptT, dweight: OptT, dbias: OptT, dout: T, inp: T, weight: T, accumulate: boolean): void;
  matmulGeluForward(out: T, pre: T, inp: T, weight: T, bias: OptT): void;
  geluMatmulBackward(dpre: T, dweight: OptT, dbias: OptT, dout: T, act: T, pre: T, weight: T, accumulate: boolean): void;
  geluForward(out: T, inp: T): void;
  geluBackward(dinp: T, inp: T, dout: T): void;
  dropoutForward(out: T, inp: T, p: number, seed: number, stream: number): void;
  dropoutBackward(dinp: T, dout: T, p: number, seed: number, stream: number): void;
  attentionForward(out: T, lse: T, qkv: T, nHeads: number, p: number, seed: number, stream: number): void;
  attentionBackward(dqkv: T, dout: T, qkv: T, out: T, lse: T, nHeads: number, p: number, seed: number, stream: number): void;
  attentionDecode(out: T, kcache: T, vcache: T, qkv: T, pos0: number): void;
  crossentropyForward(losses: T, logits: T, targets: T, ignoreIndex: number): void;
  crossentropyForwardBackward(losses: T, dlogits: T, logits: T, targets: T, dloss: number, ignoreIndex: number): void;
  adamw(
    master: T, grads: T, m: T, v: T, lr: number, beta1: number, beta2: number, eps: number, weightDecay: number,
    step: number, params?: T, seed?: number, stream?: number, roundingOffset?: number,
  ): void;
  sumSquares(out: T, x: T): void;
  clipByNorm(x: T, normSq: T, maxNorm: number): void;
}

export interface Addon {
  createTensor(shape: number[], dtype: DType, device: Device): NativeTensor;
  backends(): BackendsInfo;
  deviceInfo(device: Device): DeviceInfo;
  resetPeakMemory(device: Device): void;
  synchronize(device: Device): void;
  ops: NativeOps;
  /** Op calls until endRecording() are validated and queued instead of run. */
  beginRecording(): void;
  endRecording(): NativeRecording;
  /** Runs a recording on a worker thread; the event loop stays free meanwhile. */
  runRecording(recording: NativeRecording): Promise<void>;
  /** The machine's read bandwidth in GB/s over a buffer of `megabytes`, best of `reps` (the benchmark's memory bound). */
  readBandwidth(megabytes: number, reps: number): number;
  /** Byte-pair encoder over GPT-2's pre-tokenizer (native/text); see ts/data/tokenizer.ts. */
  BpeTokenizer: new (bytes: Uint8Array, lengths: Uint32Array, ranks: Uint32Array, special: string, specialId: number) => NativeBpe;
  /** MPI collectives on float32 CPU tensors, libmpi opened at run time (native/addon/mpi.cc); see ts/train/distributed.ts. */
  mpi: NativeMpi;
  /** NCCL collectives on float32 CUDA tensors, libnccl opened at run time by the CUDA backend (native/cuda/collectives.cu, native/addon/nccl.cc). */
  nccl: NativeNccl;
}

export interface NativeNccl {
  probe(): { available: boolean; version?: string; library?: string; reason?: string };
  /** Joins the communicator of the MPI world (after mpi.init; rank 0's id is broadcast over MPI). */
  init(): { rank: number; size: number; version: string };
  allReduce(t: NativeTensor, op: 'sum' | 'avg'): void;
  /** As NativeMpi.reduceScatterSum, on the CUDA backend's stream. */
  reduceScatterSum(full: NativeTensor, shard: NativeTensor): void;
  allgather(full: NativeTensor): void;
  destroy(): void;
}

export interface NativeMpi {
  probe(): { available: boolean; impl?: string; library?: string; reason?: string };
  init(): { rank: number; size: number; impl: string; version: string };
  allreduceSum(t: NativeTensor): void;
  allreduceScalars(values: Float64Array, op: 'sum' | 'max'): void;
  /** shard = this rank's contiguous part (ceil(n / size) elements, the last ones shorter) of the sum of full. */
  reduceScatterSum(full: NativeTensor, shard: NativeTensor): void;
  /** In place: each rank's part of full (as reduceScatterSum splits it) copied to every rank. */
  allgather(full: NativeTensor): void;
  broadcast(t: NativeTensor, root: number): void;
  barrier(): void;
  finalize(): void;
  abort(code: number): void;
}

export interface NativeBpe {
  /** Token ids of `text`, cut into up to `chunks` parts encoded on up to `threads` threads. */
  encode(text: string, chunks: number, threads: number): Uint32Array;
  /** The same on a worker thread. */
  encodeAsync(text: string, chunks: number, threads: number): Promise<Uint32Array>;
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('gptcuda: cannot find the package root (package.json)');
    dir = parent;
  }
  return dir;
}

export const PACKAGE_ROOT = packageRoot();

let addon: Addon | undefined;

/**
 * OpenBLAS picks its kernels from the CPU model, and releases that predate a
 * CPU fall back to a generic x86 core several times slower ("Prescott" on
 * this project's CI machines: 20 instead of 90+ GFLOP/s). The vector
 * features are what matter, so name the core from them unless the user did;
 * OpenBLAS reads the variable when the addon loads it.
 */
function pickOpenBlasCore(): void {
  if (process.env.OPENBLAS_CORETYPE || process.arch !== 'x64' || process.platform !== 'linux') return;
  let flags = '';
  try {
    const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '';
  } catch {
    return;
  }
  const has = (f: string) => new RegExp(`\\b${f}\\b`).test(flags);
  if (has('avx512f') && has('avx512bw') && has('avx512vl')) process.env.OPENBLAS_CORETYPE = 'SkylakeX';
  else if (has('avx2') && has('fma')) process.env.OPENBLAS_CORETYPE = 'Haswell';
}

/**
 * After each GEMM OpenBLAS's idle threads spin (sched_yield) for about 2^28
 * cycles before sleeping, taking the cores from gptcuda's own thread pool,
 * which runs every op between two GEMMs: 10% of a CPU training step of the
 * book's model on 2 cores. 2^4 cycles makes them sleep at once, unless the
 * user set it; OpenBLAS reads it when the addon loads it.
 */
function quietOpenBlasThreads(): void {
  process.env.OPENBLAS_THREAD_TIMEOUT ??= '4';
}

export function native(): Addon {
  if (addon) return addon;
  const path = join(PACKAGE_ROOT, 'build', 'Release', 'gptcuda.node');
  if (!existsSync(path)) {
    throw new Error(
      `gptcuda: the native addon is not built (${path} is missing). Run \`npm install\` or \`npm run build\` in ${PACKAGE_ROOT}.`,
    );
  }
  pickOpenBlasCore();
  quietOpenBlasThreads();
  addon = createRequire(import.meta.url)(path) as Addon;
  return addon;
}
