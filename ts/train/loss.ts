// The book's loss helpers: calc_loss_batch, calc_loss_loader, and perplexity.
import type { Batch, DataLoader } from '../data/loader.js';
import type { GPTModel } from '../model/gpt.js';
import type { Collective } from './distributed.js';

export function batchLoss(model: GPTModel, batch: Batch): number {
  return model.forward(batch.inputs, batch.batchSize, batch.contextLength, batch.targets);
}

/**
 * Mean of the batch losses over the first `numBatches` batches (all when
 * omitted), as the book's calc_loss_loader: NaN for an empty loader.
 */
export function loaderLoss(model: GPTModel, loader: DataLoader, numBatches?: number, shardOver?: Collective | null): number {
  if (loader.numBatches === 0) return NaN;
  const n = Math.min(numBatches ?? loader.numBatches, loader.numBatches);
  let total = 0;
  let i = 0;
  // Data parallel: batch i on rank i mod N, the sums reduced.
  for (const batch of loader.peek(n)) {
    if (!shardOver || i % shardOver.size === shardOver.rank) total += batchLoss(model, batch);
    i++;
  }
  if (shardOver) [total] = shardOver.sumScalars([total]);
  return total / i;
}

export const perplexity = (loss: number): number => Math.exp(loss);
