// Training checkpoints: model weights, AdamW moments and the trainer's state
// in one archive (see archive.ts for the on-disk format and its guarantees).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GPTModel } from '../model/gpt.js';
import { validateConfig, type GPTConfig } from '../model/config.js';
import { Tensor, bfloat16BitsToFloat32, type Device, type Precision } from '../tensor/tensor.js';
import * as ops from '../tensor/ops.js';
import { PACKAGE_ROOT } from '../tensor/native.js';
import type { TrainOptions, TrainState } from '../train/trainer.js';
import { CheckpointError, readCheckpointArchive, writeCheckpointArchive, type CheckpointManifest } from './archive.js';
import { listCheckpoints } from './run-files.js';
import { SafetensorsError } from './safetensors.js';
import type { NamedTensor } from './safetensors.js';

export const LIBRARY_VERSION: string = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')).version;

/** The book's config keys, as stored in manifests and exported configs. */
export interface StoredConfig {
  vocab_size: number;
  context_length: number;
  emb_dim: number;
  n_heads: number;
  n_layers: number;
  drop_rate: number;
  qkv_bias: boolean;
  tie_weights: boolean;
  init?: 'gpt2' | 'pytorch';
}

export const toStoredConfig = (c: GPTConfig): StoredConfig => ({
  vocab_size: c.vocabSize,
  context_length: c.contextLength,
  emb_dim: c.embDim,
  n_heads: c.nHeads,
  n_layers: c.nLayers,
  drop_rate: c.dropRate,
  qkv_bias: c.qkvBias,
  tie_weights: c.tieWeights,
  init: c.init,
});

export function fromStoredConfig(s: StoredConfig): GPTConfig {
  if (!s || typeof s !== 'object') throw new Error('checkpoint manifest has no model config');
  const c: GPTConfig = {
    vocabSize: s.vocab_size,
    contextLength: s.context_length,
    embDim: s.emb_dim,
    nHeads: s.n_heads,
    nLayers: s.n_layers,
    dropRate: s.drop_rate,
    qkvBias: s.qkv_bias,
    tieWeights: s.tie_weights ?? false,
    init: s.init ?? 'gpt2',
  };
  validateConfig(c);
  return c;
}

export interface OptimizerSnapshot {
  step: number;
  m: Float32Array;
  v: Float32Array;
  hyper: TrainOptions['optimizer'];
}

export interface SaveCheckpointInput {
  model: GPTModel;
  /**
   * Precision of the saved weights: fp32 (default; at bf16 the master weights,
   * so a run resumes exactly and exports as usual) or bf16 (rounded to nearest
   * even: a half-size file for inference; refused with optimizer state).
   */
  saveDtype?: Precision;
  optimizer?: { step: number; m: Float32Array; v: Float32Array; hyper: TrainOptions['optimizer'] };
  /** The full float32 master weights where the model keeps only its ZeRO-1 part of them (gathered by every rank). */
  master?: Float32Array;
  train?: { state: TrainState; options: TrainOptions; seed: number; loaderConfig: Record<string, unknown> };
  extra?: Record<string, unknown>;
}

function modelTensors(model: GPTModel, flat: Float32Array | Uint16Array): NamedTensor[] {
  return model.params.params.map((p) => ({
    name: p.name,
    dtype: flat instanceof Float32Array ? 'F32' : 'BF16',
    shape: p.shape,
    data: flat.subarray(p.offset, p.offset + p.numel),
  }));
}

/** All parameters rounded to bf16 (nearest even, on the model's device): their bit patterns. */
function bf16Weights(model: GPTModel, master?: Float32Array): Uint16Array {
  const { params } = model;
  if (params.precision === 'bf16' && !params.master) return params.readStorageBits()!;
  const rounded = Tensor.zeros([params.numel], { device: model.device, dtype: 'bfloat16' });
  const given = master ? Tensor.from(master, [master.length], { device: model.device }) : null;
  try {
    ops.convert(rounded, given ?? params.master ?? params.flat);
    return rounded.handle.read() as Uint16Array;
  } finally {
    rounded.dispose();
    given?.dispose();
  }
}

