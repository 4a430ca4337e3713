// Training throughput of the book's model (chapter 5's GPT_CONFIG_124M:
// vocab 50257, context 256, 768 wide, 12 heads, 12 layers, dropout 0.1, no QKV
// bias, untied head): batch 2 x 256 tokens, forward + backward + AdamW (the
// book's lr 4e-4, weight decay 0.1), one warmup step then `steps` timed steps.
import { BOOK_CONFIG, type GPTConfig } from '../model/config.js';
import { GPTModel } from '../model/gpt.js';
import { native } from '../tensor/native.js';
import * as ops from '../tensor/ops.js';
import { Rng } from '../tensor/rng.js';
import { Tensor, type Device } from '../tensor/tensor.js';
import { AdamW, BOOK_ADAMW } from '../train/optimizer.js';
import { maxRssBytes, median, now, sync, timeIt, type TimeOptions } from './util.js';

export interface TrainResult {
  config: GPTConfig;
  parameters: number;
  batch: number;
  context: number;
  steps: number;
  msPerStep: number;
  tokensPerSecond: number;
  /** Loss of the last timed step (about ln(50257) = 10.8 at random init). */
  loss: number;
  /** Process resident-set high-water mark so far (bytes). */
  maxRss: number;
  /** The median step's parts: forward (with the classifier), backward, AdamW (ms). */
  forwardMs: number;
  backwardMs: number;
  updateMs: number;
  /** The addon's high-water mark of tensor memory on the device during the section (bytes). */
  devicePeakMemory: number;
}

export function benchTrain(device: Device, steps = 3, batch = 2, context = 256): TrainResult {
  const config = { ...BOOK_CONFIG };
  native().resetPeakMemory(device);
  const model = new GPTModel(config, { seed: 123, device });
  const opt = new AdamW(model.params, BOOK_ADAMW);
  try {
    const rng = new Rng(7);
    const n = batch * context;
    const makeBatch = () => {
      const ids = new Int32Array(n + 1);
      for (let i = 0; i <= n; i++) ids[i] = rng.int(config.vocabSize);
      return { inputs: ids.subarray(0, n), targets: ids.subarray(1) };
    };
    const step = () => {
      const { inputs, targets } = makeBatch();
      const t0 = now();
      model.zeroGrad();
      const loss = model.forward(inputs, batch, context, targets, { training: true, grad: true });
      sync(device);
      const t1 = now();
      model.backward();
      sync(device);
      const t2 = now();
      opt.update();
      sync(device);
      return { loss, forward: t1 - t0, backward: t2 - t1, update: now() - t2, total: now() - t0 };
    };
    step(); // warmup: allocates activations, first-touch of the moments
    const runs: ReturnType<typeof step>[] = [];
    for (let i = 0; i < steps; i++) runs.push(step());
    const t = median(runs.map((r) => r.total));
    const loss = runs[runs.length - 1]!.loss;
    const part = (k: 'forward' | 'backward' | 'update') => median(runs.map((r) => r[k])) * 1e3;
    return {
      config,
      parameters: model.numParameters,
      batch,
      context,
      steps,
      msPerStep: t * 1e3,
      tokensPerSecond: n / t,
      loss,
      maxRss: maxRssBytes(),
      forwardMs: part('forward'),
      backwardMs: part('backward'),
      updateMs: part('update'),
      devicePeakMemory: native().deviceInfo(device).peakMemory,
    };
  } finally {
    opt.dispose();
    model.dispose();
  }
}

// ---- where a training step's time goes ------------------------------------------------------

export interface StepPart {
  name: string;
  /** Milliseconds per step (all layers, forward and backward). */
  ms: number;
}

export interface StepProfile {
  /** The step's matrix products (every Linear's forward, and its backward's two), timed alone. */
  gemmMs: number;
  gemmGflops: number;
  /** The other ops of a step, each family timed alone. */
  parts: StepPart[];
}

/**
 * The book model's step, op family by op family, at its shapes (batch x
 * context rows, the layers' own weights): the matrix products alone set the
 * floor a fused step approaches (issue: a step within 1.2x of its GEMMs).
 */
