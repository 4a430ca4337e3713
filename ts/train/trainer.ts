// The training loop: the book's train_model_simple (AdamW, evaluation every
// eval_freq steps over eval_iter batches, a greedy sample after each epoch),
// plus Appendix D's warmup, cosine decay and gradient clipping, gradient
// accumulation, max steps, and a state that checkpoints and resumes exactly.
import type { DataLoader, DataLoaderState } from '../data/loader.js';
import { textToTokenIds, tokenIdsToText } from '../data/tokenizer.js';
import type { GPTModel } from '../model/gpt.js';
import * as ops from '../tensor/ops.js';
import { generateGreedySync } from '../generate/generate.js';
import { loaderLoss } from './loss.js';
import { AdamW, type AdamWConfig } from './optimizer.js';
import type { Collective } from './distributed.js';
import type { Optimizer } from './zero.js';

export interface TrainOptions {
  epochs: number;
  /** Stop after this many optimizer updates (over all epochs). */
  maxSteps?: number;
  optimizer: AdamWConfig;
  /** Linear warmup from lr/warmupSteps to lr over this many updates. */
  warmupSteps?: number;
  /** With a minimum lr, cosine decay from lr to it after warmup; without, constant lr. */
  minLr?: number;
  /** Clip the global gradient norm to this value. */
  gradClip?: number;
  /** Micro-batches per optimizer update. */
  gradAccum?: number;
  evalFreq: number;
  evalIter: number;
  samplePrompt: string;
  sampleTokens?: number;
}

export interface StepEvent { event: 'step'; step: number; epoch: number; loss: number; lr: number; tokens_seen: number; grad_norm?: number }
export interface EvalEvent { event: 'eval'; step: number; epoch: number; train_loss: number; val_loss: number; tokens_seen: number }
export interface SampleEvent { event: 'sample'; epoch: number; step: number; text: string }
export type TrainEvent = StepEvent | EvalEvent | SampleEvent;

export interface LossHistory {
  steps: number[];
  epochsSeen: number[];
  tokensSeen: number[];
  trainLosses: number[];
  valLosses: number[];
}

/** Everything besides weights and moments that a resumed run needs. */
export interface TrainState {
  /** Optimizer updates done. */
  step: number;
  /** 0-based epoch the loader is in. */
  epoch: number;
  tokensSeen: number;
  loader: DataLoaderState;
  dropoutCounter: number;
  history: LossHistory;
  /** Step losses, one per update (for the log and plots). */
  stepLosses: number[];
}

export interface TrainSummary {
  steps: number;
  epochs: number;
  tokens_seen: number;
  seconds: number;
  tokens_per_s: number;
  final_train_loss: number;
  final_val_loss: number;
  stopped_early: boolean;
  /** Set when training stopped at a NaN/Inf loss or gradient norm (the update was not applied). */
  non_finite?: NonFiniteEvent;
}

export interface NonFiniteEvent { event: 'non_finite'; step: number; epoch: number; what: string; loss: number; grad_norm: number; action: 'stop' | 'skip' }

export interface TrainHooks {
  onEvent?(e: TrainEvent): void;
  /** Called after updates where `saveEvery` divides the step, and at the end. */
  onCheckpoint?(trainer: Trainer, reason: 'interval' | 'end' | 'stop'): Promise<void> | void;
  saveEvery?: number;
  /** A NaN/Inf loss or gradient norm: stop before the update (default), or skip the update and go on (llm.c-style). */
  nonFinite?: 'stop' | 'skip';
  /** Called for each non-finite update found. */
  onNonFinite?(e: NonFiniteEvent): void;
}

export class Trainer {
  readonly optimizer: Optimizer;
  state: TrainState;
  private stopRequested = false;
  /**
   * Data parallel (ts/train/distributed.ts): each optimizer step spans
   * gradAccum micro-batches per rank, micro-batch k of the step on rank k mod N,
   * so the update is that of one process with gradAccum * N.
   */
  collective: Collective | null = null;

  constructor(
    readonly model: GPTModel,
    readonly train: DataLoader,
    readonly val: DataLoader,
    readonly options: TrainOptions,
    optimizer?: Optimizer,
  ) {
    if (train.numBatches === 0) throw new Error('training loader has no batches: lower --batch-size or --context-length, or give more text');
    const accum = options.gradAccum ?? 1;
    if (!(Number.isInteger(accum) && accum >= 1)) throw new Error(`--grad-accum must be a positive integer (got ${accum})`);
    if (!(options.evalFreq >= 1)) throw new Error(`--eval-freq must be >= 1 (got ${options.evalFreq})`);
    // A bad id is reported as its place in the corpus, before it reaches the embedding.
    for (const l of [train, val]) l.vocabSize ??= model.config.vocabSize;
    this.optimizer = optimizer ?? new AdamW(model.params, options.optimizer, model.dropoutSeed);
    this.state = {
      step: 0,
      epoch: 0,
      tokensSeen: 0,
      loader: train.getState(),
      dropoutCounter: model.dropoutCounter,
      history: { steps: [], epochsSeen: [], tokensSeen: [], trainLosses: [], valLosses: [] },
      stepLosses: [],
    };
  }

