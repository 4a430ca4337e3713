// GPTModel: the book's GPT (chapter 4) with explicit forward and backward
// passes over the native ops, llm.c style. Read top to bottom:
//
//   tokens -> tok_emb + pos_emb -> dropout
//          -> n_layers x [ x + drop(att(norm1(x))) ; x + drop(ff(norm2(x))) ]
//          -> final_norm -> out_head -> logits -> cross-entropy
//
// Parameter names follow the book's PyTorch module names, so state dicts map
// one to one. Q, K and V are separate parameters laid out back to back, which
// makes them one fused [3C, C] projection for the matmul.
import { ParameterStore, type ParameterSpec } from '../nn/parameters.js';
import * as ops from '../tensor/ops.js';
import { native, type NativeRecording } from '../tensor/native.js';
import { Tensor, storageDType, type Device, type Precision } from '../tensor/tensor.js';
import { ActivationPool, type Activations, type LayerActivations } from './activations.js';
import { validateConfig, type GPTConfig } from './config.js';

interface Param {
  value: Tensor;
  grad: Tensor;
}

interface BlockParams {
  norm1: { scale: Param; shift: Param };
  qkvWeight: Param; // [3C, C]: W_query, W_key, W_value
  qkvBias: Param | null; // [3C]
  outProj: { weight: Param; bias: Param };
  norm2: { scale: Param; shift: Param };
  fc: { weight: Param; bias: Param }; // ff.layers.0: [4C, C]
  fcProj: { weight: Param; bias: Param }; // ff.layers.2: [C, 4C]
}

export interface ForwardOptions {
  /** Dropout on, and the backward's state kept. */
  training?: boolean;
  /** Compute the loss gradient during the forward (then call backward()). */
  grad?: boolean;
  /** Multiplies the loss gradient (e.g. 1 / grad-accumulation steps). */
  lossScale?: number;
}

export interface ModelInit {
  seed?: number;
  device?: Device;
  /** Leave parameters zero (they are about to be loaded). */
  skipInit?: boolean;
  /**
   * Storage precision of parameters, activations and gradients (default fp32).
   * bf16 keeps float32 master weights for training; arithmetic, statistics
   * and reductions are float32 either way.
   */
  dtype?: Precision;
  /** At bf16: keep the float32 master weights (default true; false for inference only, half the memory). */
  masterWeights?: boolean;
}

// Dropout sites draw from disjoint RNG streams: stream = dropoutCounter * SITES + site.
const SITES = 4096;

export class GPTModel {
  readonly config: GPTConfig;
  readonly device: Device;
  readonly dtype: Precision;
  readonly params: ParameterStore;
  /** Seeds dropout masks; with `dropoutCounter` it fully determines them. */
  dropoutSeed: number;
  /** Training forwards run so far (advances the dropout streams). */
  dropoutCounter = 0;

  private readonly tokEmb: Param;
  private readonly posEmb: Param;
  private readonly blocks: BlockParams[] = [];
  private readonly finalNorm: { scale: Param; shift: Param };
  private readonly outHead: Param;
  /** Gradients no matmulBackward writes (LayerNorms, embeddings), as few contiguous views. */
  private readonly onlyAccumulated: Tensor[];
  private readonly pool: ActivationPool;
  private last: { acts: Activations; training: boolean; grad: boolean; stream0: number } | null = null;

  constructor(config: GPTConfig, init: ModelInit = {}) {
    validateConfig(config);
    this.config = { ...config };
    this.device = init.device ?? 'cpu';
    this.dtype = init.dtype ?? 'fp32';
    this.dropoutSeed = init.seed ?? 123;
    this.params = new ParameterStore(GPTModel.parameterSpecs(config), this.device, this.dtype, { masterWeights: init.masterWeights });
    const p = (name: string): Param => this.params.get(name);
    const C = config.embDim;
    this.tokEmb = p('tok_emb.weight');
    this.posEmb = p('pos_emb.weight');
    for (let l = 0; l < config.nLayers; l++) {
      const pre = `trf_blocks.${l}`;
      this.blocks.push({
        norm1: { scale: p(`${pre}.norm1.scale`), shift: p(`${pre}.norm1.shift`) },
        qkvWeight: this.params.span(`${pre}.att.W_query.weight`, `${pre}.att.W_value.weight`, [3 * C, C]),
        qkvBias: config.qkvBias ? this.params.span(`${pre}.att.W_query.bias`, `${pre}.att.W_value.bias`, [3 * C]) : null,
        outProj: { weight: p(`${pre}.att.out_proj.weight`), bias: p(`${pre}.att.out_proj.bias`) },
        norm2: { scale: p(`${pre}.norm2.scale`), shift: p(`${pre}.norm2.shift`) },
        fc: { weight: p(`${pre}.ff.layers.0.weight`), bias: p(`${pre}.ff.layers.0.bias`) },
        fcProj: { weight: p(`${pre}.ff.layers.2.weight`), bias: p(`${pre}.ff.layers.2.bias`) },
      });
    }
    this.finalNorm = { scale: p('final_norm.scale'), shift: p('final_norm.shift') };
    this.outHead = config.tieWeights ? this.tokEmb : p('out_head.weight');
    this.onlyAccumulated = this.gradientsOnlyAccumulated();
    this.pool = new ActivationPool(config, this.device, this.dtype);
    if (!init.skipInit) this.initialize(init.seed ?? 123);
  }

