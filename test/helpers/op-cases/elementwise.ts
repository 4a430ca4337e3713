// fill, scale, add, accumulate and copy: odd sizes, unaligned views, nothing written outside a view.
import * as ops from '../../../ts/tensor/ops.js';
import { type Tensor } from '../../../ts/tensor/tensor.js';
import * as R from '../reference.js';
import { type OpContext, type OpEntry } from './context.js';

// ---- elementwise -------------------------------------------------------------------------------
/** Sizes, and offsets into a larger buffer: offset 1 is not 16-byte aligned (the CUDA scalar path). */
const ELEMENTWISE_CASES: [n: number, offset: number][] = [[1, 0], [7, 0], [1031, 0], [1031, 1], [4099, 3]];

function elementwise(op: string, apply: (k: OpContext, x: Tensor, a: Tensor, b: Tensor) => void, ref: (x: number, a: number, b: number) => number): OpEntry {
  return {
    op,
    cases: ELEMENTWISE_CASES.map(([n, offset]) => ({
      name: `n=${n} offset=${offset}`,
      run(k) {
        const rng = new R.SeededRandom(n + offset);
        const x0 = k.round(rng.floats(n)), a = k.round(rng.floats(n)), b = k.round(rng.floats(n));
        const x = k.placed(x0, offset);
        apply(k, x.view, k.tensor(a, [n]), k.tensor(b, [n]));
        // one correctly rounded float32 operation, then (bfloat16) one rounding to nearest even: the same bits on every backend
        const expected = k.stored(Float32Array.from({ length: n }, (_, i) => ref(x0[i]!, a[i]!, b[i]!)));
        k.exact(op, x.read(op), expected);
      },
    })),
  };
}

export const ELEMENTWISE: OpEntry[] = [
  elementwise('fill', (_, x) => ops.fill(x, -2.5), () => -2.5),
  elementwise('scale', (_, x) => ops.scale(x, 0.3), (x) => x * Math.fround(0.3)),
  elementwise('add', (_, x, a, b) => ops.add(x, a, b), (_, a, b) => a + b),
  elementwise('accumulate', (_, x, a) => ops.accumulate(x, a), (x, a) => x + a),
];

/** A fill of more than 4 MB (the CPU streams it past the caches), from an unaligned start. */
const largeFill: OpEntry = {
  op: 'fill',
  cases: [{
    name: 'n=2^21+5 offset=3 (streamed stores)',
    run(k) {
      const n = 2 ** 21 + 5;
      const x = k.placed(new Float32Array(n).fill(1), 3);
      ops.fill(x.view, -2.5);
      k.exact('fill', x.read('fill'), new Float32Array(n).fill(-2.5));
    },
  }],
};

/** In place (out aliases an input) and across shapes of the same element count. */
const aliasing: OpEntry = {
  op: 'add',
  cases: [{
    name: 'out aliases a; accumulate [77] += [7, 11]',
    run(k) {
      const rng = new R.SeededRandom(2);
      const a = k.round(rng.floats(77)), b = k.round(rng.floats(77));
      const sum = k.stored(Float32Array.from(a, (v, i) => v + b[i]!));
      const ta = k.tensor(a, [7, 11]), tb = k.tensor(b, [7, 11]);
      ops.add(ta, ta, tb);
      k.exact('add in place', ta, sum);
      const dst = k.tensor(a, [77]);
      ops.accumulate(dst, tb);
      k.exact('accumulate across shapes', dst, sum);
    },
  }],
};

// ---- copy ----------------------------------------------------------------------------------------
const COPY_CASES: [n: number, dstOffset: number, srcOffset: number][] = [[1, 0, 0], [7, 1, 0], [1031, 3, 1], [100_003, 0, 2]];

const copy: OpEntry = {
  op: 'copy',
  cases: [
    ...COPY_CASES.map(([n, dstOffset, srcOffset]) => ({
      name: `float n=${n} between views at offsets ${dstOffset} and ${srcOffset}`,
      run(k: OpContext) {
        const x = k.round(new R.SeededRandom(n).floats(n));
        const dst = k.placed(new Float32Array(n), dstOffset), src = k.placed(x, srcOffset);
        ops.copy(dst.view, src.view);
        k.exact('copy', dst.read('copy dst'), x);
        k.exact('copy leaves its source', src.read('copy src'), x);
      },
    })),
    {
      name: 'a [30] into a [3, 10] view; int32 extremes',
      run(k) {
        const x = k.round(new R.SeededRandom(4).floats(30));
        const dst = k.placed(new Float32Array(30), 5, [3, 10]);
        ops.copy(dst.view, k.tensor(x, [30]));
        k.exact('copy across shapes', dst.read('copy'), x);
        const ids = Int32Array.from([1, -2, 3, 2147483647, -2147483648]);
        const out = k.placed(new Int32Array(5), 1);
        ops.copy(out.view, k.tensor(ids, [5]));
        k.exact('int32 copy', out.read('int32 copy'), ids);
      },
    },
    ...[1, 1031, 100_003].map((n) => ({
      name: `host -> device -> host n=${n}, float and int32`,
      run(k: OpContext) {
        const rng = new R.SeededRandom(n + 1);
        const x = k.round(rng.floats(n)), ids = rng.ints(n, -5, 1 << 30);
        const dev = k.zeros([n]), back = k.host(new Float32Array(n), [n]);
        ops.copy(dev, k.host(x, [n]));
        ops.copy(back, dev);
        k.exact('float round trip', back, x);
        const devIds = k.zeros([n], 'int32'), backIds = k.host(new Int32Array(n), [n]);
        ops.copy(devIds, k.host(ids, [n]));
        ops.copy(backIds, devIds);
        k.exact('int32 round trip', backIds, ids);
      },
    })),
  ],
};

export const COPIES: OpEntry[] = [aliasing, copy, largeFill];