  /** Updates in the whole run (for the schedule and progress). */
  get totalSteps(): number {
    const perEpoch = Math.ceil(this.train.numBatches / this.microBatchesPerStep);
    const all = perEpoch * this.options.epochs;
    return this.options.maxSteps !== undefined ? Math.min(all, this.options.maxSteps) : all;
  }

  /** Micro-batches of one optimizer step, over all ranks. */
  get microBatchesPerStep(): number {
    return (this.options.gradAccum ?? 1) * (this.collective?.size ?? 1);
  }

  /** Learning rate for update number `step` (0-based). */
  learningRate(step: number): number {
    const peak = this.options.optimizer.lr;
    const warmup = this.options.warmupSteps ?? 0;
    if (step < warmup) return (peak * (step + 1)) / warmup;
    if (this.options.minLr === undefined) return peak;
    const decaySteps = Math.max(1, this.totalSteps - warmup);
    const progress = Math.min(1, (step - warmup) / decaySteps);
    return this.options.minLr + (peak - this.options.minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  }

  /** Finish the current update, then stop (e.g. on SIGINT). */
  requestStop(): void {
    this.stopRequested = true;
  }

  /** Restores a checkpointed state (weights and moments are loaded separately). */
  restore(state: TrainState, optimizerStep: number): void {
    this.state = structuredClone(state);
    this.train.setState(state.loader);
    this.model.dropoutCounter = state.dropoutCounter;
    this.optimizer.step = optimizerStep;
  }

  private captureLoader(): void {
    this.state.loader = this.train.getState();
    this.state.dropoutCounter = this.model.dropoutCounter;
    this.state.epoch = this.train.epoch;
  }

  evaluate(): { trainLoss: number; valLoss: number } {
    return {
      trainLoss: loaderLoss(this.model, this.train, this.options.evalIter, this.collective),
      valLoss: loaderLoss(this.model, this.val, this.options.evalIter, this.collective),
    };
  }

  /** The book's generate_and_print_sample: greedy, newlines shown as spaces. */
  sample(): string {
    const prompt = textToTokenIds(this.options.samplePrompt);
    const ids = generateGreedySync(this.model, prompt, this.options.sampleTokens ?? 50);
    return tokenIdsToText(ids).replace(/\n/g, ' ');
  }

  /**
   * Sums the gradients and the step loss over ranks, and agrees on stopping:
   * a stop requested on any rank (a signal) stops all after this step.
   */
  private reduceStep(world: Collective, lossSum: number): number {
    if ('reduceGradients' in this.optimizer) this.optimizer.reduceGradients();
    else world.sum(this.model.params.flatGrad);
    const [loss, stops] = world.sumScalars([lossSum, this.stopRequested ? 1 : 0]);
    if (stops > 0) this.stopRequested = true;
    return loss;
  }

  /** tokensSeen after the last completed update: a step that fails midway (a bad id) is not counted. */
  private tokensBefore = 0;

  async run(hooks: TrainHooks = {}): Promise<TrainSummary> {
    this.tokensBefore = this.state.tokensSeen;
    try {
      return await this.runSteps(hooks);
    } catch (err) {
      this.state.tokensSeen = this.tokensBefore;
      throw err;
    }
  }

  private async runSteps(hooks: TrainHooks): Promise<TrainSummary> {
    const emit = (e: TrainEvent) => hooks.onEvent?.(e);
    const accum = this.microBatchesPerStep;
    const world = this.collective;
    const total = this.totalSteps;
    const start = performance.now();
    const startTokens = this.state.tokensSeen;
    let stoppedEarly = false;
    let nonFinite: NonFiniteEvent | undefined;
    const s = this.state;

    outer: while (s.epoch < this.options.epochs && s.step < total) {
      const epoch = s.epoch;
      let micro = 0;
      let lossSum = 0;
      this.model.zeroGrad();
      const batches = this.train.numBatches - this.train.batchIndex;
      let seen = 0;
      this.tokensBefore = s.tokensSeen;
      // Dropout masks follow the micro-batch's place in the step, not the rank that runs it.
      let dropout0 = this.model.dropoutCounter;
      for (const batch of this.train) {
        seen++;
        if (!world || micro % world.size === world.rank) {
          this.model.dropoutCounter = dropout0 + micro;
          const loss = this.model.forward(batch.inputs, batch.batchSize, batch.contextLength, batch.targets, {
            training: true,
            grad: true,
            lossScale: 1 / accum,
          });
          this.model.backward();
          lossSum += loss;
        }
        micro++;
        s.tokensSeen += batch.batchSize * batch.contextLength;
        if (micro < accum && seen < batches) continue;
        this.model.dropoutCounter = dropout0 + micro;
        dropout0 = this.model.dropoutCounter;
        // An epoch ending mid-accumulation updates with what it has.
        if (micro < accum) ops.scale(this.model.params.flatGrad, accum / micro);
        if (world) lossSum = this.reduceStep(world, lossSum);
        const lr = this.learningRate(s.step);
        // The norm is measured (and clipped) before the update, so a NaN/Inf never reaches the weights.
        const norm = this.optimizer.clipGradNorm(this.options.gradClip);
        const gradNorm = this.options.gradClip !== undefined ? norm : undefined;
        const stepLoss = lossSum / micro;
        if (!Number.isFinite(stepLoss) || !Number.isFinite(norm)) {
          const what = [!Number.isFinite(stepLoss) ? `loss is ${stepLoss}` : '', !Number.isFinite(norm) ? `gradient norm is ${norm}` : ''].filter(Boolean).join(' and ');
          const e: NonFiniteEvent = { event: 'non_finite', step: s.step, epoch: epoch + 1, what, loss: stepLoss, grad_norm: norm, action: hooks.nonFinite ?? 'stop' };
          hooks.onNonFinite?.(e);
          micro = 0;
          lossSum = 0;
          this.model.zeroGrad();
          if (e.action === 'stop') {
            // The state stays that of the last completed update.
            s.tokensSeen = this.tokensBefore;
            nonFinite = e;
            stoppedEarly = true;
            break outer;
          }
          this.tokensBefore = s.tokensSeen;
          continue;
        }
        this.optimizer.update(lr);
        const step = s.step;
        s.step += 1;
        s.stepLosses.push(stepLoss);
        this.captureLoader();
        emit({ event: 'step', step, epoch: epoch + 1, loss: stepLoss, lr, tokens_seen: s.tokensSeen, ...(gradNorm !== undefined ? { grad_norm: gradNorm } : {}) });
        if (step % this.options.evalFreq === 0) {
          const { trainLoss, valLoss } = this.evaluate();
          const h = s.history;
          h.steps.push(step);
          h.trainLosses.push(trainLoss);
          h.valLosses.push(valLoss);
          h.tokensSeen.push(s.tokensSeen);
          h.epochsSeen.push(epoch + (this.train.epoch > epoch ? 1 : this.train.batchIndex / this.train.numBatches));
          emit({ event: 'eval', step, epoch: epoch + 1, train_loss: trainLoss, val_loss: valLoss, tokens_seen: s.tokensSeen });
        }
        micro = 0;
        lossSum = 0;
        this.tokensBefore = s.tokensSeen;
        this.model.zeroGrad();
        if (hooks.saveEvery && s.step % hooks.saveEvery === 0) await hooks.onCheckpoint?.(this, 'interval');
        if (this.stopRequested) {
          stoppedEarly = true;
          break outer;
        }
        if (s.step >= total) break;
        // Let signal handlers and I/O run between updates.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      // The epoch is over (or max steps reached mid-epoch): the book samples here.
      // An empty prompt (`--sample-prompt ''`) turns the samples off: there is nothing to continue.
      if ((this.train.epoch > epoch || s.step >= total) && (world?.isRoot ?? true) && this.options.samplePrompt !== '') {
        emit({ event: 'sample', epoch: epoch + 1, step: s.step, text: this.sample() });
      }
      this.captureLoader();
      if (s.step >= total) break;
    }
    if (!nonFinite) this.captureLoader();
    await hooks.onCheckpoint?.(this, stoppedEarly ? 'stop' : 'end');
    const seconds = (performance.now() - start) / 1000;
    const h = s.history;
    return {
      steps: s.step,
      epochs: s.epoch,
      tokens_seen: s.tokensSeen,
      seconds,
      tokens_per_s: (s.tokensSeen - startTokens) / Math.max(seconds, 1e-9),
      final_train_loss: h.trainLosses[h.trainLosses.length - 1] ?? NaN,
      final_val_loss: h.valLosses[h.valLosses.length - 1] ?? NaN,
      stopped_early: stoppedEarly,
      ...(nonFinite ? { non_finite: nonFinite } : {}),
    };
  }
}
