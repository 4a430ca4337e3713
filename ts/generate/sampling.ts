// Choosing the next token from logits, with the book's semantics:
// top-k first (ties at the k-th value kept, as its threshold does), then
// temperature 0 = argmax, else softmax(logits / T) sampled with a seeded RNG.
// top-p (nucleus) is our addition, applied after top-k and temperature.
import type { Rng } from '../tensor/rng.js';

export interface SamplingOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
}

export function validateSampling(o: SamplingOptions): void {
  if (o.temperature !== undefined && !(o.temperature >= 0 && Number.isFinite(o.temperature)))
    throw new Error(`temperature must be a finite number >= 0 (got ${o.temperature})`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 1))
    throw new Error(`topK must be a positive integer (got ${o.topK})`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error(`topP must be in (0, 1] (got ${o.topP})`);
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Masks (to -Infinity) every logit below the k-th largest; returns a copy. */
export function topKFilter(logits: Float32Array, k: number): Float32Array {
  const out = Float32Array.from(logits);
  if (k >= logits.length) return out;
  const sorted = Float32Array.from(logits).sort(); // ascending
  const threshold = sorted[sorted.length - k];
  for (let i = 0; i < out.length; i++) if (out[i] < threshold) out[i] = -Infinity;
  return out;
}

/** softmax(logits / temperature) in float64. */
export function softmax(logits: ArrayLike<number>, temperature = 1): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    p[i] = logits[i] === -Infinity ? 0 : Math.exp((logits[i] - max) / temperature);
    sum += p[i];
  }
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** Zeroes all but the smallest set of most likely tokens whose mass reaches topP. */
export function topPFilter(probs: Float64Array, topP: number): Float64Array {
  if (topP >= 1) return probs;
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]);
  const out = new Float64Array(probs.length);
  let mass = 0;
  for (const i of order) {
    out[i] = probs[i];
    mass += probs[i];
    if (mass >= topP) break;
  }
  for (let i = 0; i < out.length; i++) out[i] /= mass;
  return out;
}

export function sampleFrom(probs: Float64Array, rng: Rng): number {
  const u = rng.uniform();
  let cumulative = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    cumulative += probs[i];
    last = i;
    if (u < cumulative) return i;
  }
  return last; // rounding left u just above the total
}

export function nextToken(logits: Float32Array, o: SamplingOptions, rng: Rng): number {
  const filtered = o.topK !== undefined ? topKFilter(logits, o.topK) : logits;
  const temperature = o.temperature ?? 0;
  if (temperature === 0) return argmax(filtered);
  let probs = softmax(filtered, temperature);
  if (o.topP !== undefined) probs = topPFilter(probs, o.topP);
  return sampleFrom(probs, rng);
}
