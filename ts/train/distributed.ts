// Data-parallel training over MPI. A process started by mpirun or srun joins
// the job; every rank holds the whole model, takes its share of the
// micro-batches of each optimizer step, and the gradients are summed across
// ranks once per step, so all ranks apply the same update. The collectives
// follow the tensor: CUDA tensors go through NCCL (its communicator set up
// over MPI by useNccl), CPU tensors and host scalars through MPI.
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism, constants as osConstants } from 'node:os';
import { native } from '../tensor/native.js';
import * as ops from '../tensor/ops.js';
import { Tensor } from '../tensor/tensor.js';

/** The ranks of a job, as the launcher sets them (OpenMPI, MPICH/PMI, Slurm's srun). */
export function launchedWorld(env: NodeJS.ProcessEnv = process.env): { size: number; localRank: number } | null {
  const first = (...names: string[]) => names.map((n) => env[n]).find((v) => v !== undefined && v !== '');
  // SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: a batch script itself (no srun) is one task of its allocation.
  const size = Number(first('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'SLURM_STEP_NUM_TASKS') ?? NaN);
  if (!(Number.isInteger(size) && size >= 1)) return null;
  const localRank = Number(first('OMPI_COMM_WORLD_LOCAL_RANK', 'MPI_LOCALRANKID', 'PMI_LOCAL_RANK', 'SLURM_LOCALID') ?? 0);
  return { size, localRank: Number.isInteger(localRank) ? localRank : 0 };
}

/**
 * Before the CUDA backend loads: a rank of a job uses the GPU of its local
 * rank (modulo the GPUs it sees; native/cuda/backend_cuda.cu), unless
 * GPTCUDA_DEVICE names one.
 */
export function assignLocalGpu(env: NodeJS.ProcessEnv = process.env): void {
  const world = launchedWorld(env);
  if (world && world.size > 1) env.GPTCUDA_LOCAL_RANK = String(world.localRank);
}

export class Collective {
  readonly rank: number;
  readonly size: number;
  readonly localRank: number;
  readonly impl: string;
  readonly version: string;
  /** NCCL's version once useNccl() has joined its communicator. */
  ncclVersion: string | null = null;
  private finished = false;

  constructor(localRank: number) {
    const r = native().mpi.init();
    this.rank = r.rank;
    this.size = r.size;
    this.localRank = localRank;
    this.impl = r.impl;
    this.version = r.version;
    // A rank that fails (an error, a second Ctrl-C) must not leave the others
    // waiting in a collective: it ends the whole job.
    process.on('exit', (code) => {
      if (this.finished) return;
      console.error(`gptcuda: rank ${this.rank} exited (status ${code}) before the other ranks finished; stopping all ranks`);
      native().mpi.abort(code || 1);
    });
  }

  get isRoot(): boolean {
    return this.rank === 0;
  }

  /**
   * Joins NCCL's communicator for CUDA tensors (every rank calls it). The
   * ranks first agree that all train on CUDA: one rank falling back to the
   * CPU would wait in MPI while the others wait in NCCL.
   */
  useNccl(device: string): void {
    const [onCuda] = this.sumScalars([device === 'cuda' ? 1 : 0]);
    if (onCuda !== 0 && onCuda !== this.size)
      throw new Error(`${onCuda} of ${this.size} ranks train on cuda and the others on the cpu; every rank needs a GPU (see gptcuda info on each machine) or pass --device cpu`);
    if (device !== 'cuda' || this.ncclVersion) return;
    this.ncclVersion = native().nccl.init().version;
  }

  private onCuda(t: Tensor, op: string): boolean {
    if (t.device !== 'cuda') return false;
    if (!this.ncclVersion) throw new Error(`${op}: a CUDA tensor needs NCCL; call useNccl('cuda') on every rank first`);
    return true;
  }

  /**
   * In place: the sum over ranks. A bfloat16 tensor (bf16 gradients) is
   * widened into float32, summed there and rounded once: the collectives
   * reduce float32 only, and a sum of bf16 parts in bf16 would round at every
   * rank's addition.
   */
  sum(t: Tensor): void {
    if (t.dtype === 'bfloat16') return this.viaFloat32(t, (wide) => this.sum(wide));
    if (this.onCuda(t, 'sum')) native().nccl.allReduce(t.handle, 'sum');
    else native().mpi.allreduceSum(t.handle);
  }

  /** float32 staging for bfloat16 collectives, kept between steps (one per device, size and use). */
  private staging = new Map<string, Tensor>();

  private stagingFor(t: Tensor, use: string): Tensor {
    const key = `${t.device}:${t.numel}:${use}`;
    let wide = this.staging.get(key);
    if (!wide) {
      wide = Tensor.zeros([t.numel], { device: t.device });
      this.staging.set(key, wide);
    }
    return wide;
  }

  /**
   * f on a float32 copy of t, then (unless f only read it) t = that copy
   * rounded: exact where f left bf16 values, as a broadcast or gather does.
   */
  private viaFloat32(t: Tensor, f: (wide: Tensor) => void, writeBack = true): void {
    const wide = this.stagingFor(t, 'full');
    const flat = t.view(0, [t.numel]);
    ops.convert(wide, flat);
    f(wide);
    if (writeBack) ops.convert(flat, wide);
  }

  sumScalars(values: number[]): number[] {
    const a = Float64Array.from(values);
    native().mpi.allreduceScalars(a, 'sum');
    return [...a];
  }

  /** A CUDA tensor goes through host memory: this runs once, at the start of a run. A bfloat16 one goes through float32, exactly. */
  broadcast(t: Tensor, root = 0): void {
    if (t.dtype === 'bfloat16') return this.viaFloat32(t, (wide) => this.broadcast(wide, root));
    if (!this.onCuda(t, 'broadcast')) return native().mpi.broadcast(t.handle, root);
    const host = Tensor.from(t.toFloat32Array(), [t.numel]);
    try {
      native().mpi.broadcast(host.handle, root);
      t.write(host.toFloat32Array());
    } finally {
      host.dispose();
    }
  }

  /** This rank's contiguous part [start, start + length) of n elements split across ranks (as reduceScatter/allgather split them). */
  shard(n: number): { start: number; length: number } {
    const per = Math.ceil(n / this.size);
    const start = Math.min(n, per * this.rank);
    return { start, length: Math.min(per, n - start) };
  }

  /**
   * shard = this rank's part of the sum over ranks of full. bfloat16 (ZeRO-1's
   * bf16 gradients) as sum(): summed in float32 and rounded once, so the part
   * holds plain data parallel's values (bit for bit where MPI or NCCL adds the
   * ranks' parts in the same order for both collectives, as with 2 ranks).
   */
  reduceScatter(full: Tensor, shard: Tensor): void {
    if (full.dtype !== shard.dtype) throw new Error(`reduceScatter: full is ${full.dtype} but shard is ${shard.dtype}`);
    if (full.dtype === 'bfloat16') {
      const wideShard = this.stagingFor(shard, 'shard');
      this.viaFloat32(full, (wide) => this.reduceScatter(wide, wideShard), false);
      return ops.convert(shard, wideShard);
    }
    if (this.onCuda(full, 'reduceScatter')) native().nccl.reduceScatterSum(full.handle, shard.handle);
    else native().mpi.reduceScatterSum(full.handle, shard.handle);
  }

  /** In place: every rank's part of full copied to all ranks (a bfloat16 one through float32, exactly). */
  allgather(full: Tensor): void {
    if (full.dtype === 'bfloat16') return this.viaFloat32(full, (wide) => this.allgather(wide));
    if (this.onCuda(full, 'allgather')) native().nccl.allgather(full.handle);
    else native().mpi.allgather(full.handle);
  }

  /** The job ends normally: every rank gets here. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    for (const t of this.staging.values()) t.dispose();
    this.staging.clear();
    native().mpi.barrier();
    if (this.ncclVersion) native().nccl.destroy();
    native().mpi.finalize();
  }

  /** `N ranks (MPI <impl>, CPU)` or `N ranks (MPI <impl>, NCCL x.y.z)`: the first line of a distributed run. */
  describe(device: string): string {
    const over = this.ncclVersion ? `NCCL ${this.ncclVersion}` : device === 'cpu' ? 'CPU' : device;
    return `${this.size} ranks (MPI ${this.version || this.impl}, ${over})`;
  }
}

/** The job this process belongs to, or null for a single process (no launcher, or one rank). */
export function joinLaunchedJob(): Collective | null {
  const world = launchedWorld();
  if (!world || world.size === 1) return null;
  const probe = native().mpi.probe();
  if (!probe.available) throw new Error(`started by an MPI launcher with ${world.size} ranks, but ${probe.reason}`);
  const c = new Collective(world.localRank);
  if (c.size !== world.size)
    throw new Error(`the launcher started ${world.size} ranks but MPI sees ${c.size}: the MPI library loaded (${probe.library}) is not the launcher's; set GPTCUDA_LIBMPI to the libmpi of your mpirun or srun`);
  return c;
}

/**
 * Ranks stop on this signal as on SIGTERM. mpirun forwards it to every rank at
 * once, whereas its own SIGINT/SIGTERM handling sends SIGCONT, waits
 * odls_base_sigkill_timeout (1 s), sends SIGTERM and kills as long after:
 * too short to finish a step and write a checkpoint.
 */
export const STOP_SIGNAL = 'SIGUSR2' as const;

/**
 * A checkpoint records the micro-batches of a whole optimizer step (over all
 * ranks) as its gradAccum, so it resumes on any number of ranks dividing it.
 */
export function worldIndependentOptions<T extends { gradAccum?: number }>(options: T, world: Collective | null): T {
  return world ? { ...options, gradAccum: (options.gradAccum ?? 1) * world.size } : options;
}

/** The inverse of worldIndependentOptions for the ranks resuming. */
export function optionsForWorld<T extends { gradAccum?: number }>(options: T, world: Collective | null): T {
  if (!world) return options;
  const total = options.gradAccum ?? 1;
  if (total % world.size !== 0)
    throw new Error(`--resume: the checkpoint's optimizer step spans ${total} micro-batch(es), which ${world.size} ranks cannot share; resume with a number of ranks dividing ${total}`);
  return { ...options, gradAccum: total / world.size };
}

/**
 * `gptcuda train --nproc N`: the same command again under `mpirun -np N` on
 * this machine; resolves to its exit status. mpirun runs in its own process
 * group so that a Ctrl-C reaches it once, through us: the first SIGINT,
 * SIGTERM or SIGHUP becomes STOP_SIGNAL (the ranks agree on a step, rank 0
 * writes the checkpoint); a second one is passed on as is, ending the job.
 */
export async function runUnderMpirun(nproc: number, argv: string[] = process.argv): Promise<number> {
  if (!(Number.isInteger(nproc) && nproc >= 1)) throw new Error(`--nproc must be a positive integer (got ${nproc})`);
  const version = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  if (version.error || version.status !== 0)
    throw new Error('--nproc needs mpirun on the PATH: install OpenMPI (apt-get install openmpi-bin libopenmpi-dev) or MPICH, or start the ranks with your own launcher');
  const openmpi = /Open MPI/i.test(version.stdout);
  const rest: string[] = [];
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--nproc') i++;
    else if (!a.startsWith('--nproc=')) rest.push(a);
  }
  const cores = availableParallelism();
  // Unbound ranks sharing the cores: OpenMPI would pin each to one core, where its threads would queue.
  const flags = openmpi ? [...(nproc > cores ? ['--oversubscribe'] : []), '--bind-to', 'none', ...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : [])] : [];
  const threads = String(Math.max(1, Math.floor(cores / nproc)));
  const env = { ...process.env, GPTCUDA_NUM_THREADS: process.env.GPTCUDA_NUM_THREADS ?? threads, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? threads };
  const child = spawn('mpirun', ['-np', String(nproc), ...flags, process.execPath, ...process.execArgv, argv[1], ...rest], { stdio: 'inherit', detached: true, env });
  let received: NodeJS.Signals | undefined;
  const forward = (sig: NodeJS.Signals) => () => {
    child.kill(received ? sig : STOP_SIGNAL);
    received ??= sig;
  };
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => [sig, forward(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  try {
    const status = await new Promise<number>((resolve, reject) => {
      child.on('error', (e) => reject(new Error(`cannot start mpirun: ${e.message}`)));
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1)));
    });
    // Stopped by a signal: the status says which, as a single process's would.
    return received && status !== 0 ? 128 + osConstants.signals[received] : status;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
}