/** Writes model (+ optimizer + trainer state) atomically to `path`. */
export async function saveCheckpoint(path: string, input: SaveCheckpointInput): Promise<CheckpointManifest> {
  const { model } = input;
  const saveDtype = input.saveDtype ?? 'fp32';
  if (saveDtype === 'bf16' && input.optimizer)
    throw new Error('saveCheckpoint: bf16 weights are for inference only; a training checkpoint keeps float32 weights to resume exactly');
  if (input.master && input.master.length !== model.params.numel)
    throw new Error(`saveCheckpoint: master has ${input.master.length} values; the model has ${model.params.numel} parameters`);
  const flat = saveDtype === 'bf16' ? bf16Weights(model, input.master) : (input.master ?? model.params.readAll());
  const files = [{ name: 'model.safetensors', tensors: modelTensors(model, flat) }];
  if (input.optimizer) {
    const storage = model.params.readStorageBits();
    files.push({
      name: 'optimizer.safetensors',
      tensors: [
        { name: 'exp_avg', dtype: 'F32', shape: [input.optimizer.m.length], data: input.optimizer.m },
        { name: 'exp_avg_sq', dtype: 'F32', shape: [input.optimizer.v.length], data: input.optimizer.v },
        // The bf16 copy came from the master by stochastic rounding; kept so that a resume continues bit for bit.
        ...(storage ? [{ name: 'params_bf16', dtype: 'BF16' as const, shape: [storage.length], data: storage }] : []),
      ],
    });
  }
  const manifest: Record<string, unknown> = {
    library: 'gptcuda',
    library_version: LIBRARY_VERSION,
    created: new Date().toISOString(),
    tokenizer: 'gpt2',
    config: toStoredConfig(model.config),
    dtype: model.dtype,
    weights_dtype: saveDtype,
    dropout: { seed: model.dropoutSeed, counter: model.dropoutCounter },
    ...(input.optimizer ? { optimizer: { name: 'AdamW', step: input.optimizer.step, ...input.optimizer.hyper } } : {}),
    ...(input.train
      ? {
          step: input.train.state.step,
          epoch: input.train.state.epoch,
          tokens_seen: input.train.state.tokensSeen,
          seed: input.train.seed,
          train_state: input.train.state,
          train_options: input.train.options,
          data: input.train.loaderConfig,
        }
      : {}),
    ...input.extra,
  };
  return writeCheckpointArchive(path, { manifest, files });
}

// model.save(): model/ sits below this layer and cannot import it, so the method is attached here.
declare module '../model/gpt.js' {
  interface GPTModel {
    /** Saves the weights (and config) as a gptcuda checkpoint archive; `dtype: 'bf16'` for a half-size file. */
    save(path: string, options?: { dtype?: Precision }): Promise<void>;
  }
}
GPTModel.prototype.save = async function (this: GPTModel, path: string, options: { dtype?: Precision } = {}): Promise<void> {
  await saveCheckpoint(path, { model: this, saveDtype: options.dtype });
};

export interface LoadedCheckpoint {
  model: GPTModel;
  manifest: CheckpointManifest;
  optimizer: OptimizerSnapshot | null;
  trainState: TrainState | null;
  trainOptions: TrainOptions | null;
  warnings: string[];
}

/**
 * Reads and fully verifies a checkpoint before building anything: a damaged
 * file never yields a half-loaded model.
 */
export interface LoadCheckpointOptions {
  device?: Device;
  nonFinite?: 'error' | 'warn';
  /** Storage precision of the model (default: the precision it was trained in, from the manifest). */
  dtype?: Precision;
  /** At bf16: keep float32 master weights (default true; false for inference only). */
  masterWeights?: boolean;
}

