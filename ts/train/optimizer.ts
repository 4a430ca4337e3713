// AdamW over the flat parameter buffer: one native call for every parameter
// (the book decays all of them, biases and LayerNorm included). At bf16 it
// updates the float32 master weights and writes the model's bf16 copy by
// stochastic rounding whose bits depend only on (seed, step): a resumed run
// rounds exactly as an uninterrupted one.
import type { ParameterStore } from '../nn/parameters.js';
import * as ops from '../tensor/ops.js';
import { Tensor } from '../tensor/tensor.js';

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** torch.optim.AdamW(lr=4e-4, weight_decay=0.1) as the book uses it. */
export const BOOK_ADAMW: AdamWConfig = { lr: 4e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };

/**
 * The RNG stream of step t's stochastic rounding: above every dropout stream
 * (dropout counter * 4096 + site, ts/model/gpt.ts) so the two never share bits.
 */
export const roundingStream = (step: number) => 2 ** 52 + step;

export class AdamW {
  readonly m: Tensor;
  readonly v: Tensor;
  /** Updates applied so far (PyTorch's `step` in the state). */
  step = 0;
  private readonly normSq: Tensor;

  private readonly master: Tensor;

  /** `roundingSeed` seeds the bf16 stochastic rounding (the trainer passes the run's seed). */
  constructor(readonly params: ParameterStore, public config: AdamWConfig = BOOK_ADAMW, readonly roundingSeed = 0) {
    this.master = params.requireMaster('AdamW');
    this.m = Tensor.zeros([params.numel], { device: params.device });
    this.v = Tensor.zeros([params.numel], { device: params.device });
    this.normSq = Tensor.zeros([1], { device: params.device });
  }

  /**
   * Global L2 norm of the gradients (read back to the host: one sync), and,
   * when maxNorm is given, clipping to it on the device.
   */
  clipGradNorm(maxNorm?: number): number {
    ops.sumSquares(this.normSq, this.params.flatGrad);
    if (maxNorm !== undefined && maxNorm > 0) ops.clipByNorm(this.params.flatGrad, this.normSq, maxNorm);
    return Math.sqrt(this.normSq.item());
  }

  /** One AdamW update at learning rate `lr` (defaults to config.lr). */
  update(lr = this.config.lr): void {
    this.step += 1;
    const c = this.config;
    const p = this.params;
    ops.adamw(this.master, p.flatGrad, this.m, this.v, {
      lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: c.weightDecay, step: this.step,
    }, p.master === p.flat ? undefined : { params: p.flat, rounding: { seed: this.roundingSeed, stream: roundingStream(this.step) } });
  }

  dispose(): void {
    this.m.dispose();
    this.v.dispose();
    this.normSq.dispose();
  }
}
