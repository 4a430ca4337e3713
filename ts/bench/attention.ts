// Causal self-attention forward and backward at the book's training shape:
// B=2, T=256, 12 heads of 64 (qkv [2, 256, 2304]), with and without dropout on
// the attention weights.
import * as ops from '../tensor/ops.js';
import { Rng, fillUniform } from '../tensor/rng.js';
import { Tensor, type Device } from '../tensor/tensor.js';
import { timeIt, type TimeOptions } from './util.js';

export const ATT = { B: 2, T: 256, nHeads: 12, headDim: 64 };

export interface AttentionResult {
  dropout: number;
  forwardMs: number;
  backwardMs: number;
  totalMs: number;
  /** Causal FLOPs (the upper triangle skipped): forward 2 B H T^2 d, backward twice that. */
  gflops: number;
}

export function benchAttention(device: Device, timing: TimeOptions = {}): AttentionResult[] {
  const { B, T, nHeads, headDim } = ATT;
  const C = nHeads * headDim;
  const rng = new Rng(2);
  const qkv = Tensor.from(fillUniform(new Float32Array(B * T * 3 * C), -1, 1, rng), [B, T, 3 * C], { device });
  const dout = Tensor.from(fillUniform(new Float32Array(B * T * C), -1, 1, rng), [B, T, C], { device });
  const out = Tensor.zeros([B, T, C], { device });
  const lse = Tensor.zeros([B, nHeads, T], { device });
  const dqkv = Tensor.zeros([B, T, 3 * C], { device });
  const results: AttentionResult[] = [];
  try {
    for (const p of [0, 0.1]) {
      const r = { seed: 123, stream: 1 };
      const fwd = () => ops.attentionForward(out, lse, qkv, nHeads, p, r);
      const bwd = () => ops.attentionBackward(dqkv, dout, qkv, out, lse, nHeads, p, r);
      const tf = timeIt(fwd, device, timing);
      fwd();
      const tb = timeIt(bwd, device, timing);
      const tt = timeIt(() => { fwd(); bwd(); }, device, timing);
      const flop = 3 * (2 * B * nHeads * T * T * headDim);
      results.push({
        dropout: p,
        forwardMs: tf.median * 1e3,
        backwardMs: tb.median * 1e3,
        totalMs: tt.median * 1e3,
        gflops: flop / tt.median / 1e9,
      });
    }
  } finally {
    for (const t of [qkv, dout, out, lse, dqkv]) t.dispose();
  }
  return results;
}
