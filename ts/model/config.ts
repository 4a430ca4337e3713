// Model configurations: the book's chapter-5 model and the GPT-2 sizes.
export interface GPTConfig {
  vocabSize: number;
  contextLength: number;
  embDim: number;
  nHeads: number;
  nLayers: number;
  dropRate: number;
  qkvBias: boolean;
  /** Share the token embedding with the output head (GPT-2 does; the book trains untied). */
  tieWeights: boolean;
  /**
   * Initialisation: 'gpt2' (normal, std 0.02; residual projections scaled by
   * 1/sqrt(2 n_layers)) or 'pytorch' (PyTorch's module defaults, which the
   * book's code gets: embeddings N(0, 1), Linear U(+-1/sqrt(fan_in))).
   * Default 'gpt2'.
   */
  init?: InitScheme;
}

export type InitScheme = 'gpt2' | 'pytorch';

/** GPT_CONFIG_124M of the book's chapter 5 (context 256 to train on a laptop). */
export const BOOK_CONFIG: GPTConfig = {
  vocabSize: 50257,
  contextLength: 256,
  embDim: 768,
  nHeads: 12,
  nLayers: 12,
  dropRate: 0.1,
  qkvBias: false,
  tieWeights: false,
  // The book's run (loss 9.78 -> 0.39 in 10 epochs) depends on PyTorch's
  // default initialisation; GPT-2's plateaus near 5.8 on this text.
  init: 'pytorch',
};

const gpt2 = (embDim: number, nLayers: number, nHeads: number): GPTConfig => ({
  ...BOOK_CONFIG,
  contextLength: 1024,
  embDim,
  nLayers,
  nHeads,
  init: 'gpt2',
});

export const PRESETS: Record<string, GPTConfig> = {
  book: BOOK_CONFIG,
  'gpt2-small': gpt2(768, 12, 12),
  'gpt2-medium': gpt2(1024, 24, 16),
  'gpt2-large': gpt2(1280, 36, 20),
  'gpt2-xl': gpt2(1600, 48, 25),
};

export function resolveConfig(preset: string | undefined, overrides: Partial<GPTConfig> = {}): GPTConfig {
  const name = preset ?? 'book';
  const base = PRESETS[name];
  if (!base) throw new Error(`unknown model preset '${name}'; choose one of: ${Object.keys(PRESETS).join(', ')}`);
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  const config = { ...base, ...defined } as GPTConfig;
  validateConfig(config);
  return config;
}

export function validateConfig(c: GPTConfig): void {
  const positiveInt = (name: keyof GPTConfig) => {
    const v = c[name] as number;
    if (!Number.isInteger(v) || v <= 0) throw new Error(`model config: ${name} must be a positive integer (got ${v})`);
  };
  for (const k of ['vocabSize', 'contextLength', 'embDim', 'nHeads', 'nLayers'] as const) positiveInt(k);
  if (c.embDim % c.nHeads !== 0)
    throw new Error(`model config: embDim (${c.embDim}) must be divisible by nHeads (${c.nHeads})`);
  if (!(c.dropRate >= 0 && c.dropRate < 1)) throw new Error(`model config: dropRate must be in [0, 1) (got ${c.dropRate})`);
  if (c.init !== undefined && c.init !== 'gpt2' && c.init !== 'pytorch') throw new Error(`model config: init must be 'gpt2' or 'pytorch' (got ${c.init})`);
}

/** Parameter count without building the model. */
export function countParameters(c: GPTConfig): number {
  const C = c.embDim;
  const perBlock = 3 * C * C + (c.qkvBias ? 3 * C : 0) + C * C + C + 2 * C + 4 * C * C + 4 * C + 4 * C * C + C + 2 * C;
  return c.vocabSize * C + c.contextLength * C + c.nLayers * perBlock + 2 * C + (c.tieWeights ? 0 : c.vocabSize * C);
}
