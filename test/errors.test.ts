// Argument validation of the native ops: every misuse throws a JS Error that
// names the op and what is wrong (shapes, dtypes, ids), nothing is written by
// a rejected call, and the process carries on working afterwards.
import { afterEach, describe, expect, it } from 'vitest';

import { native } from '../ts/tensor/native.js';
import * as ops from '../ts/tensor/ops.js';
import { Tensor } from '../ts/tensor/tensor.js';

const live: Tensor[] = [];
afterEach(() => {
  for (const t of live.splice(0)) if (!t.disposed) t.dispose();
});
function z(shape: number[], dtype: 'float32' | 'int32' | 'bfloat16' = 'float32'): Tensor {
  const t = Tensor.zeros(shape, { dtype });
  live.push(t);
  return t;
}
function ids(values: number[], shape: number[]): Tensor {
  const t = Tensor.from(Int32Array.from(values), shape);
  live.push(t);
  return t;
}
function f(values: number[], shape: number[]): Tensor {
  const t = Tensor.from(Float32Array.from(values), shape);
  live.push(t);
  return t;
}
/** The raw op table, to pass arguments the typed wrappers would not let through. */
const raw = () => native().ops as unknown as Record<string, (...args: unknown[]) => unknown>;

/** Asserts fn throws an Error whose message matches every pattern. */
function expectThrows(fn: () => unknown, ...patterns: RegExp[]): Error {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected an exception').toBeInstanceOf(Error);
  const msg = (caught as Error).message;
  for (const p of patterns) expect(msg).toMatch(p);
  return caught as Error;
}

/** A small op whose result we know, to show the addon still works after an error. */
function stillWorks() {
  const out = z([2, 2]);
  ops.matmulForward(out, f([1, 2, 3, 4], [2, 2]), f([1, 0, 0, 1], [2, 2]), f([10, 20], [2]));
  expect([...out.toFloat32Array()]).toEqual([11, 22, 13, 24]);
}

