// GEMM throughput at GPT-2 training shapes: M = 512 tokens (batch 2 x context
// 256), for every linear layer of the model and the LM head, forward and both
// backward products, as the model issues them:
//   fwd   out[M,N]  = inp[M,K] . W[N,K]^T          gemm(out, inp, W, false, true)
//   dinp  dinp[M,K] = dout[M,N] . W[N,K]           gemm(dinp, dout, W, false, false)
//   dW    dW[N,K]  += dout[M,N]^T . inp[M,K]       gemm(dW, dout, inp, true, false, 1, 1)
import * as ops from '../tensor/ops.js';
import { Rng, fillUniform } from '../tensor/rng.js';
import { Tensor, type Device } from '../tensor/tensor.js';
import { timeIt, type TimeOptions } from './util.js';

export const GEMM_M = 512;
export const GEMM_SHAPES: { layer: string; K: number; N: number }[] = [
  { layer: 'qkv', K: 768, N: 2304 },
  { layer: 'attn proj', K: 768, N: 768 },
  { layer: 'fc', K: 768, N: 3072 },
  { layer: 'fc proj', K: 3072, N: 768 },
  { layer: 'lm head', K: 768, N: 50257 },
];

export interface GemmResult {
  name: string; // e.g. "fwd 768x2304"
  layer: string;
  op: 'fwd' | 'dinp' | 'dW';
  M: number;
  N: number;
  K: number;
  ms: number;
  gflops: number;
  reps: number;
}

function random(shape: number[], device: Device, rng: Rng): Tensor {
  const data = fillUniform(new Float32Array(shape.reduce((a, b) => a * b, 1)), -1, 1, rng);
  return Tensor.from(data, shape, { device });
}

export function benchGemm(device: Device, timing: TimeOptions = {}): GemmResult[] {
  const rng = new Rng(1);
  const M = GEMM_M;
  const results: GemmResult[] = [];
  for (const { layer, K, N } of GEMM_SHAPES) {
    const inp = random([M, K], device, rng);
    const W = random([N, K], device, rng);
    const dout = random([M, N], device, rng);
    const out = Tensor.zeros([M, N], { device });
    const dinp = Tensor.zeros([M, K], { device });
    const dW = Tensor.zeros([N, K], { device });
    try {
      const flop = 2 * M * N * K;
      const cases: [GemmResult['op'], () => void][] = [
        ['fwd', () => ops.gemm(out, inp, W, false, true)],
        ['dinp', () => ops.gemm(dinp, dout, W, false, false)],
        ['dW', () => ops.gemm(dW, dout, inp, true, false, 1, 1)],
      ];
      for (const [op, fn] of cases) {
        const t = timeIt(fn, device, timing);
        results.push({
          name: `${op} ${K}x${N}`,
          layer,
          op,
          M,
          N,
          K,
          ms: t.median * 1e3,
          gflops: flop / t.median / 1e9,
          reps: t.reps,
        });
      }
    } finally {
      for (const t of [inp, W, dout, out, dinp, dW]) t.dispose();
    }
  }
  return results;
}
