// GELU (tanh approximation), forward and backward, including the saturated tails.
import * as ops from '../../../ts/tensor/ops.js';
import * as R from '../reference.js';
import { type OpContext, type OpEntry } from './context.js';

// ---- GELU ----------------------------------------------------------------------------------------
const GELU_SIZES = [1, 7, 257, 4099];
const EXTREMES = [-12, -5, -1e-3, 0, 1e-3, 5, 12];
const geluInput = (k: OpContext, n: number) => {
  const x = new R.SeededRandom(n).floats(n, 2.5);
  x.set(EXTREMES.slice(0, n));
  return k.round(x);
};

export const geluForward: OpEntry = {
  op: 'geluForward',
  cases: GELU_SIZES.map((n) => ({
    name: `n=${n}`,
    run(k) {
      const x = geluInput(k, n);
      const out = k.zeros([n]);
      ops.geluForward(out, k.tensor(x, [n]));
      k.close('gelu out', out, R.geluRef(R.f64(x)), 'transcendental', 0.01);
    },
  })),
};

export const geluBackward: OpEntry = {
  op: 'geluBackward',
  cases: GELU_SIZES.map((n) => ({
    name: `n=${n} vs finite differences, accumulates`,
    run(k) {
      const x = geluInput(k, n);
      const rng = new R.SeededRandom(n + 1);
      const dout = k.round(rng.floats(n)), prefill = k.round(rng.floats(n, 0.1));
      const dinp = k.tensor(prefill, [n]);
      ops.geluBackward(dinp, k.tensor(x, [n]), k.tensor(dout, [n]));
      // elementwise op: dL/dx_i = dout_i gelu'(x_i), a 1-D central difference of the reference per element
      const e = 1e-6;
      const fd = Float64Array.from({ length: n }, (_, i) => prefill[i]! + (dout[i]! * (R.geluScalar(x[i]! + e) - R.geluScalar(x[i]! - e))) / (2 * e));
      k.close('gelu dinp', dinp, fd, 'gradient', 0.01);
    },
  })),
};

