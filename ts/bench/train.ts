// Training throughput of the book's model (chapter 5's GPT_CONFIG_124M:
// vocab 50257, context 256, 768 wide, 12 heads, 12 layers, dropout 0.1, no QKV
// bias, untied head): batch 2 x 256 tokens, forward + backward + AdamW (the
// book's lr 4e-4, weight decay 0.1), one warmup step then `steps` timed steps.
import { BOOK_CONFIG, type GPTConfig } from '../model/config.js';
import { GPTModel } from '../model/gpt.js';
import { native } from '../tensor/native.js';
import { Rng } from '../tensor/rng.js';
import type { Device } from '../tensor/tensor.js';
import { AdamW, BOOK_ADAMW } from '../train/optimizer.js';
import { maxRssBytes, median, now, sync } from './util.js';

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
      model.zeroGrad();
      const loss = model.forward(inputs, batch, context, targets, { training: true, grad: true });
      model.backward();
      opt.update();
      sync(device);
      return loss;
    };
    step(); // warmup: allocates activations, first-touch of the moments
    const times: number[] = [];
    let loss = NaN;
    for (let i = 0; i < steps; i++) {
      const t0 = now();
      loss = step();
      times.push(now() - t0);
    }
    const t = median(times);
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
      devicePeakMemory: native().deviceInfo(device).peakMemory,
    };
  } finally {
    opt.dispose();
    model.dispose();
  }
}
