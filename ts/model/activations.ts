// Activation memory for one (batch, context) shape: every buffer the forward
// saves for the backward, and the gradient scratch the backward reuses layer
// after layer, as views into ONE preallocated buffer (two at bf16: the
// statistics that stay float32, LayerNorm's mean and rstd, attention's lse and
// the losses, live in a float32 one). A training step allocates nothing; a
// smaller batch lays out inside the same buffers.
import { Tensor, storageDType, type Device, type Precision } from '../tensor/tensor.js';
import type { GPTConfig } from './config.js';

export interface LayerActivations {
  ln1: Tensor; ln1Mean: Tensor; ln1Rstd: Tensor;
  qkv: Tensor;
  att: Tensor; lse: Tensor;
  proj: Tensor; projDrop: Tensor;
  res2: Tensor;
  ln2: Tensor; ln2Mean: Tensor; ln2Rstd: Tensor;
  fc: Tensor; gelu: Tensor;
  fc2: Tensor; fc2Drop: Tensor;
  res3: Tensor;
}

export interface Activations {
  B: number;
  T: number;
  emb: Tensor; embDrop: Tensor;
  layers: LayerActivations[];
  lnf: Tensor; lnfMean: Tensor; lnfRstd: Tensor;
  logits: Tensor;
  losses: Tensor;
  /** Gradient scratch: dres carries dL/d(residual stream) down the blocks. */
  grads: {
    region: Tensor;
    dres: Tensor; dC: Tensor; dC2: Tensor; d4C: Tensor; dqkv: Tensor;
  };
  ids: Tensor;
  targets: Tensor;
}

/** A view of `shape` from the storage-dtype buffer, or with `stat` from the float32 one. */
type Take = (shape: number[], stat?: 'stat') => Tensor;

function layout(cfg: GPTConfig, B: number, T: number, take: Take): Omit<Activations, 'ids' | 'targets'> {
  const C = cfg.embDim, NH = cfg.nHeads, V = cfg.vocabSize;
  const dropout = cfg.dropRate > 0;
  const layers: LayerActivations[] = [];
  const emb = take([B, T, C]);
  const embDrop = dropout ? take([B, T, C]) : emb;
  for (let l = 0; l < cfg.nLayers; l++) {
    const proj = take([B, T, C]);
    const fc2 = take([B, T, C]);
    layers.push({
      ln1: take([B, T, C]), ln1Mean: take([B * T], 'stat'), ln1Rstd: take([B * T], 'stat'),
      qkv: take([B, T, 3 * C]),
      att: take([B, T, C]), lse: take([B, NH, T], 'stat'),
      proj, projDrop: dropout ? take([B, T, C]) : proj,
      res2: take([B, T, C]),
      ln2: take([B, T, C]), ln2Mean: take([B * T], 'stat'), ln2Rstd: take([B * T], 'stat'),
      fc: take([B, T, 4 * C]), gelu: take([B, T, 4 * C]),
      fc2, fc2Drop: dropout ? take([B, T, C]) : fc2,
      res3: take([B, T, C]),
    });
  }
  const lnf = take([B, T, C]), lnfMean = take([B * T], 'stat'), lnfRstd = take([B * T], 'stat');
  const logits = take([B, T, V]);
  const losses = take([B * T], 'stat');
  // The gradients that are accumulated into are contiguous, so one fill zeroes them per layer;
  // d4C (the GELU's input gradient) is written whole by geluMatmulBackward.
  const scratchNumel = B * T * (C + C + 3 * C);
  const region = take([scratchNumel]);
  let off = 0;
  const sub = (shape: number[]) => {
    const t = region.view(off, shape);
    off += shape.reduce((a, b) => a * b, 1);
    return t;
  };
  const dres = take([B, T, C]);
  const d4C = take([B, T, 4 * C]);
  const grads = { region, dres, dC: sub([B, T, C]), dC2: sub([B, T, C]), d4C, dqkv: sub([B, T, 3 * C]) };
  return { B, T, emb, embDrop, layers, lnf, lnfMean, lnfRstd, logits, losses, grads };
}

/** Elements of the storage buffer and of the float32 statistics buffer a layout needs. */
function countNumel(cfg: GPTConfig, B: number, T: number): { storage: number; stats: number } {
  const n = { storage: 0, stats: 0 };
  const fake = { view: () => fake } as unknown as Tensor;
  layout(cfg, B, T, (shape, stat) => {
    n[stat ? 'stats' : 'storage'] += shape.reduce((a, b) => a * b, 1);
    return fake;
  });
  return n;
}

/** Owns the activation buffer; hands out layouts for any (B, T) within the plan. */
export class ActivationPool {
  private buffer: Tensor | null = null;
  private statsBuffer: Tensor | null = null;
  private idsBuffer: Tensor | null = null;
  private targetsBuffer: Tensor | null = null;
  private capacity = { storage: 0, stats: 0 };
  private tokenCapacity = 0;
  private cache = new Map<string, Activations>();

  constructor(private readonly cfg: GPTConfig, private readonly device: Device, private readonly precision: Precision = 'fp32') {}

  get bytes(): number {
    return this.capacity.storage * (this.precision === 'bf16' ? 2 : 4) + this.capacity.stats * 4;
  }

  get(B: number, T: number): Activations {
    const key = `${B}x${T}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const need = countNumel(this.cfg, B, T);
    if (need.storage > this.capacity.storage || need.stats > this.capacity.stats || B * T > this.tokenCapacity) {
      this.dispose();
      this.buffer = Tensor.zeros([need.storage], { device: this.device, dtype: storageDType(this.precision) });
      this.statsBuffer = Tensor.zeros([need.stats], { device: this.device });
      this.idsBuffer = Tensor.zeros([B * T], { dtype: 'int32', device: this.device });
      this.targetsBuffer = Tensor.zeros([B * T], { dtype: 'int32', device: this.device });
      this.capacity = need;
      this.tokenCapacity = B * T;
    }
    const off = { storage: 0, stats: 0 };
    const buffers = { storage: this.buffer!, stats: this.statsBuffer! };
    const acts = layout(this.cfg, B, T, (shape, stat) => {
      const k = stat ? 'stats' : 'storage';
      const t = buffers[k].view(off[k], shape);
      off[k] += shape.reduce((a, b) => a * b, 1);
      return t;
    }) as Activations;
    acts.ids = this.idsBuffer!.view(0, [B, T]);
    acts.targets = this.targetsBuffer!.view(0, [B * T]);
    this.cache.set(key, acts);
    return acts;
  }

  dispose(): void {
    this.buffer?.dispose();
    this.statsBuffer?.dispose();
    this.idsBuffer?.dispose();
    this.targetsBuffer?.dispose();
    this.buffer = this.statsBuffer = this.idsBuffer = this.targetsBuffer = null;
    this.capacity = { storage: 0, stats: 0 };
    this.tokenCapacity = 0;
    this.cache.clear();
  }
}
