// The GPT-2 models OpenAI released: their names, the presets that stand for
// them, and their shapes. Download, import hints and the CLI all read this list.

export type OpenAIModelSize = '124M' | '355M' | '774M' | '1558M';
export const OPENAI_MODEL_SIZES: readonly OpenAIModelSize[] = ['124M', '355M', '774M', '1558M'];

/** OpenAI's release names of the GPT-2 presets (folders made by `gptcuda download`). */
export const OPENAI_SIZE_OF_PRESET: Record<string, OpenAIModelSize> = {
  'gpt2-small': '124M',
  'gpt2-medium': '355M',
  'gpt2-large': '774M',
  'gpt2-xl': '1558M',
};

export interface Gpt2HParams {
  n_vocab: number;
  n_ctx: number;
  n_embd: number;
  n_head: number;
  n_layer: number;
}

/** The hparams.json of each released model. */
export const OPENAI_GPT2_HPARAMS: Record<OpenAIModelSize, Gpt2HParams> = {
  '124M': { n_vocab: 50257, n_ctx: 1024, n_embd: 768, n_head: 12, n_layer: 12 },
  '355M': { n_vocab: 50257, n_ctx: 1024, n_embd: 1024, n_head: 16, n_layer: 24 },
  '774M': { n_vocab: 50257, n_ctx: 1024, n_embd: 1280, n_head: 20, n_layer: 36 },
  '1558M': { n_vocab: 50257, n_ctx: 1024, n_embd: 1600, n_head: 25, n_layer: 48 },
};

/**
 * Parameters stored in an OpenAI GPT-2 checkpoint (no separate output head:
 * it is tied to wte). With C = n_embd:
 *   wte V*C + wpe T*C + ln_f 2C
 *   + per layer: ln_1, ln_2 4C; c_attn 3C^2+3C; attn c_proj C^2+C;
 *                c_fc 4C^2+4C; mlp c_proj 4C^2+C   => 12C^2 + 13C
 * 124M: 124,439,808   355M: 354,823,168   774M: 774,030,080   1558M: 1,557,611,200
 */
export function gpt2ParamCount(h: Pick<Gpt2HParams, 'n_vocab' | 'n_ctx' | 'n_embd' | 'n_layer'>): number {
  const C = h.n_embd;
  return h.n_vocab * C + h.n_ctx * C + 2 * C + h.n_layer * (12 * C * C + 13 * C);
}