describe('the addon', () => {
  it('loads and reports its backends', () => {
    const b = native().backends();
    expect(Number.isInteger(b.cpu.threads)).toBe(true);
    expect(b.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(typeof b.cpu.gemm).toBe('string');
    expect(b.cpu.gemm.length).toBeGreaterThan(0);
    expect(typeof b.cuda.built).toBe('boolean');
    expect(typeof b.cuda.available).toBe('boolean');
    expect(typeof b.cuda.buildInfo).toBe('string');
    if (!b.cuda.available) {
      expect(typeof b.cuda.reason).toBe('string');
      expect(b.cuda.reason!.length).toBeGreaterThan(5);
    }
    const ops = Object.keys(native().ops).sort();
    expect(ops).toEqual(
      [
        'fill', 'scale', 'add', 'accumulate', 'copy', 'fillNormal', 'fillUniform', 'embeddingForward', 'embeddingBackward', 'layernormForward',
        'layernormBackward', 'residualLayernormForward', 'gemm', 'matmulForward', 'matmulBackward', 'matmulGeluForward', 'geluMatmulBackward', 'geluForward', 'geluBackward', 'dropoutForward',
        'dropoutBackward', 'attentionForward', 'attentionBackward', 'attentionDecode', 'crossentropyForward',
        'crossentropyForwardBackward', 'adamw', 'sumSquares', 'clipByNorm', 'convert',
      ].sort(),
    );
  });

  it('refuses CUDA tensors with the reason when CUDA is unavailable', () => {
    const b = native().backends();
    if (b.cuda.available) return;
    expectThrows(() => Tensor.zeros([2], { device: 'cuda' }), /CUDA/, new RegExp(escape(b.cuda.reason!)));
    stillWorks();
  });
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('wrong shapes name the op and the shapes', () => {
  it('matmulForward', () => {
    expectThrows(() => ops.matmulForward(z([2, 3, 4]), z([2, 3, 5]), z([4, 6])), /^matmulForward:/, /in_features 6/, /\[2, 3, 5\]/, /\[4, 6\]/);
    expectThrows(() => ops.matmulForward(z([2, 3, 5]), z([2, 3, 6]), z([4, 6])), /^matmulForward:/, /out must have shape \[2, 3, 4\] but has \[2, 3, 5\]/);
    expectThrows(() => ops.matmulForward(z([2, 4]), z([2, 6]), z([4, 6]), z([5])), /^matmulForward:/, /bias must have shape \[4\] but has \[5\]/);
    expectThrows(() => ops.matmulForward(z([2, 4]), z([2, 6]), z([4, 6, 1])), /^matmulForward:/, /weight must have 2 dimensions/);
    stillWorks();
  });

  it('matmulBackward', () => {
    expectThrows(() => ops.matmulBackward(z([2, 6]), z([6, 4]), null, z([2, 4]), z([2, 6]), z([4, 6])), /^matmulBackward:/, /dweight must have shape \[4, 6\] but has \[6, 4\]/);
    expectThrows(() => ops.matmulBackward(null, null, z([4]), z([3, 4]), z([2, 6]), z([4, 6])), /^matmulBackward:/, /dout must have shape \[2, 4\] but has \[3, 4\]/);
    stillWorks();
  });

  it('matmulGeluForward and geluMatmulBackward (shapes, dtypes, overlapping outputs)', () => {
    const x = z([2, 6]), w = z([4, 6]), b = z([4]), out = z([2, 4]), pre = z([2, 4]);
    expectThrows(() => ops.matmulGeluForward(out, z([2, 5]), x, w, b), /^matmulGeluForward:/, /pre must have shape \[2, 4\] but has \[2, 5\]/);
    expectThrows(() => ops.matmulGeluForward(out, pre, z([2, 5]), w, b), /^matmulGeluForward:/, /in_features 6/);
    expectThrows(() => ops.matmulGeluForward(out, pre, x, w, z([3])), /^matmulGeluForward:/, /bias must have shape \[4\] but has \[3\]/);
    expectThrows(() => ops.matmulGeluForward(out, out, x, w, b), /^matmulGeluForward:/, /out overlaps pre/);
    expectThrows(() => ops.matmulGeluForward(out, pre, x, w, z([4], 'bfloat16')), /^matmulGeluForward:/, /bias must be float32 but is bfloat16/);
    const buf = z([16]);
    expectThrows(() => ops.matmulGeluForward(buf.view(0, [2, 4]), pre, buf.view(4, [2, 6]), w, b), /^matmulGeluForward:/, /out overlaps inp/);
    ops.matmulGeluForward(out, pre, x, w, b);
    // backward: act and pre [2, 6] (K = 6), dout [2, 4]
    const act = z([2, 6]), p6 = z([2, 6]), dpre = z([2, 6]), dout = z([2, 4]);
    expectThrows(() => ops.geluMatmulBackward(dpre, null, null, dout, z([2, 5]), p6, w), /^geluMatmulBackward:/, /act's last dimension must equal weight's second dimension \(in_features 6\)/);
    expectThrows(() => ops.geluMatmulBackward(dpre, null, null, dout, act, z([2, 5]), w), /^geluMatmulBackward:/, /pre must have shape \[2, 6\] but has \[2, 5\]/);
    expectThrows(() => ops.geluMatmulBackward(z([6, 2]), null, null, dout, act, p6, w), /^geluMatmulBackward:/, /dpre must have shape \[2, 6\] but has \[6, 2\]/);
    expectThrows(() => ops.geluMatmulBackward(dpre, z([6, 4]), null, dout, act, p6, w), /^geluMatmulBackward:/, /dweight must have shape \[4, 6\] but has \[6, 4\]/);
    expectThrows(() => ops.geluMatmulBackward(dpre, null, null, dout, act, dpre, w), /^geluMatmulBackward:/, /dpre overlaps pre/);
    expectThrows(() => ops.geluMatmulBackward(act, null, null, dout, act, p6, w), /^geluMatmulBackward:/, /dpre overlaps act/);
    ops.geluMatmulBackward(dpre, z([4, 6]), z([4]), dout, act, p6, w, { accumulate: false });
    stillWorks();
  });

  it('gemm (each transpose combination checks its own layout)', () => {
    expectThrows(() => ops.gemm(z([2, 3]), z([2, 4]), z([5, 3])), /^gemm:/, /B must have shape \[4, 3\] but has \[5, 3\]/);
    expectThrows(() => ops.gemm(z([2, 3]), z([2, 4]), z([4, 3]), true, false), /^gemm:/, /A must have shape \[2, 2\]|A must have shape/);
    expectThrows(() => ops.gemm(z([2, 3]), z([2, 4]), z([4, 3]), false, true), /^gemm:/, /B must have shape \[3, 4\] but has \[4, 3\]/);
    expectThrows(() => ops.gemm(z([6]), z([2, 4]), z([4, 3])), /^gemm:/, /C must have 2 dimensions but has shape \[6\]/);
    // the right layouts pass
    ops.gemm(z([2, 3]), z([4, 2]), z([3, 4]), true, true);
    stillWorks();
  });

  it('layernorm', () => {
    expectThrows(() => ops.layernormForward(z([2, 3]), z([2]), z([2]), z([2, 3]), z([4]), z([3])), /^layernormForward:/, /weight must have shape \[3\] but has \[4\]/);
    expectThrows(() => ops.layernormForward(z([2, 3]), z([3]), z([2]), z([2, 3]), z([3]), z([3])), /^layernormForward:/, /mean must have 2 elements but has shape \[3\]/);
    expectThrows(
      () => ops.layernormBackward(z([2, 4]), null, null, z([2, 3]), z([2, 3]), z([3]), z([2]), z([2])),
      /^layernormBackward:/, /dinp must have shape \[2, 3\] but has \[2, 4\]/,
    );
    stillWorks();
  });

  it('residualLayernormForward (shapes, dtypes, overlapping outputs, disposed inputs)', () => {
    const fused = (res: Tensor, out: Tensor, mean: Tensor, rstd: Tensor, a: Tensor, b: Tensor, w: Tensor, bias: Tensor) =>
      ops.residualLayernormForward(res, out, mean, rstd, a, b, w, bias);
    const ok = () => [z([2, 3]), z([2, 3]), z([2]), z([2]), z([2, 3]), z([2, 3]), z([3]), z([3])] as const;
    const [res, out, mean, rstd, a, b, w, bias] = ok();
    expectThrows(() => fused(res, out, mean, rstd, a, z([2, 4]), w, bias), /^residualLayernormForward:/, /b must have shape \[2, 3\] but has \[2, 4\]/);
    expectThrows(() => fused(z([3, 2]), out, mean, rstd, a, b, w, bias), /^residualLayernormForward:/, /residual_out must have shape \[2, 3\] but has \[3, 2\]/);
    expectThrows(() => fused(res, z([6]), mean, rstd, a, b, w, bias), /^residualLayernormForward:/, /ln_out must have shape \[2, 3\] but has \[6\]/);
    expectThrows(() => fused(res, out, mean, rstd, a, b, z([4]), bias), /^residualLayernormForward:/, /weight must have shape \[3\] but has \[4\]/);
    expectThrows(() => fused(res, out, mean, rstd, a, b, w, z([2])), /^residualLayernormForward:/, /bias must have shape \[3\] but has \[2\]/);
    expectThrows(() => fused(res, out, z([3]), rstd, a, b, w, bias), /^residualLayernormForward:/, /mean must have 2 elements but has shape \[3\]/);
    expectThrows(() => fused(res, out, mean, rstd, a, z([2, 3], 'bfloat16'), w, bias), /^residualLayernormForward:/, /b must be float32 but is bfloat16/);
    expectThrows(() => fused(res, out, z([2], 'bfloat16'), rstd, a, b, w, bias), /^residualLayernormForward:/, /mean must be float32 but is bfloat16/);
    expectThrows(() => fused(res, out, mean, rstd, z([2, 3], 'int32'), b, w, bias), /^residualLayernormForward:/, /a must be float32 or bfloat16 but is int32/);
    // ln_out may not share memory with anything it is computed from; residual_out may only be a or b exactly
    expectThrows(() => fused(res, res, mean, rstd, a, b, w, bias), /^residualLayernormForward:/, /ln_out overlaps residual_out/);
    expectThrows(() => fused(res, b, mean, rstd, a, b, w, bias), /^residualLayernormForward:/, /ln_out overlaps b/);
    const buf = z([13]);
    expectThrows(() => fused(buf.view(1, [2, 3]), out, mean, rstd, buf.view(0, [2, 3]), b, w, bias), /^residualLayernormForward:/, /residual_out partly overlaps a/);
    expectThrows(() => fused(res, buf.view(4, [2, 3]), mean, rstd, a, buf.view(7, [2, 3]), w, bias), /^residualLayernormForward:/, /ln_out overlaps b/);
    const gone = Tensor.zeros([2, 3]);
    gone.dispose();
    expectThrows(() => fused(res, out, mean, rstd, a, gone, w, bias), /^residualLayernormForward:/, /b was disposed/);
    // nothing was written by the refused calls; in place on a is allowed
    expect([...res.toFloat32Array(), ...out.toFloat32Array()]).toEqual(new Array(12).fill(0));
    const x = f([1, 2, 3, 4, 5, 6], [2, 3]);
    fused(x, out, mean, rstd, x, f([1, 1, 1, 0, 0, 0], [2, 3]), f([1, 1, 1], [3]), f([0, 0, 0], [3]));
    expect([...x.toFloat32Array()]).toEqual([2, 3, 4, 4, 5, 6]);
    expect([...mean.toFloat32Array()]).toEqual([3, 5]);
    stillWorks();
  });

  it('embedding', () => {
    expectThrows(() => ops.embeddingForward(z([1, 2, 4]), ids([0, 1], [1, 2]), z([5, 3]), z([4, 3])), /^embeddingForward:/, /out must have shape \[1, 2, 3\] but has \[1, 2, 4\]/);
    expectThrows(() => ops.embeddingForward(z([1, 2, 3]), ids([0, 1], [1, 2]), z([5, 3]), z([4, 2])), /^embeddingForward:/, /wpe must have shape \[\*, 3\] but has \[4, 2\]/);
    expectThrows(() => ops.embeddingForward(z([2, 3]), ids([0, 1], [2]), z([5, 3]), z([4, 3])), /^embeddingForward:/, /ids must have 2 dimensions/);
    expectThrows(() => ops.embeddingBackward(z([5, 4]), null, z([1, 2, 3]), ids([0, 1], [1, 2])), /^embeddingBackward:/, /dwte must have shape \[\*, 3\] but has \[5, 4\]/);
    stillWorks();
  });

  it('gelu, dropout, elementwise', () => {
    expectThrows(() => ops.geluForward(z([3]), z([4])), /^geluForward:/, /out must have shape \[4\] but has \[3\]/);
    expectThrows(() => ops.geluBackward(z([4]), z([4]), z([2, 2])), /^geluBackward:/, /dout must have shape \[4\] but has \[2, 2\]/);
    expectThrows(() => ops.dropoutForward(z([4]), z([5]), 0.1, { seed: 1, stream: 2 }), /^dropoutForward:/, /\[5\]/, /\[4\]/);
    expectThrows(() => ops.add(z([2, 3]), z([3, 2]), z([2, 3])), /^add:/, /a must have shape \[2, 3\] but has \[3, 2\]/);
    expectThrows(() => ops.accumulate(z([2]), z([3])), /^accumulate:/, /src must have 2 elements but has shape \[3\]/);
    expectThrows(() => ops.copy(z([2]), z([3])), /^copy:/, /src must have 2 elements/);
    expectThrows(() => ops.sumSquares(z([2]), z([3])), /^sumSquares:/, /out must have 1 elements but has shape \[2\]/);
    expectThrows(() => ops.clipByNorm(z([3]), z([2]), 1), /^clipByNorm:/, /normSq must have 1 elements/);
    expectThrows(() => ops.adamw(z([3]), z([3]), z([4]), z([3]), { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 }), /^adamw:/, /m must have 3 elements but has shape \[4\]/);
    stillWorks();
  });

  it('attention', () => {
    expectThrows(() => ops.attentionForward(z([1, 2, 6]), z([1, 2, 2]), z([1, 2, 17]), 2), /^attentionForward:/, /3 \* C/);
    expectThrows(() => ops.attentionForward(z([1, 2, 6]), z([1, 2, 3]), z([1, 2, 18]), 2), /^attentionForward:/, /lse must have shape \[1, 2, 2\] but has \[1, 2, 3\]/);
    expectThrows(() => ops.attentionForward(z([1, 3, 6]), z([1, 2, 2]), z([1, 2, 18]), 2), /^attentionForward:/, /out must have shape \[1, 2, 6\] but has \[1, 3, 6\]/);
    expectThrows(
      () => ops.attentionBackward(z([1, 2, 6]), z([1, 2, 6]), z([1, 2, 18]), z([1, 2, 6]), z([1, 2, 2]), 2),
      /^attentionBackward:/, /dqkv must have shape \[1, 2, 18\] but has \[1, 2, 6\]/,
    );
    expectThrows(
      () => ops.attentionDecode(z([1, 2, 6]), z([1, 2, 3, 3]), z([1, 2, 3, 3]), z([1, 2, 18]), 2),
      /^attentionDecode:/, /positions 2\.\.3 do not fit in a cache of 3 positions/,
    );
    expectThrows(
      () => ops.attentionDecode(z([1, 1, 6]), z([1, 2, 8, 3]), z([1, 2, 8, 4]), z([1, 1, 18]), 0),
      /^attentionDecode:/, /vcache must have shape \[1, 2, 8, 3\] but has \[1, 2, 8, 4\]/,
    );
    stillWorks();
  });

  it('cross-entropy', () => {
    expectThrows(() => ops.crossentropyForward(z([3]), z([2, 5]), ids([0, 1], [2])), /^crossentropyForward:/, /losses must have 2 elements but has shape \[3\]/);
    expectThrows(() => ops.crossentropyForward(z([2]), z([2, 5]), ids([0, 1, 2], [3])), /^crossentropyForward:/, /targets must have 2 elements/);
    expectThrows(
      () => ops.crossentropyForwardBackward(z([2]), z([2, 4]), z([2, 5]), ids([0, 1], [2]), 1),
      /^crossentropyForwardBackward:/, /dlogits must have shape \[2, 5\] but has \[2, 4\]/,
    );
    stillWorks();
  });
});

describe('nHeads not dividing C', () => {
  it('throws naming C and nHeads', () => {
    expectThrows(() => ops.attentionForward(z([1, 2, 6]), z([1, 4, 2]), z([1, 2, 18]), 4), /^attentionForward:/, /C = 6/, /nHeads = 4/);
    expectThrows(
      () => ops.attentionBackward(z([1, 2, 18]), z([1, 2, 6]), z([1, 2, 18]), z([1, 2, 6]), z([1, 4, 2]), 4),
      /^attentionBackward:/, /C = 6 must be divisible by nHeads = 4/,
    );
    expectThrows(() => ops.attentionForward(z([1, 2, 6]), z([1, 2, 2]), z([1, 2, 18]), 0), /^attentionForward:/, /nHeads/);
    expectThrows(() => ops.attentionForward(z([1, 2, 6]), z([1, 2, 2]), z([1, 2, 18]), 1.5), /^attentionForward:/, /nHeads must be an integer/);
    expectThrows(() => ops.attentionForward(z([1, 1, 514]), z([1, 2, 1]), z([1, 1, 1542]), 2), /^attentionForward:/, /head size C \/ nHeads must be at most 256/);
    stillWorks();
  });
});

describe('wrong dtypes', () => {
  it('float32 ids and targets, int32 data', () => {
    expectThrows(() => ops.embeddingForward(z([1, 2, 3]), z([1, 2]), z([5, 3]), z([4, 3])), /^embeddingForward:/, /ids must be int32 but is float32/);
    expectThrows(() => ops.embeddingBackward(z([5, 3]), null, z([1, 2, 3]), z([1, 2])), /^embeddingBackward:/, /ids must be int32 but is float32/);
    expectThrows(() => ops.crossentropyForward(z([2]), z([2, 5]), z([2])), /^crossentropyForward:/, /targets must be int32 but is float32/);
    expectThrows(() => ops.fill(z([2], 'int32'), 1), /^fill:/, /x must be float32 or bfloat16 but is int32/);
    expectThrows(() => ops.matmulForward(z([2, 4]), z([2, 6], 'bfloat16'), z([4, 6])), /^matmulForward:/, /out must be bfloat16 but is float32/, /inp bfloat16\[2, 6\]/);
    expectThrows(() => ops.copy(z([2]), z([2], 'int32')), /^copy:/, /same dtype/);
    stillWorks();
  });
});

describe('disposed tensors', () => {
  it('a disposed tensor and a view of a disposed root are refused', () => {
    const d = Tensor.zeros([3]);
    d.dispose();
    expect(d.disposed).toBe(true);
    expectThrows(() => ops.fill(d, 1), /^fill:/, /x was disposed/);
    expectThrows(() => ops.geluForward(z([3]), d), /^geluForward:/, /inp was disposed/);
    expectThrows(() => d.toFloat32Array(), /disposed/);
    expectThrows(() => d.view(0, [1]), /disposed/);

    const root = Tensor.zeros([10]);
    const v = root.view(2, [3]);
    const vv = v.view(1, [2]);
    ops.fill(v, 2); // fine while the root lives
    root.dispose();
    expect(v.disposed).toBe(true);
    expect(vv.disposed).toBe(true);
    expectThrows(() => ops.fill(v, 1), /^fill:/, /was disposed/);
    expectThrows(() => ops.scale(vv, 1), /^scale:/, /was disposed/);
    expectThrows(() => ops.add(z([3]), v, z([3])), /^add:/, /a was disposed/);
    expectThrows(() => v.toFloat32Array(), /disposed/);
    expectThrows(() => v.write(new Float32Array(3)), /disposed/);

    // disposing a view leaves the root usable
    const root2 = z([4]);
    const v2 = root2.view(0, [2]);
    v2.dispose();
    expect(root2.disposed).toBe(false);
    ops.fill(root2, 3);
    expect([...root2.toFloat32Array()]).toEqual([3, 3, 3, 3]);
    // disposing twice is harmless
    root.dispose();
    stillWorks();
  });
});

describe('non-Tensor arguments', () => {
  it('are refused with the argument position and name', () => {
    for (const junk of [{}, null, undefined, 5, 'x', new Float32Array(3), [1, 2, 3]]) {
      expectThrows(() => raw().fill!(junk, 1), /^fill:/, /argument 0 \(x\) must be a Tensor/);
    }
    // a TS Tensor is not a native handle
    expectThrows(() => raw().add!(z([2]), z([2]).handle, z([2]).handle), /^add:/, /argument 0 \(out\) must be a Tensor/);
    expectThrows(() => raw().matmulBackward!(null, null, null, undefined, z([2, 2]).handle, z([2, 2]).handle), /^matmulBackward:/, /argument 3 \(dout\) must be a Tensor/);
    expectThrows(() => raw().gemm!(z([2, 2]).handle, z([2, 2]).handle, z([2, 2]).handle, 1, 0, 1, 0), /^gemm:/, /transA\) must be a boolean/);
    expectThrows(() => raw().scale!(z([2]).handle, '2'), /^scale:/, /factor\) must be a number/);
    expectThrows(() => raw().fill!(z([2]).handle), /^fill:/, /value\) must be a number/);
    stillWorks();
  });
});

