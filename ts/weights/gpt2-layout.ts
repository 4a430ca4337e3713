// How GPT-2's published tensors (OpenAI's TF checkpoint, Hugging Face's
// safetensors) map onto GPTModel's parameters. Both store linear weights as
// Conv1D [in, out] and Q/K/V fused in c_attn; GPTModel keeps PyTorch's
// Linear layout [out, in] with Q, K, V back to back, i.e. c_attn^T.
import type { GPTConfig } from '../model/config.js';

/** One GPT-2 tensor and where it goes. `transpose`: [in, out] -> [out, in]. */
export interface Gpt2Tensor {
  /** Hugging Face name without the `transformer.` prefix, e.g. h.0.attn.c_attn.weight. */
  hf: string;
  /** OpenAI TF name, e.g. model/h0/attn/c_attn/w. */
  openai: string;
  /** Our parameter names it fills, in order (Q/K/V biases are three consecutive ones). */
  ours: string[];
  /** GPT-2's shape ([in, out] for linear weights; OpenAI's has a leading 1). */
  shape: number[];
  transpose: boolean;
}

export function gpt2Tensors(c: GPTConfig): Gpt2Tensor[] {
  const C = c.embDim;
  const list: Gpt2Tensor[] = [
    { hf: 'wte.weight', openai: 'model/wte', ours: ['tok_emb.weight'], shape: [c.vocabSize, C], transpose: false },
    { hf: 'wpe.weight', openai: 'model/wpe', ours: ['pos_emb.weight'], shape: [c.contextLength, C], transpose: false },
  ];
  for (let l = 0; l < c.nLayers; l++) {
    const o = `model/h${l}`, h = `h.${l}`, ours = `trf_blocks.${l}`;
    const att = `${ours}.att`;
    list.push(
      { hf: `${h}.ln_1.weight`, openai: `${o}/ln_1/g`, ours: [`${ours}.norm1.scale`], shape: [C], transpose: false },
      { hf: `${h}.ln_1.bias`, openai: `${o}/ln_1/b`, ours: [`${ours}.norm1.shift`], shape: [C], transpose: false },
      { hf: `${h}.attn.c_attn.weight`, openai: `${o}/attn/c_attn/w`, ours: [`${att}.W_query.weight`, `${att}.W_key.weight`, `${att}.W_value.weight`], shape: [C, 3 * C], transpose: true },
      { hf: `${h}.attn.c_attn.bias`, openai: `${o}/attn/c_attn/b`, ours: [`${att}.W_query.bias`, `${att}.W_key.bias`, `${att}.W_value.bias`], shape: [3 * C], transpose: false },
      { hf: `${h}.attn.c_proj.weight`, openai: `${o}/attn/c_proj/w`, ours: [`${att}.out_proj.weight`], shape: [C, C], transpose: true },
      { hf: `${h}.attn.c_proj.bias`, openai: `${o}/attn/c_proj/b`, ours: [`${att}.out_proj.bias`], shape: [C], transpose: false },
      { hf: `${h}.ln_2.weight`, openai: `${o}/ln_2/g`, ours: [`${ours}.norm2.scale`], shape: [C], transpose: false },
      { hf: `${h}.ln_2.bias`, openai: `${o}/ln_2/b`, ours: [`${ours}.norm2.shift`], shape: [C], transpose: false },
      { hf: `${h}.mlp.c_fc.weight`, openai: `${o}/mlp/c_fc/w`, ours: [`${ours}.ff.layers.0.weight`], shape: [C, 4 * C], transpose: true },
      { hf: `${h}.mlp.c_fc.bias`, openai: `${o}/mlp/c_fc/b`, ours: [`${ours}.ff.layers.0.bias`], shape: [4 * C], transpose: false },
      { hf: `${h}.mlp.c_proj.weight`, openai: `${o}/mlp/c_proj/w`, ours: [`${ours}.ff.layers.2.weight`], shape: [4 * C, C], transpose: true },
      { hf: `${h}.mlp.c_proj.bias`, openai: `${o}/mlp/c_proj/b`, ours: [`${ours}.ff.layers.2.bias`], shape: [C], transpose: false },
    );
  }
  list.push(
    { hf: 'ln_f.weight', openai: 'model/ln_f/g', ours: ['final_norm.scale'], shape: [C], transpose: false },
    { hf: 'ln_f.bias', openai: 'model/ln_f/b', ours: ['final_norm.shift'], shape: [C], transpose: false },
  );
  return list;
}

/** [rows, cols] -> [cols, rows]. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  const block = 64; // cache-friendly tiles: a 50257 x 768 transpose stays fast
  for (let r0 = 0; r0 < rows; r0 += block)
    for (let c0 = 0; c0 < cols; c0 += block)
      for (let r = r0; r < Math.min(rows, r0 + block); r++)
        for (let c = c0; c < Math.min(cols, c0 + block); c++) out[c * rows + r] = src[r * cols + c];
  return out;
}

/** Heads of the published GPT-2 sizes, for files that carry no config. */
export const GPT2_HEADS_BY_WIDTH: Record<number, number> = { 768: 12, 1024: 16, 1280: 20, 1600: 25 };