export async function loadCheckpoint(path: string, options: LoadCheckpointOptions = {}): Promise<LoadedCheckpoint> {
  const archive = await readCheckpointArchive(path, { nonFinite: options.nonFinite ?? 'error' });
  const manifest = archive.manifest;
  let config: GPTConfig;
  try {
    config = fromStoredConfig(manifest.config as StoredConfig);
  } catch (err) {
    throw new CheckpointError('BAD_MANIFEST', `${path}: ${(err as Error).message}`);
  }
  const weights = archive.files.get('model.safetensors');
  if (!weights) throw new CheckpointError('MISMATCH', `${path}: checkpoint has no model.safetensors`);
  // The config's counts are checked against the tensors present before they drive any loop or allocation.
  let stored = 0;
  for (const t of weights.values()) stored += t.data.length;
  if (config.nLayers > weights.size || config.vocabSize * config.embDim > stored || config.contextLength * config.embDim > stored)
    throw new CheckpointError('MISMATCH', `${path}: the manifest's model config (${config.nLayers} layers, vocab ${config.vocabSize}, context ${config.contextLength}, width ${config.embDim}) needs more than the ${weights.size} tensors (${stored} values) in model.safetensors`);
  const specs = GPTModel.parameterSpecs(config);
  const expected = new Set(specs.map((s) => s.name));
  for (const name of weights.keys())
    if (!expected.has(name)) throw new CheckpointError('MISMATCH', `${path}: unexpected tensor '${name}' for the model config in the manifest`);
  let total = 0;
  for (const s of specs) {
    const t = weights.get(s.name);
    if (!t) throw new CheckpointError('MISMATCH', `${path}: tensor '${s.name}' is missing from model.safetensors`);
    if (t.dtype !== 'F32' && t.dtype !== 'BF16') throw new CheckpointError('MISMATCH', `${path}: tensor '${s.name}' is ${t.dtype}, expected F32 or BF16`);
    if (t.shape.join(',') !== s.shape.join(','))
      throw new CheckpointError('MISMATCH', `${path}: tensor '${s.name}' has shape [${t.shape}] but the config needs [${s.shape}]`);
    total += t.data.length;
  }
  const flat = new Float32Array(total);
  let offset = 0;
  for (const s of specs) {
    const t = weights.get(s.name)!;
    const data = t.dtype === 'BF16' ? bfloat16BitsToFloat32(t.data as Uint16Array) : (t.data as Float32Array);
    flat.set(data, offset);
    offset += data.length;
  }
  let optimizer: OptimizerSnapshot | null = null;
  const opt = archive.files.get('optimizer.safetensors');
  if (opt) {
    const m = opt.get('exp_avg')?.data, v = opt.get('exp_avg_sq')?.data;
    if (!(m instanceof Float32Array) || !(v instanceof Float32Array) || m.length !== total || v.length !== total)
      throw new CheckpointError('MISMATCH', `${path}: optimizer.safetensors does not match the model (${total} parameters)`);
    const info = manifest.optimizer as { step: number } & TrainOptions['optimizer'];
    optimizer = { step: info.step, m, v, hyper: { lr: info.lr, beta1: info.beta1, beta2: info.beta2, eps: info.eps, weightDecay: info.weightDecay } };
  }
  const trainedIn = manifest.dtype === 'bf16' ? 'bf16' : 'fp32';
  const dtype = options.dtype ?? trainedIn;
  const storage = opt?.get('params_bf16');
  if (storage && (storage.dtype !== 'BF16' || storage.data.length !== total))
    throw new CheckpointError('MISMATCH', `${path}: params_bf16 in optimizer.safetensors does not match the model (${total} parameters)`);
  const dropout = manifest.dropout as { seed: number; counter: number } | undefined;
  const model = new GPTModel(config, { device: options.device, skipInit: true, seed: dropout?.seed, dtype, masterWeights: options.masterWeights });
  model.params.writeAll(flat);
  // A bf16 run continues from the exact bf16 parameters it had (stochastically rounded, not nearest).
  if (dtype === 'bf16' && trainedIn === 'bf16' && storage) model.params.writeStorageBits(storage.data as Uint16Array);
  model.dropoutCounter = dropout?.counter ?? 0;
  return {
    model,
    manifest,
    optimizer,
    trainState: (manifest.train_state as TrainState | undefined) ?? null,
    trainOptions: (manifest.train_options as TrainOptions | undefined) ?? null,
    warnings: archive.warnings,
  };
}

export interface LoadedLatestCheckpoint extends LoadedCheckpoint {
  /** The archive that was loaded. */
  path: string;
}

function isDamage(err: unknown): boolean {
  return err instanceof SafetensorsError || (err instanceof CheckpointError && err.code !== 'NEWER_VERSION');
}

/**
 * Loads the newest intact checkpoint of a run directory (what `--resume DIR`,
 * `eval DIR` and `generate DIR` use). Each newer one that fails the full
 * verification (truncated, a flipped byte, an edited manifest, NaN weights, a
 * config that disagrees with its tensors) is skipped with a warning
 * (`onWarning`, default process.emitWarning). Returns null when the directory
 * has no checkpoints; throws when none is usable, or when the newest intact
 * candidate was written by a newer gptcuda.
 */
export async function loadLatestCheckpoint(
  runDir: string,
  options: Omit<LoadCheckpointOptions, 'nonFinite'> & { onWarning?: (message: string) => void } = {},
): Promise<LoadedLatestCheckpoint | null> {
  const onWarning = options.onWarning ?? ((m: string) => process.emitWarning(m, { code: 'GPTCUDA_CHECKPOINT_SKIPPED' }));
  const all = await listCheckpoints(runDir);
  if (all.length === 0) return null;
  const skipped: string[] = [];
  for (let i = all.length - 1; i >= 0; i--) {
    const c = all[i]!;
    try {
      const loaded = await loadCheckpoint(c.path, { device: options.device, dtype: options.dtype, masterWeights: options.masterWeights });
      return { ...loaded, path: c.path, warnings: [...skipped, ...loaded.warnings] };
    } catch (err) {
      if (!isDamage(err)) throw err;
      const msg = `skipping damaged checkpoint ${c.name}: ${(err as Error).message.split('\n')[0]}`;
      skipped.push(msg);
      onWarning(msg);
    }
  }
  throw new CheckpointError('CORRUPT', `${runDir}: none of the ${all.length} checkpoints is usable:\n  ${skipped.join('\n  ')}`);
}