describe('out-of-range token ids and targets (CPU checks on the host, naming the id)', () => {
  it('embeddingForward / embeddingBackward', () => {
    const out = f([7, 7, 7, 7, 7, 7], [1, 2, 3]);
    expectThrows(() => ops.embeddingForward(out, ids([0, 9], [1, 2]), z([5, 3]), z([4, 3])), /^embeddingForward:/, /token id 9/, /\[0, 5\)/);
    expectThrows(() => ops.embeddingForward(out, ids([-1, 0], [1, 2]), z([5, 3]), z([4, 3])), /token id -1/);
    expect([...out.toFloat32Array()]).toEqual([7, 7, 7, 7, 7, 7]); // nothing written
    const dwte = z([5, 3]);
    expectThrows(() => ops.embeddingBackward(dwte, null, f([1, 1, 1, 1, 1, 1], [1, 2, 3]), ids([0, 5], [1, 2])), /^embeddingBackward:/, /token id 5/);
    expectThrows(() => ops.embeddingBackward(dwte, null, f([1, 1, 1, 1, 1, 1], [1, 2, 3]), ids([-2147483648, 0], [1, 2])), /token id -2147483648/);
    expect(dwte.toFloat32Array().every((v) => v === 0)).toBe(true);
    stillWorks();
  });

  it('crossentropyForward / crossentropyForwardBackward', () => {
    const logits = f([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [2, 5]);
    const losses = f([7, 7], [2]);
    expectThrows(() => ops.crossentropyForward(losses, logits, ids([0, 5], [2])), /^crossentropyForward:/, /target 5 at row 1/, /\[0, 5\)/);
    expectThrows(() => ops.crossentropyForward(losses, logits, ids([-1, 0], [2])), /target -1 at row 0/);
    // -100 is only special when it is the ignore index
    expectThrows(() => ops.crossentropyForward(losses, logits, ids([-100, 0], [2]), -1), /target -100 at row 0/);
    expectThrows(() => ops.crossentropyForwardBackward(losses, logits, logits, ids([3, 99], [2]), 0.5), /^crossentropyForwardBackward:/, /target 99/);
    expect([...losses.toFloat32Array()]).toEqual([7, 7]);
    expect([...logits.toFloat32Array()]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]); // in-place dlogits untouched
    stillWorks();
  });
});