  /** Names, shapes and initialisation of every parameter, in layout order. */
  static parameterSpecs(c: GPTConfig): ParameterSpec[] {
    const C = c.embDim;
    const zeros = { kind: 'zeros' } as const, ones = { kind: 'ones' } as const;
    const torch = c.init === 'pytorch';
    // PyTorch defaults: nn.Embedding N(0, 1); nn.Linear weight and bias U(+-1/sqrt(fan_in)).
    // GPT-2: N(0, 0.02), zero biases, and projections into the residual stream
    // scaled by 1/sqrt(2 * n_layers) so its variance does not grow with depth.
    const embedding = torch ? ({ kind: 'normal', std: 1 } as const) : ({ kind: 'normal', std: 0.02 } as const);
    const weight = (fanIn: number, residual = false) =>
      torch
        ? ({ kind: 'uniform', bound: 1 / Math.sqrt(fanIn) } as const)
        : ({ kind: 'normal', std: residual ? 0.02 / Math.sqrt(2 * c.nLayers) : 0.02 } as const);
    const bias = (fanIn: number) => (torch ? ({ kind: 'uniform', bound: 1 / Math.sqrt(fanIn) } as const) : zeros);
    const specs: ParameterSpec[] = [
      { name: 'tok_emb.weight', shape: [c.vocabSize, C], init: embedding },
      { name: 'pos_emb.weight', shape: [c.contextLength, C], init: embedding },
    ];
    for (let l = 0; l < c.nLayers; l++) {
      const pre = `trf_blocks.${l}`;
      specs.push(
        { name: `${pre}.norm1.scale`, shape: [C], init: ones },
        { name: `${pre}.norm1.shift`, shape: [C], init: zeros },
        { name: `${pre}.att.W_query.weight`, shape: [C, C], init: weight(C) },
        { name: `${pre}.att.W_key.weight`, shape: [C, C], init: weight(C) },
        { name: `${pre}.att.W_value.weight`, shape: [C, C], init: weight(C) },
      );
      if (c.qkvBias) {
        specs.push(
          { name: `${pre}.att.W_query.bias`, shape: [C], init: bias(C) },
          { name: `${pre}.att.W_key.bias`, shape: [C], init: bias(C) },
          { name: `${pre}.att.W_value.bias`, shape: [C], init: bias(C) },
        );
      }
      specs.push(
        { name: `${pre}.att.out_proj.weight`, shape: [C, C], init: weight(C, true) },
        { name: `${pre}.att.out_proj.bias`, shape: [C], init: bias(C) },
        { name: `${pre}.norm2.scale`, shape: [C], init: ones },
        { name: `${pre}.norm2.shift`, shape: [C], init: zeros },
        { name: `${pre}.ff.layers.0.weight`, shape: [4 * C, C], init: weight(C) },
        { name: `${pre}.ff.layers.0.bias`, shape: [4 * C], init: bias(C) },
        { name: `${pre}.ff.layers.2.weight`, shape: [C, 4 * C], init: weight(4 * C, true) },
        { name: `${pre}.ff.layers.2.bias`, shape: [C], init: bias(4 * C) },
      );
    }
    specs.push(
      { name: 'final_norm.scale', shape: [C], init: ones },
      { name: 'final_norm.shift', shape: [C], init: zeros },
    );
    if (!c.tieWeights) specs.push({ name: 'out_head.weight', shape: [c.vocabSize, C], init: weight(C) });
    return specs;
  }

