// ZeRO stage 1 (`--zero 1`): each rank keeps the AdamW moments of its own
// contiguous part of the flat parameter buffer only, so optimizer memory per
// rank falls by the number of ranks. Per step: the gradients are summed and
// scattered (each rank receives its part), the rank updates its part, and the
// parameters are gathered back to every rank. Checkpoints hold the full
// moments, gathered, so they do not depend on the world size.
//
// At bf16 the rank also keeps only its part of the float32 master weights
// (ParameterStore.shardMaster). Its part of the bf16 gradients is summed in
// float32 and rounded once to bf16, as plain data parallel's sum is; AdamW
// updates the master part and writes the bf16 part by stochastic rounding
// with the draws of the part's global element indices (the adamw op's
// rounding offset), and the bf16 parameters are gathered (through float32,
// exactly). So every value — bf16 weights, master, moments — is that of
// plain data parallel on the same ranks, bit for bit as long as the
// reduce-scatter adds the ranks' gradients in the all-reduce's order (always
// with 2 ranks; tested). Checkpoints gather the master too and keep the exact
// bf16 copy.
import type { ParameterStore } from '../nn/parameters.js';
import * as ops from '../tensor/ops.js';
import { Tensor } from '../tensor/tensor.js';
import type { Collective } from './distributed.js';
import { AdamW, roundingStream, type AdamWConfig } from './optimizer.js';

export class ZeroAdamW {
  /** This rank's part of the moments, [start, start + length) of the flat buffer. */
  readonly m: Tensor;
  readonly v: Tensor;
  step = 0;
  readonly start: number;
  readonly length: number;
  /** This rank's part of the float32 master weights (at fp32 a view of the parameters). */
  readonly master: Tensor;
  private readonly gradShard: Tensor;
  private readonly paramShard: Tensor;
  private readonly normSq: Tensor;

  /**
   * Call after every rank holds the same weights (the start's broadcast): at
   * bf16 this drops the master weights outside the rank's part.
   * `roundingSeed` seeds the bf16 stochastic rounding, as AdamW's.
   */
  constructor(readonly params: ParameterStore, public config: AdamWConfig, readonly world: Collective, readonly roundingSeed = 0) {
    ({ start: this.start, length: this.length } = world.shard(params.numel));
    if (this.length === 0) throw new Error(`--zero 1: ${params.numel} parameters cannot be split over ${world.size} ranks; use fewer ranks or --zero 0`);
    // On the parameters' device: CUDA shards are reduced and gathered by NCCL, CPU ones by MPI.
    const device = params.device;
    this.paramShard = params.flat.view(this.start, [this.length]);
    this.master = params.precision === 'fp32' ? this.paramShard : params.shardMaster(this.start, this.length);
    this.m = Tensor.zeros([this.length], { device });
    this.v = Tensor.zeros([this.length], { device });
    this.gradShard = Tensor.zeros([this.length], { device, dtype: params.flatGrad.dtype });
    this.normSq = Tensor.zeros([1], { device });
  }

  /** Once per step, after the backward passes: this rank's part of the gradients summed over ranks. */
  reduceGradients(): void {
    this.world.reduceScatter(this.params.flatGrad, this.gradShard);
  }

  /** Global L2 norm (the parts' squares summed over ranks), and clipping of this rank's part to it. */
  clipGradNorm(maxNorm?: number): number {
    ops.sumSquares(this.normSq, this.gradShard);
    const [total] = this.world.sumScalars([this.normSq.item()]);
    if (maxNorm !== undefined && maxNorm > 0) {
      this.normSq.write(Float32Array.of(total));
      ops.clipByNorm(this.gradShard, this.normSq, maxNorm);
    }
    return Math.sqrt(total);
  }

  update(lr = this.config.lr): void {
    this.step += 1;
    const c = this.config;
    const bf16 = this.master !== this.paramShard;
    ops.adamw(this.master, this.gradShard, this.m, this.v, {
      lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: c.weightDecay, step: this.step,
    }, bf16 ? { params: this.paramShard, rounding: { seed: this.roundingSeed, stream: roundingStream(this.step) }, offset: this.start } : undefined);
    this.world.allgather(this.params.flat);
  }

  /** Every rank's part, on every rank (a collective: all ranks call it; through host memory, for checkpoints). */
  gather(shard: Tensor): Float32Array {
    const host = new Float32Array(this.params.numel);
    host.set(shard.toFloat32Array(), this.start);
    const full = Tensor.from(host, [host.length]);
    try {
      this.world.allgather(full);
      return full.toFloat32Array();
    } finally {
      full.dispose();
    }
  }

  dispose(): void {
    for (const t of [this.m, this.v, this.gradShard, this.normSq]) t.dispose();
  }
}

export type Optimizer = AdamW | ZeroAdamW;

/**
 * `--zero 1` with several ranks shards the moments (and at bf16 the master
 * weights); otherwise the plain AdamW. With ZeRO, every rank must hold the
 * same weights already.
 */
export function createOptimizer(params: ParameterStore, config: AdamWConfig, world: Collective | null, zero: number, roundingSeed = 0): Optimizer {
  if (zero !== 0 && zero !== 1) throw new Error(`--zero must be 0 (plain data parallel) or 1 (AdamW moments sharded across ranks), got ${zero}`);
  return zero === 1 && world ? new ZeroAdamW(params, config, world, roundingSeed) : new AdamW(params, config, roundingSeed);
}

/**
 * The full moments for a checkpoint, and the full float32 master weights
 * where this rank keeps only its part of them (ZeRO-1 at bf16; otherwise
 * absent: the parameter store has them). With ZeRO a collective that every
 * rank must call.
 */
export function fullOptimizerState(o: Optimizer): { m: Float32Array; v: Float32Array; master?: Float32Array } {
  if (!(o instanceof ZeroAdamW)) return { m: o.m.toFloat32Array(), v: o.v.toFloat32Array() };
  const master = fullMaster(o);
  return { m: o.gather(o.m), v: o.gather(o.v), ...(master ? { master } : {}) };
}

/** The full float32 master weights where this rank keeps only its part (a collective), else undefined. */
export function fullMaster(o: Optimizer): Float32Array | undefined {
  return o instanceof ZeroAdamW && o.params.masterShard ? o.gather(o.master) : undefined;
}

/** Loads full moments from a checkpoint (with ZeRO, this rank's part). */
export function loadMoments(o: Optimizer, m: Float32Array, v: Float32Array): void {
  const part = (a: Float32Array) => (o instanceof ZeroAdamW ? a.subarray(o.start, o.start + o.length) : a);
  o.m.write(part(m));
  o.v.write(part(v));
}