describe('positions past the rows of wpe', () => {
  it('embeddingForward and embeddingBackward', () => {
    expectThrows(
      () => ops.embeddingForward(z([1, 3, 3]), ids([0, 1, 2], [1, 3]), z([5, 3]), z([4, 3]), 2),
      /^embeddingForward:/, /positions 2\.\.4 exceed the 4 rows of wpe/,
    );
    expectThrows(() => ops.embeddingForward(z([1, 5, 3]), ids([0, 1, 2, 3, 4], [1, 5]), z([5, 3]), z([4, 3])), /positions 0\.\.4 exceed the 4 rows/);
    expectThrows(() => ops.embeddingBackward(null, z([4, 3]), z([1, 3, 3]), ids([0, 1, 2], [1, 3]), 2), /^embeddingBackward:/, /positions exceed the rows of dwpe/);
    expectThrows(() => ops.embeddingForward(z([1, 3, 3]), ids([0, 1, 2], [1, 3]), z([5, 3]), z([4, 3]), -1), /^embeddingForward:/, /pos0/);
    // exactly fitting is fine
    ops.embeddingForward(z([1, 3, 3]), ids([0, 1, 2], [1, 3]), z([5, 3]), z([4, 3]), 1);
    stillWorks();
  });
});

describe('bad scalars', () => {
  it('NaN and infinite scalars are refused', () => {
    expectThrows(() => ops.scale(z([2]), NaN), /^scale:/, /factor must be finite/);
    expectThrows(() => ops.fill(z([2]), Infinity), /^fill:/, /value must be finite/);
    expectThrows(() => ops.dropoutForward(z([2]), z([2]), NaN, { seed: 1, stream: 2 }), /^dropoutForward:/, /p must be finite/);
    expectThrows(() => ops.crossentropyForwardBackward(z([1]), z([1, 3]), z([1, 3]), ids([0], [1]), NaN), /^crossentropyForwardBackward:/, /dloss must be finite/);
    expectThrows(() => ops.gemm(z([2, 2]), z([2, 2]), z([2, 2]), false, false, NaN, 0), /^gemm:/, /alpha must be finite/);
    expectThrows(() => ops.clipByNorm(z([2]), z([1]), NaN), /^clipByNorm:/, /maxNorm must be finite/);
    const adam = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 };
    expectThrows(() => ops.adamw(z([2]), z([2]), z([2]), z([2]), { ...adam, lr: NaN }), /^adamw:/, /lr must be finite/);
    expectThrows(() => ops.adamw(z([2]), z([2]), z([2]), z([2]), { ...adam, step: 0 }), /^adamw:/, /step must be an integer/);
    expectThrows(() => ops.adamw(z([2]), z([2]), z([2]), z([2]), { ...adam, beta2: 1 }), /^adamw:/, /beta2 must be in/);
    const low = (offset: number) => ({ params: z([2], 'bfloat16'), rounding: { seed: 1, stream: 2 }, offset });
    for (const offset of [-4, 0.5, 2 ** 53, NaN])
      expectThrows(() => ops.adamw(z([2]), z([2], 'bfloat16'), z([2]), z([2]), adam, low(offset)), /^adamw:/, /roundingOffset must be/);
    stillWorks();
  });

  it('out-of-range dropout probabilities and RNG addresses', () => {
    expectThrows(() => ops.dropoutForward(z([2]), z([2]), 1, { seed: 1, stream: 2 }), /^dropoutForward:/, /p must be in \[0, 0\.999999\] \(got 1\)/);
    expectThrows(() => ops.dropoutBackward(z([2]), z([2]), -0.1, { seed: 1, stream: 2 }), /^dropoutBackward:/, /p must be in/);
    expectThrows(() => ops.attentionForward(z([1, 2, 6]), z([1, 2, 2]), z([1, 2, 18]), 2, 1.5), /^attentionForward:/, /p must be in/);
    expectThrows(() => ops.dropoutForward(z([2]), z([2]), 0.1, { seed: -1, stream: 2 }), /seed must be a non-negative safe integer/);
    expectThrows(() => ops.dropoutForward(z([2]), z([2]), 0.1, { seed: 1, stream: 0.5 }), /stream must be a non-negative safe integer/);
    expectThrows(() => ops.dropoutForward(z([2]), z([2]), 0.1, { seed: 2 ** 53, stream: 0 }), /seed must be a non-negative safe integer/);
    stillWorks();
  });
});

