// A naive float64 GPT forward pass, written from the math of the book "Build a
// Large Language Model (From Scratch)" (chapter 4 GPTModel, chapter 5 loss),
// in eval mode (no dropout). Plain loops over Float64Array; tiny sizes only.
//
// It is deliberately independent of ts/model/gpt.ts and the native ops: it
// takes the parameters by the book's PyTorch names and follows the modules
// one by one:
//
//   x = tok_emb[ids] + pos_emb[arange(T)]                    (drop_emb: identity)
//   for each TransformerBlock:
//     x = x + out_proj(MHA(norm1(x)))                        (drop_shortcut: identity)
//     x = x + ff.layers.2(GELU(ff.layers.0(norm2(x))))
//   logits = out_head(final_norm(x))                         (no bias)
//   loss = mean over targets != -100 of cross_entropy(logits, target)
//
// Linear weights are stored [out, in] as in PyTorch: y = x W^T + b.

export interface NaiveGPTConfig {
  vocabSize: number;
  contextLength: number;
  embDim: number;
  nHeads: number;
  nLayers: number;
  qkvBias: boolean;
  /** out_head shares tok_emb.weight (then there is no out_head.weight). */
  tieWeights: boolean;
}

export type NaiveParams = Map<string, Float64Array>;

export const NAIVE_IGNORE_INDEX = -100;

/**
 * The parameter names and shapes of the book's GPTModel (PyTorch
 * `named_parameters()` order), written from the module definitions.
 */
export function bookParameterShapes(cfg: NaiveGPTConfig): { name: string; shape: number[] }[] {
  const C = cfg.embDim;
  const out: { name: string; shape: number[] }[] = [
    { name: 'tok_emb.weight', shape: [cfg.vocabSize, C] },
    { name: 'pos_emb.weight', shape: [cfg.contextLength, C] },
  ];
  for (let l = 0; l < cfg.nLayers; l++) {
    const p = `trf_blocks.${l}`;
    for (const w of ['W_query', 'W_key', 'W_value']) {
      out.push({ name: `${p}.att.${w}.weight`, shape: [C, C] });
      if (cfg.qkvBias) out.push({ name: `${p}.att.${w}.bias`, shape: [C] });
    }
    out.push(
      { name: `${p}.att.out_proj.weight`, shape: [C, C] },
      { name: `${p}.att.out_proj.bias`, shape: [C] },
      { name: `${p}.ff.layers.0.weight`, shape: [4 * C, C] },
      { name: `${p}.ff.layers.0.bias`, shape: [4 * C] },
      { name: `${p}.ff.layers.2.weight`, shape: [C, 4 * C] },
      { name: `${p}.ff.layers.2.bias`, shape: [C] },
      { name: `${p}.norm1.scale`, shape: [C] },
      { name: `${p}.norm1.shift`, shape: [C] },
      { name: `${p}.norm2.scale`, shape: [C] },
      { name: `${p}.norm2.shift`, shape: [C] },
    );
  }
  out.push({ name: 'final_norm.scale', shape: [C] }, { name: 'final_norm.shift', shape: [C] });
  if (!cfg.tieWeights) out.push({ name: 'out_head.weight', shape: [cfg.vocabSize, C] });
  return out;
}

function param(params: NaiveParams, name: string, numel: number): Float64Array {
  const v = params.get(name);
  if (!v) throw new Error(`naive GPT: missing parameter ${name}`);
  if (v.length !== numel) throw new Error(`naive GPT: ${name} has ${v.length} values, expected ${numel}`);
  return v;
}

/** nn.Linear: x [N, inF] -> [N, outF], weight [outF, inF], optional bias [outF]. */
export function naiveLinear(x: Float64Array, N: number, inF: number, outF: number, weight: Float64Array, bias: Float64Array | null): Float64Array {
  const y = new Float64Array(N * outF);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o]! : 0;
      for (let i = 0; i < inF; i++) s += x[n * inF + i]! * weight[o * inF + i]!;
      y[n * outF + o] = s;
    }
  }
  return y;
}

/** The book's LayerNorm: eps 1e-5, biased variance, scale * norm + shift, over the last dim. */
export function naiveLayerNorm(x: Float64Array, N: number, C: number, scale: Float64Array, shift: Float64Array): Float64Array {
  const eps = 1e-5;
  const y = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[n * C + c]!;
    mean /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[n * C + c]! - mean) ** 2;
    v /= C; // unbiased=False
    const denom = Math.sqrt(v + eps);
    for (let c = 0; c < C; c++) y[n * C + c] = (scale[c]! * (x[n * C + c]! - mean)) / denom + shift[c]!;
  }
  return y;
}