  /**
   * Seeded initialisation (config.init), on the device: parameter k draws
   * from RNG stream k, so values depend only on (seed, layout), not on
   * thread counts. At bf16 the float32 draws are rounded into the model's copy.
   */
  initialize(seed: number): void {
    const store = this.params;
    const target = store.master ?? Tensor.zeros([store.numel], { device: this.device });
    try {
      store.params.forEach((p, k) => {
        const value = target.view(p.offset, p.shape);
        const rng = { seed, stream: k };
        if (p.init.kind === 'normal') ops.fillNormal(value, 0, p.init.std, rng);
        else if (p.init.kind === 'uniform') ops.fillUniform(value, -p.init.bound, p.init.bound, rng);
        else ops.fill(value, p.init.kind === 'ones' ? 1 : 0);
      });
      if (target !== store.flat) ops.convert(store.flat, target);
    } finally {
      if (target !== store.master) target.dispose();
    }
  }

  /**
   * The gradients backward() only adds to, merged into contiguous runs: the
   * ones it zeroes when it claims zeroed gradients, while the Linear layers'
   * (and the LM head's, first of all) are written by their matmulBackward.
   */
  private gradientsOnlyAccumulated(): Tensor[] {
    const written = new Set<string>([this.config.tieWeights ? 'tok_emb.weight' : 'out_head.weight']);
    for (let l = 0; l < this.config.nLayers; l++) {
      const pre = `trf_blocks.${l}`;
      for (const n of ['W_query', 'W_key', 'W_value']) written.add(`${pre}.att.${n}.weight`).add(`${pre}.att.${n}.bias`);
      for (const n of ['att.out_proj', 'ff.layers.0', 'ff.layers.2']) written.add(`${pre}.${n}.weight`).add(`${pre}.${n}.bias`);
    }
    const runs: [start: number, end: number][] = [];
    for (const q of this.params.params) {
      if (written.has(q.name)) continue;
      const last = runs[runs.length - 1];
      if (last && last[1] === q.offset) last[1] += q.numel;
      else runs.push([q.offset, q.offset + q.numel]);
    }
    const grads = this.params.flatGrad;
    return runs.map(([start, end]) => grads.view(start, [end - start]));
  }

  get numParameters(): number {
    return this.params.numel;
  }

  /** Parameter names and shapes, in layout order. */
  namedParameters(): { name: string; shape: number[]; value: Tensor; grad: Tensor }[] {
    return this.params.params.map((p) => ({ name: p.name, shape: p.shape, value: p.value, grad: p.grad }));
  }

  // ---- forward ------------------------------------------------------------------------

  /**
   * Runs the model on token ids [B, T] (row-major). With targets, returns the
   * mean cross-entropy over targets that are not -100; without, returns NaN and
   * leaves the logits in `logits()`.
   */
  forward(ids: Int32Array, B: number, T: number, targets?: Int32Array, options: ForwardOptions = {}): number {
    const cfg = this.config;
    if (ids.length !== B * T) throw new Error(`forward: ${ids.length} ids do not make a [${B}, ${T}] batch`);
    if (T > cfg.contextLength)
      throw new Error(`forward: sequence length ${T} exceeds the model's context length ${cfg.contextLength}`);
    if (targets && targets.length !== B * T) throw new Error(`forward: targets must have ${B * T} entries`);
    const training = options.training ?? false;
    const grad = (options.grad ?? false) && targets !== undefined;
    const acts = this.pool.get(B, T);
    acts.ids.write(ids);
    const p = training ? cfg.dropRate : 0;
    const stream0 = training ? this.dropoutCounter++ * SITES : 0;
    const rng = (site: number) => ({ seed: this.dropoutSeed, stream: stream0 + site });

    // Without dropout the *Drop buffers are skipped: `dropped` picks the live one.
    const dropped = (out: Tensor, inp: Tensor, site: number) => {
      if (p === 0) return inp;
      ops.dropoutForward(out, inp, p, rng(site));
      return out;
    };
    ops.embeddingForward(acts.emb, acts.ids, this.tokEmb.value, this.posEmb.value, 0);
    const x = dropped(acts.embDrop, acts.emb, 0);
    this.blocksForward(acts, x, (l, a) => ops.attentionForward(a.att, a.lse, a.qkv, cfg.nHeads, p, rng(1 + 3 * l)), dropped);
    ops.matmulForward(acts.logits, acts.lnf, this.outHead.value, null);
    this.last = { acts, training, grad, stream0 };
    if (!targets) return NaN;

    acts.targets.write(targets);
    let valid = 0;
    for (let i = 0; i < targets.length; i++) if (targets[i] !== ops.IGNORE_INDEX) valid++;
    if (valid === 0) throw new Error('forward: every target is the ignore index -100; nothing to compute a loss on');
    if (grad) {
      // Fused classifier: the logits buffer now holds dL/dlogits.
      const dloss = (options.lossScale ?? 1) / valid;
      ops.crossentropyForwardBackward(acts.losses, acts.logits, acts.logits, acts.targets, dloss);
    } else {
      ops.crossentropyForward(acts.losses, acts.logits, acts.targets);
    }
    const losses = acts.losses.toFloat32Array();
    let sum = 0;
    for (let i = 0; i < losses.length; i++) sum += losses[i];
    return sum / valid;
  }