describe('views out of bounds', () => {
  it('are refused', () => {
    const t = z([10]);
    expectThrows(() => t.view(8, [3]), /view: offset 8 with shape \[3\] does not fit in float32\[10\]/);
    expectThrows(() => t.view(-1, [3]), /view/);
    expectThrows(() => t.view(0.5, [3]), /view/);
    expectThrows(() => t.view(0, [11]), /view/);
    expectThrows(() => t.view(0, [2.5]), /view: shape entries must be non-negative integers/);
    expectThrows(() => t.view(0, [-1]), /view/);
    expectThrows(() => t.view(2, [3]).view(1, [3]), /does not fit/); // a view's bounds are its own
    expect(t.view(7, [3]).shape).toEqual([3]);
    expect(t.view(10, [0]).shape).toEqual([0]);
    expectThrows(() => t.write(new Float32Array(11)), /write: array has 11 elements/);
    expectThrows(() => t.write(new Int32Array(10) as unknown as Float32Array), /write/);
    stillWorks();
  });
});

describe('the process survives many errors', () => {
  it('interleaves failing and succeeding ops', () => {
    for (let i = 0; i < 200; i++) {
      expect(() => ops.matmulForward(z([2, 3]), z([2, 5]), z([3, 4]))).toThrow(/matmulForward/);
      stillWorks();
    }
  });
});