export function profileTrainStep(device: Device, batch = 2, context = 256, timing: TimeOptions = {}): StepProfile {
  const config = BOOK_CONFIG;
  const C = config.embDim, L = config.nLayers, V = config.vocabSize, NH = config.nHeads;
  const N = batch * context;
  const owned: Tensor[] = [];
  const t = (shape: number[], dtype: 'float32' | 'int32' = 'float32') => {
    const x = Tensor.zeros(shape, { device, dtype });
    owned.push(x);
    return x;
  };
  try {
    const rows = (width: number) => t([batch, context, width]);
    const x = rows(C), y = rows(C), res = rows(C), dx = rows(C), dy = rows(C), x3 = rows(3 * C), dx3 = rows(3 * C), x4 = rows(4 * C), dx4 = rows(4 * C), y4 = rows(4 * C);
    const mean = t([N]), rstd = t([N]), lse = t([batch, NH, context]), logits = rows(V), losses = t([N]);
    const ids = t([batch, context], 'int32'), targets = t([batch, context], 'int32');
    ids.write(Int32Array.from({ length: N }, (_, i) => (i * 7919) % V));
    targets.write(Int32Array.from({ length: N }, (_, i) => (i * 104729) % V));
    const linear = (out: number, inp: number, bias: boolean) => ({ w: t([out, inp]), dw: t([out, inp]), b: bias ? t([out]) : null, db: bias ? t([out]) : null });
    const layers = Array.from({ length: L }, () => ({
      qkv: linear(3 * C, C, config.qkvBias), proj: linear(C, C, true), fc: linear(4 * C, C, true), fc2: linear(C, 4 * C, true),
      lnW: t([C]), lnB: t([C]), dlnW: t([C]), dlnB: t([C]),
    }));
    const head = linear(V, C, false), wpe = t([config.contextLength, C]), dwpe = t([config.contextLength, C]);
    for (const w of [head.w, wpe, ...layers.flatMap((l) => [l.qkv.w, l.proj.w, l.fc.w, l.fc2.w, l.lnW])]) ops.fillNormal(w, 0, 0.02, { seed: 1, stream: 0 });
    ops.fillNormal(x3, 0, 1, { seed: 2, stream: 0 });
    const ms = (fn: () => void) => timeIt(fn, device, timing).median * 1e3;
    const perLayer = (fn: (l: (typeof layers)[number]) => void) => () => layers.forEach(fn);
    type Lin = ReturnType<typeof linear>;
    const fwdBwd = (l: Lin, inp: Tensor, out: Tensor, dinp: Tensor) => {
      ops.matmulForward(out, inp, l.w, l.b);
      // as the step's backward after zeroGrad(): the weight gradients written, not accumulated
      ops.matmulBackward(dinp, l.dw, l.db, out, inp, l.w, { accumulate: false });
    };
    const gemmMs = ms(() => {
      perLayer((l) => {
        fwdBwd(l.qkv, x, x3, dx);
        fwdBwd(l.proj, y, dy, dx);
        fwdBwd(l.fc, x, x4, dx);
        fwdBwd(l.fc2, y4, y, dx4);
      })();
      fwdBwd(head, x, logits, dx);
    });
    const linearFlops = L * (3 * C * C + C * C + 4 * C * C + 4 * C * C) + V * C;
    const rng = { seed: 3, stream: 0 };
    const p = config.dropRate;
    const parts: StepPart[] = [
      { name: 'attention fwd+bwd', ms: ms(perLayer(() => { ops.attentionForward(y, lse, x3, NH, p, rng); ops.attentionBackward(dx3, dy, x3, y, lse, NH, p, rng); })) },
      { name: `classifier (softmax + cross-entropy over ${V})`, ms: ms(() => ops.crossentropyForwardBackward(losses, logits, logits, targets, 1 / N)) },
      // As the step runs them: block 0's norm1 alone, every other LayerNorm fused with the residual add before it
      // (its backward is the plain one, accumulating into the residual stream's gradient).
      { name: 'residual add + layernorm fwd+bwd x25', ms: ms(() => { ops.layernormForward(y, mean, rstd, x, layers[0]!.lnW, layers[0]!.lnB); ops.layernormBackward(dx, layers[0]!.dlnW, layers[0]!.dlnB, dy, x, layers[0]!.lnW, mean, rstd); perLayer((l) => { for (let k = 0; k < 2; k++) { ops.residualLayernormForward(res, y, mean, rstd, x, dy, l.lnW, l.lnB); ops.layernormBackward(dx, l.dlnW, l.dlnB, dy, res, l.lnW, mean, rstd); } })(); }) },
      { name: 'gelu fwd+bwd x12', ms: ms(perLayer(() => { ops.geluForward(y4, x4); ops.geluBackward(dx4, x4, y4); })) },
      { name: 'dropout fwd+bwd x25', ms: ms(() => { perLayer(() => { for (let k = 0; k < 2; k++) { ops.dropoutForward(y, x, p, rng); ops.dropoutBackward(dx, dy, p, rng); } })(); ops.dropoutForward(y, x, p, rng); ops.dropoutBackward(dx, dy, p, rng); }) },
      { name: 'gradient fills', ms: ms(perLayer(() => { ops.fill(dx, 0); ops.fill(dx, 0); ops.fill(dx, 0); })) },
      { name: 'embedding fwd+bwd', ms: ms(() => { ops.embeddingForward(y, ids, head.w, wpe, 0); ops.embeddingBackward(head.dw, dwpe, dy, ids, 0); }) },
    ];
    return { gemmMs, gemmGflops: (6 * N * linearFlops) / (gemmMs * 1e6), parts };
  } finally {
    for (const x of owned) x.dispose();
  }
}