  /**
   * The transformer blocks and the final LayerNorm over the residual stream x:
   * `attend` fills a.att from a.qkv (training attention or KV-cache decoding),
   * `dropped` applies residual dropout (or passes its input through).
   */
  private blocksForward(
    acts: Activations,
    x: Tensor,
    attend: (layer: number, a: LayerActivations) => void,
    dropped: (out: Tensor, inp: Tensor, site: number) => Tensor,
  ): void {
    const L = this.config.nLayers;
    // Each residual add runs fused with the LayerNorm that reads it (norm2, the
    // next block's norm1, final_norm): the same bits as add then LayerNorm, one
    // pass fewer over the stream. Only the first norm1 reads x without an add.
    const next = (l: number) =>
      l + 1 < L
        ? { out: acts.layers[l + 1].ln1, mean: acts.layers[l + 1].ln1Mean, rstd: acts.layers[l + 1].ln1Rstd, norm: this.blocks[l + 1].norm1 }
        : { out: acts.lnf, mean: acts.lnfMean, rstd: acts.lnfRstd, norm: this.finalNorm };
    const first = next(-1); // block 0's norm1, or final_norm without blocks
    ops.layernormForward(first.out, first.mean, first.rstd, x, first.norm.scale.value, first.norm.shift.value);
    for (let l = 0; l < L; l++) {
      const w = this.blocks[l], a = acts.layers[l];
      ops.matmulForward(a.qkv, a.ln1, w.qkvWeight.value, w.qkvBias?.value ?? null);
      attend(l, a);
      ops.matmulForward(a.proj, a.att, w.outProj.weight.value, w.outProj.bias.value);
      ops.residualLayernormForward(a.res2, a.ln2, a.ln2Mean, a.ln2Rstd, x, dropped(a.projDrop, a.proj, 2 + 3 * l),
        w.norm2.scale.value, w.norm2.shift.value);
      ops.matmulGeluForward(a.gelu, a.fc, a.ln2, w.fc.weight.value, w.fc.bias.value);
      ops.matmulForward(a.fc2, a.gelu, w.fcProj.weight.value, w.fcProj.bias.value);
      const n = next(l);
      ops.residualLayernormForward(a.res3, n.out, n.mean, n.rstd, a.res2, dropped(a.fc2Drop, a.fc2, 3 + 3 * l),
        n.norm.scale.value, n.norm.shift.value);
      x = a.res3;
    }
  }

  /** Logits [B, T, V] of the last forward without gradient. */
  logits(): Tensor {
    if (!this.last || this.last.grad) throw new Error('logits: run forward() without grad first');
    return this.last.acts.logits;
  }

  // ---- backward --------------------------------------------------------------------------