/** The book's GELU (tanh approximation). */
export function naiveGelu(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

/**
 * The book's MultiHeadAttention on an already-normalised input x [B, T, C]:
 * separate W_query/W_key/W_value projections, split into heads, causal mask,
 * softmax(QK^T / sqrt(head_dim)), weighted sum of values, heads concatenated,
 * out_proj.
 */
function naiveMHA(params: NaiveParams, pre: string, cfg: NaiveGPTConfig, x: Float64Array, B: number, T: number): Float64Array {
  const C = cfg.embDim, NH = cfg.nHeads, hd = C / NH, N = B * T;
  const lin = (name: string, hasBias: boolean, inF: number, outF: number, inp: Float64Array) =>
    naiveLinear(inp, N, inF, outF, param(params, `${pre}.${name}.weight`, outF * inF), hasBias ? param(params, `${pre}.${name}.bias`, outF) : null);
  const q = lin('W_query', cfg.qkvBias, C, C, x);
  const k = lin('W_key', cfg.qkvBias, C, C, x);
  const v = lin('W_value', cfg.qkvBias, C, C, x);
  const ctx = new Float64Array(N * C);
  const w = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      for (let t = 0; t < T; t++) {
        // scores over s <= t (the mask sets s > t to -inf, i.e. weight 0)
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[(b * T + t) * C + h * hd + d]! * k[(b * T + s) * C + h * hd + d]!;
          w[s] = dot / Math.sqrt(hd);
          if (w[s]! > max) max = w[s]!;
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          w[s] = Math.exp(w[s]! - max);
          sum += w[s]!;
        }
        for (let d = 0; d < hd; d++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += (w[s]! / sum) * v[(b * T + s) * C + h * hd + d]!;
          ctx[(b * T + t) * C + h * hd + d] = acc;
        }
      }
    }
  }
  return lin('out_proj', true, C, C, ctx);
}

export interface NaiveResult {
  /** [B, T, V] */
  logits: Float64Array;
  /** Mean cross-entropy over targets != -100 (NaN without targets or when all are ignored). */
  loss: number;
}

/** The eval-mode forward of the book's GPTModel, plus calc_loss_batch's cross-entropy. */
export function naiveGptForward(
  params: NaiveParams,
  cfg: NaiveGPTConfig,
  ids: ArrayLike<number>,
  B: number,
  T: number,
  targets?: ArrayLike<number>,
): NaiveResult {
  const C = cfg.embDim, V = cfg.vocabSize, N = B * T;
  if (ids.length !== N) throw new Error('naive GPT: ids length');
  if (T > cfg.contextLength) throw new Error('naive GPT: T exceeds the context length');
  if (C % cfg.nHeads !== 0) throw new Error('naive GPT: embDim not divisible by nHeads');

  // Embeddings
  const tok = param(params, 'tok_emb.weight', V * C);
  const pos = param(params, 'pos_emb.weight', cfg.contextLength * C);
  let x = new Float64Array(N * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const id = ids[b * T + t]!;
      if (!(id >= 0 && id < V)) throw new Error(`naive GPT: token id ${id} out of range`);
      for (let c = 0; c < C; c++) x[(b * T + t) * C + c] = tok[id * C + c]! + pos[t * C + c]!;
    }
  }

  // Transformer blocks
  for (let l = 0; l < cfg.nLayers; l++) {
    const pre = `trf_blocks.${l}`;
    const h1 = naiveLayerNorm(x, N, C, param(params, `${pre}.norm1.scale`, C), param(params, `${pre}.norm1.shift`, C));
    const att = naiveMHA(params, `${pre}.att`, cfg, h1, B, T);
    const r1 = new Float64Array(N * C);
    for (let i = 0; i < N * C; i++) r1[i] = x[i]! + att[i]!;

    const h2 = naiveLayerNorm(r1, N, C, param(params, `${pre}.norm2.scale`, C), param(params, `${pre}.norm2.shift`, C));
    const fc = naiveLinear(h2, N, C, 4 * C, param(params, `${pre}.ff.layers.0.weight`, 4 * C * C), param(params, `${pre}.ff.layers.0.bias`, 4 * C));
    for (let i = 0; i < fc.length; i++) fc[i] = naiveGelu(fc[i]!);
    const ff = naiveLinear(fc, N, 4 * C, C, param(params, `${pre}.ff.layers.2.weight`, C * 4 * C), param(params, `${pre}.ff.layers.2.bias`, C));
    const r2 = new Float64Array(N * C);
    for (let i = 0; i < N * C; i++) r2[i] = r1[i]! + ff[i]!;
    x = r2;
  }

  // Head
  const xf = naiveLayerNorm(x, N, C, param(params, 'final_norm.scale', C), param(params, 'final_norm.shift', C));
  const head = cfg.tieWeights ? tok : param(params, 'out_head.weight', V * C);
  const logits = naiveLinear(xf, N, C, V, head, null);

  if (!targets) return { logits, loss: NaN };
  if (targets.length !== N) throw new Error('naive GPT: targets length');
  let sum = 0, count = 0;
  for (let n = 0; n < N; n++) {
    const tgt = targets[n]!;
    if (tgt === NAIVE_IGNORE_INDEX) continue;
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[n * V + v]!);
    let se = 0;
    for (let v = 0; v < V; v++) se += Math.exp(logits[n * V + v]! - max);
    sum += max + Math.log(se) - logits[n * V + tgt]!;
    count++;
  }
  return { logits, loss: count > 0 ? sum / count : NaN };
}

// ---------------------------------------------------------------------------
// A tiny seeded generator for test data (mulberry32 + Box-Muller)
// ---------------------------------------------------------------------------

export class TestRandom {
  private a: number;
  constructor(seed: number) {
    this.a = seed >>> 0;
  }
  uniform(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    const u1 = Math.max(this.uniform(), 1e-12);
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * this.uniform());
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo));
  }
}
