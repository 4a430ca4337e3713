// Runs the op table (helpers/op-cases/) on every device present: the CPU
// always, CUDA when available (skipped with the printed reason otherwise),
// and in every storage dtype: float32, and bfloat16 for the typed ops (on
// CUDA a case whose op the backend refuses in bfloat16 is skipped with that
// refusal as the reason). Every device and dtype is compared with the same
// float64 references, never with another device. Also: every native op has a
// case, every typed case ran in bfloat16 on the CPU, and statistics of the
// seeded random fills on the CPU.
import { describe, expect, it } from 'vitest';

import { native } from '../ts/tensor/native.js';
import * as ops from '../ts/tensor/ops.js';
import { Tensor, type Device } from '../ts/tensor/tensor.js';
import { OP_TABLE, OpContext, coverageGaps, type OpCase, type OpEntry, type Precision, type StorageDType } from './helpers/op-cases/index.js';

const cuda = native().backends().cuda;
if (!cuda.available) console.warn(`op table on CUDA skipped: ${cuda.reason ?? 'CUDA is not available'}`);

/**
 * TF32 tensor cores: on from compute capability 8.0 unless GPTCUDA_TF32=0 (native/cuda/backend_cuda.cu).
 * The emulator can run them on unrounded float32 inputs (GPTCUDA_EMU_TF32_EXACT, native/cuda/emu/simt.h).
 */
function precisionOf(device: Device): Precision {
  if (device === 'cpu' || process.env.GPTCUDA_TF32 === '0' || process.env.GPTCUDA_EMU_TF32_EXACT === '1') return 'fp32';
  return Number(native().deviceInfo('cuda').computeCapability.split('.')[0]) >= 8 ? 'tf32' : 'fp32';
}

const caseKey = (entry: OpEntry, c: OpCase) => `${entry.op} ${c.name}`;
/** The cases that passed in bfloat16 on the CPU (the coverage check below). */
const passedBf16OnCpu = new Set<string>();
/** A backend's one-line refusal of an op it has no bfloat16 version of yet (native/include/backend.h). */
const NO_BF16_YET = /has no bfloat16 version on the \w+ backend yet/;

for (const device of ['cpu', 'cuda'] as const)
  for (const dtype of ['float32', 'bfloat16'] as StorageDType[]) {
    describe.skipIf(device === 'cuda' && !cuda.available)(`op table on ${device}${dtype === 'bfloat16' ? ' in bfloat16' : ''}`, () => {
      for (const entry of OP_TABLE) {
        if (dtype === 'bfloat16' && entry.untyped) continue; // no storage type: its float32 run is all there is
        for (const c of entry.cases)
          it(`${entry.op} ${c.name}`, (ctx) => {
            const k = new OpContext(device, precisionOf(device), caseKey(entry, c), dtype);
            try {
              c.run(k);
              if (device === 'cuda') native().synchronize('cuda');
            } catch (e) {
              const msg = (e as Error).message ?? '';
              // the CUDA backend's bfloat16 ops come later: until then a refusal is a skip, not a pass
              if (device === 'cuda' && dtype === 'bfloat16' && NO_BF16_YET.test(msg)) ctx.skip(msg);
              throw e;
            } finally {
              k.dispose();
            }
            if (device === 'cpu' && dtype === 'bfloat16') passedBf16OnCpu.add(caseKey(entry, c));
          });
      }
    });
  }

describe('op table coverage', () => {
  // The addon's ops object is the list: it is what TypeScript can call, and
  // unlike backend.h's methods it has no memory-management entries to filter out.
  const nativeOps = Object.keys(native().ops);

  it('every native op has a case', () => {
    expect(nativeOps.length).toBeGreaterThan(20);
    expect(coverageGaps(nativeOps, OP_TABLE)).toEqual({ missing: [], unknown: [] });
  });

  // Runs after the table (vitest runs a file's tests in order), so a filtered run (-t) fails here.
  it('every case of every typed op passed in bfloat16 on the CPU', () => {
    expect(OP_TABLE.filter((e) => e.untyped).map((e) => e.op).sort(), 'the ops without a storage type').toEqual(['convert', 'fillNormal', 'fillUniform']);
    const typed = OP_TABLE.filter((e) => !e.untyped).flatMap((e) => e.cases.map((c) => caseKey(e, c)));
    expect(typed.length).toBeGreaterThan(100);
    expect(typed.filter((key) => !passedBf16OnCpu.has(key))).toEqual([]);
  });

  it('removing the cases of an op is reported', () => {
    const without = OP_TABLE.map((e) => (e.op === 'fillNormal' ? { ...e, cases: [] } : e));
    expect(coverageGaps(nativeOps, without).missing).toEqual(['fillNormal']);
    expect(coverageGaps(nativeOps, [...OP_TABLE, { op: 'noSuchOp', cases: OP_TABLE[0]!.cases }]).unknown).toEqual(['noSuchOp']);
  });
});

describe('seeded random fills: statistics on the CPU', () => {
  const n = 200_000;
  const stats = (x: Float32Array) => {
    let s = 0, s2 = 0, lo = Infinity, hi = -Infinity;
    for (const v of x) {
      s += v;
      s2 += v * v;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    const mean = s / x.length;
    return { mean, std: Math.sqrt(s2 / x.length - mean * mean), lo, hi };
  };
  const filled = (fill: (t: Tensor) => void) => {
    const t = Tensor.zeros([n]);
    try {
      fill(t);
      return t.toFloat32Array();
    } finally {
      t.dispose();
    }
  };

  it('fillNormal: mean and std within 5 standard errors, no value beyond the 24-bit Box-Muller limit', () => {
    const x = filled((t) => ops.fillNormal(t, 1, 0.5, { seed: 3, stream: 4 }));
    const s = stats(x);
    expect(Math.abs(s.mean - 1)).toBeLessThan((5 * 0.5) / Math.sqrt(n));
    // the standard error of the sample std of a normal is std / sqrt(2n)
    expect(Math.abs(s.std - 0.5)).toBeLessThan((5 * 0.5) / Math.sqrt(2 * n));
    const limit = Math.sqrt(-2 * Math.log(0.5 / 16777216)); // the smallest u1 is 0.5 / 2^24
    expect(Math.max(1 - s.lo, s.hi - 1)).toBeLessThanOrEqual(0.5 * limit * (1 + 1e-6));
  });

  it('fillUniform: mean and std of U[lo, hi) within 5 standard errors, every value in [lo, hi)', () => {
    const lo = -2, hi = 6, w = hi - lo;
    const s = stats(filled((t) => ops.fillUniform(t, lo, hi, { seed: 5, stream: 6 })));
    const sd = w / Math.sqrt(12);
    expect(Math.abs(s.mean - (lo + hi) / 2)).toBeLessThan((5 * sd) / Math.sqrt(n));
    // var of (u - 1/2)^2 for u ~ U[0,1) is 1/180, so the std's standard error is ~ w^2 sqrt(1/180 / n) / (2 sd)
    expect(Math.abs(s.std - sd)).toBeLessThan((5 * w * w * Math.sqrt(1 / 180 / n)) / (2 * sd));
    expect(s.lo).toBeGreaterThanOrEqual(lo);
    expect(s.hi).toBeLessThan(hi);
    // the range is nearly used: the extremes of n draws lie within ~10/n of the ends
    expect(s.lo - lo).toBeLessThan((10 * w) / n);
    expect(hi - s.hi).toBeLessThan((10 * w) / n);
  });
});