  /** Accumulates dL/dparams into the gradient buffer (call zeroGrad() between steps). */
  backward(): void {
    if (!this.last || !this.last.grad) throw new Error('backward: call forward(ids, B, T, targets, { grad: true }) first');
    const { acts, training, stream0 } = this.last;
    this.last = null; // the logits now hold gradients; one backward per forward
    const cfg = this.config;
    const p = training ? cfg.dropRate : 0;
    const rng = (site: number) => ({ seed: this.dropoutSeed, stream: stream0 + site });
    const g = acts.grads;
    /** The gradient at a dropout's input, from the one at its output in g.dres. */
    const undropped = (site: number): Tensor => {
      if (p === 0) return g.dres;
      ops.dropoutBackward(g.dC2, g.dres, p, rng(site));
      return g.dC2;
    };

    // After zeroGrad() the Linear layers' gradients are written, not added to zeros (ParameterStore.zeroGrad).
    const fresh = this.params.claimGradients();
    if (fresh) for (const t of this.onlyAccumulated) ops.fill(t, 0);
    const acc = { accumulate: !fresh };

    ops.fill(g.region, 0);
    ops.fill(g.dres, 0);
    ops.matmulBackward(g.dC, this.outHead.grad, null, acts.logits, acts.lnf, this.outHead.value, acc);
    const embOut = p > 0 ? acts.embDrop : acts.emb;
    const lastX = cfg.nLayers > 0 ? acts.layers[cfg.nLayers - 1].res3 : embOut;
    ops.layernormBackward(g.dres, this.finalNorm.scale.grad, this.finalNorm.shift.grad, g.dC, lastX,
      this.finalNorm.scale.value, acts.lnfMean, acts.lnfRstd);

    for (let l = cfg.nLayers - 1; l >= 0; l--) {
      const w = this.blocks[l], a = acts.layers[l];
      const x = l > 0 ? acts.layers[l - 1].res3 : embOut;
      ops.fill(g.region, 0);
      // MLP branch: out = res2 + drop(fcProj(gelu(fc(norm2(res2)))))
      ops.geluMatmulBackward(g.d4C, w.fcProj.weight.grad, w.fcProj.bias.grad, undropped(3 + 3 * l), a.gelu, a.fc, w.fcProj.weight.value, acc);
      ops.matmulBackward(g.dC, w.fc.weight.grad, w.fc.bias.grad, g.d4C, a.ln2, w.fc.weight.value, acc);
      ops.layernormBackward(g.dres, w.norm2.scale.grad, w.norm2.shift.grad, g.dC, a.res2, w.norm2.scale.value, a.ln2Mean, a.ln2Rstd);
      // Attention branch: res2 = x + drop(outProj(att(qkv(norm1(x)))))
      ops.fill(g.region, 0);
      ops.matmulBackward(g.dC, w.outProj.weight.grad, w.outProj.bias.grad, undropped(2 + 3 * l), a.att, w.outProj.weight.value, acc);
      ops.attentionBackward(g.dqkv, g.dC, a.qkv, a.att, a.lse, cfg.nHeads, p, rng(1 + 3 * l));
      ops.fill(g.dC, 0);
      ops.matmulBackward(g.dC, w.qkvWeight.grad, w.qkvBias?.grad ?? null, g.dqkv, a.ln1, w.qkvWeight.value, acc);
      ops.layernormBackward(g.dres, w.norm1.scale.grad, w.norm1.shift.grad, g.dC, x, w.norm1.scale.value, a.ln1Mean, a.ln1Rstd);
    }
    let demb = g.dres;
    if (p > 0) {
      ops.fill(g.dC, 0);
      ops.dropoutBackward(g.dC, g.dres, p, rng(0));
      demb = g.dC;
    }
    ops.embeddingBackward(this.tokEmb.grad, this.posEmb.grad, demb, acts.ids, 0);
  }

  zeroGrad(): void {
    this.params.zeroGrad();
  }

  // ---- inference with a KV cache -----------------------------------------------------------

  /**
   * Runs positions pos0..pos0+T-1 of B sequences through the model, reading and
   * extending `cache`, and returns the logits of the LAST position of each
   * sequence as a host array [B, V]. With one position per sequence (T = 1),
   * pos0 may also list each sequence's own position: a batch of sequences of
   * different lengths then decodes together, row b attending over its own
   * pos0[b] + 1 cached entries.
   */
  forwardCached(ids: Int32Array, B: number, T: number, pos0: CachePositions, cache: KVCache): Float32Array {
    return this.enqueueCached(ids, B, T, pos0, cache).toFloat32Array();
  }

  /** forwardCached with the arithmetic on a worker thread: the event loop stays free. */
  async forwardCachedAsync(ids: Int32Array, B: number, T: number, pos0: CachePositions, cache: KVCache): Promise<Float32Array> {
    const addon = native();
    addon.beginRecording();
    let out: Tensor;
    let recording: NativeRecording;
    try {
      out = this.enqueueCached(ids, B, T, pos0, cache);
    } finally {
      recording = addon.endRecording();
    }
    await addon.runRecording(recording);
    return out.toFloat32Array();
  }

  /** Validates and issues the ops of a cached forward; returns the logits tensor to read. */
  private enqueueCached(ids: Int32Array, B: number, T: number, pos0: CachePositions, cache: KVCache): Tensor {
    const cfg = this.config;
    if (ids.length !== B * T) throw new Error(`forwardCached: ${ids.length} ids do not make a [${B}, ${T}] batch`);
    if (!(T >= 1)) throw new Error('forwardCached: needs at least one position');
    const rows = typeof pos0 === 'number' ? null : Array.from(pos0);
    if (rows) {
      if (T !== 1) throw new Error(`forwardCached: per-sequence positions need T = 1 (got T = ${T}); pass one pos0 number for T > 1`);
      if (rows.length !== B) throw new Error(`forwardCached: ${rows.length} positions for a batch of ${B}; give one per sequence`);
    }
    for (const p of rows ?? [pos0 as number]) {
      if (!(Number.isInteger(p) && p >= 0)) throw new Error(`forwardCached: position ${p} is not a non-negative integer`);
      if (p + T > cfg.contextLength)
        throw new Error(`forwardCached: positions up to ${p + T} exceed the context length ${cfg.contextLength}`);
    }
    if (cache.batch !== B) throw new Error(`forwardCached: cache was made for batch ${cache.batch}, not ${B}`);
    const acts = this.pool.get(B, T);
    acts.ids.write(ids);
    const V = cfg.vocabSize, C = cfg.embDim;
    if (rows) {
      // Embedding and attention per sequence (each at its own position, on
      // views of its row); the matrix products still run over the whole batch.
      const perRow = cache.keys[0] ? cache.keys[0].numel / B : 0;
      const rowCache = (t: Tensor, b: number) => t.view(b * perRow, [1, ...t.shape.slice(1)]);
      rows.forEach((p, b) => ops.embeddingForward(acts.emb.view(b * C, [1, 1, C]), acts.ids.view(b, [1, 1]), this.tokEmb.value, this.posEmb.value, p));
      this.blocksForward(acts, acts.emb, (l, a) => rows.forEach((p, b) =>
        ops.attentionDecode(a.att.view(b * C, [1, 1, C]), rowCache(cache.keys[l], b), rowCache(cache.values[l], b), a.qkv.view(b * 3 * C, [1, 1, 3 * C]), p)),
      (_out, inp) => inp);
    } else {
      const p = pos0 as number;
      ops.embeddingForward(acts.emb, acts.ids, this.tokEmb.value, this.posEmb.value, p);
      this.blocksForward(acts, acts.emb, (l, a) => ops.attentionDecode(a.att, cache.keys[l], cache.values[l], a.qkv, p), (_out, inp) => inp);
    }
    this.last = null;
    // Only the last position of each sequence is needed: its row alone goes through the head.
    if (T === 1) {
      ops.matmulForward(acts.logits.view(0, [B, V]), acts.lnf.view(0, [B, C]), this.outHead.value, null);
    } else {
      for (let b = 0; b < B; b++)
        ops.matmulForward(acts.logits.view(b * V, [1, V]), acts.lnf.view((b * T + T - 1) * C, [1, C]), this.outHead.value, null);
    }
    return acts.logits.view(0, [B, V]);
  }

  createKVCache(batch: number): KVCache {
    return new KVCache(this.config, batch, this.device, this.dtype);
  }

  /**
   * Loads a model from a checkpoint, a run directory, an OpenAI GPT-2 folder
   * or a Hugging Face GPT-2 safetensors file (the format is detected).
   * ts/weights/load.ts sets it: the formats live in a layer above model/.
   * (model.generate, model.stream and model.save are attached the same way
   * by ts/generate/generate.ts and ts/checkpoint/checkpoint.ts.)
   */
  static load: (path: string, options?: { device?: Device; dtype?: Precision; masterWeights?: boolean }) => Promise<GPTModel> = () =>
    Promise.reject(new Error('GPTModel.load: no weight formats are loaded; import gptcuda (ts/index.ts) or ts/weights/load.js first'));

  /** Frees parameters and activations now. */
  dispose(): void {
    this.pool.dispose();
    this.params.dispose();
  }
}

/** forwardCached's first position: one for the whole batch, or (for T = 1) one per sequence. */
export type CachePositions = number | readonly number[];

/** Keys and values of past positions, per layer: [B, heads, context, head_dim]. */
export class KVCache {
  readonly keys: Tensor[] = [];
  readonly values: Tensor[] = [];
  constructor(readonly config: GPTConfig, readonly batch: number, device: Device, precision: Precision = 'fp32') {
    const hs = config.embDim / config.nHeads;
    const shape = [batch, config.nHeads, config.contextLength, hs];
    const dtype = storageDType(precision);
    for (let l = 0; l < config.nLayers; l++) {
      this.keys.push(Tensor.zeros(shape, { device, dtype }));
      this.values.push(Tensor.zeros(shape, { device, dtype }));
    }
  }
  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
  }
}
