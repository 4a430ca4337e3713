// `--weights` / `--init-from`: load a GPTModel from any supported source,
// detecting which it is:
//   * a gptcuda checkpoint (.tar), or a run directory (its latest checkpoint);
//   * an OpenAI GPT-2 folder (model.ckpt.index + data + hparams.json);
//   * a Hugging Face GPT-2 model.safetensors (file, or a folder with it and config.json).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { latestCheckpoint } from '../checkpoint/run-files.js';
import { fileHasMagic } from '../io/files.js';
import { loadCheckpoint, loadLatestCheckpoint } from '../checkpoint/checkpoint.js';
import { readSafetensorsFile, type NamedTensor } from '../checkpoint/safetensors.js';
import { BOOK_CONFIG, validateConfig, type GPTConfig } from '../model/config.js';
import { GPTModel } from '../model/gpt.js';
import { bfloat16ToFloat32, type Device, type Precision } from '../tensor/tensor.js';
import { GPT2_HEADS_BY_WIDTH, gpt2Tensors, transpose2d } from './gpt2-layout.js';
import { OPENAI_SIZE_OF_PRESET } from './openai-models.js';
import { float16ToFloat32, openTfCheckpoint } from './tf-checkpoint.js';

export type WeightsFormat = 'gptcuda-checkpoint' | 'openai-tf' | 'hf-safetensors';

export interface WeightsSource {
  format: WeightsFormat;
  /** The file or folder to read. */
  path: string;
}

export interface LoadedModel {
  model: GPTModel;
  source: WeightsSource;
}

export async function detectWeights(pathArg: string, options: { onWarning?: (message: string) => void } = {}): Promise<WeightsSource> {
  const path = resolve(pathArg);
  if (!existsSync(path)) throw new Error(`weights not found: ${pathArg} does not exist (train a model, or run \`gptcuda download --model 124M\`)`);
  if (statSync(path).isDirectory()) {
    const names = readdirSync(path);
    if (names.includes('model.ckpt.index') || names.includes('checkpoint')) return { format: 'openai-tf', path };
    if (names.includes('model.safetensors')) return { format: 'hf-safetensors', path: join(path, 'model.safetensors') };
    const latest = await latestCheckpoint(path, { onWarning: options.onWarning ?? ((m) => console.error(`warning: ${m}`)) });
    if (latest) return { format: 'gptcuda-checkpoint', path: latest.path };
    throw new Error(`${pathArg}: not a weights folder (expected an OpenAI folder with model.ckpt.index, a Hugging Face folder with model.safetensors, or a run directory with ckpt-step*.tar)`);
  }
  if (path.endsWith('.safetensors')) return { format: 'hf-safetensors', path };
  if (path.endsWith('.index')) return { format: 'openai-tf', path: dirname(path) };
  if (fileHasMagic(path, 'ustar', 257)) return { format: 'gptcuda-checkpoint', path };
  throw new Error(`${pathArg}: unrecognised weights file (expected a gptcuda checkpoint .tar, a .safetensors file, or an OpenAI folder)`);
}

/** `--model gpt2-small --models-dir models` -> models/124M, with a clear error when it is missing. */
export function resolvePresetWeights(preset: string, modelsDir: string): string {
  const size = OPENAI_SIZE_OF_PRESET[preset];
  if (!size) throw new Error(`--model ${preset} has no published weights; choose one of ${Object.keys(OPENAI_SIZE_OF_PRESET).join(', ')}`);
  const dir = join(modelsDir, size);
  if (!existsSync(dir)) throw new Error(`${dir} does not exist: run \`gptcuda download --model ${size} --dir ${modelsDir}\` first`);
  return dir;
}

export interface LoadModelOptions {
  device?: Device;
  allowNonFinite?: boolean;
  /** Storage precision of the loaded model (default fp32, whatever the weights were trained or saved in). */
  dtype?: Precision;
  /** At bf16: keep float32 master weights (default true; false for inference, half the memory). */
  masterWeights?: boolean;
}

type ModelPlacement = Pick<LoadModelOptions, 'device' | 'dtype' | 'masterWeights'>;

export async function loadModel(pathArg: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  // A run directory's damaged checkpoints are reported once, by loadLatestCheckpoint below.
  const source = await detectWeights(pathArg, { onWarning: () => {} });
  let model: GPTModel;
  if (source.format === 'gptcuda-checkpoint' && statSync(resolve(pathArg)).isDirectory()) {
    // A run directory: the newest checkpoint that passes full verification (same rule as --resume DIR).
    const latest = await loadLatestCheckpoint(resolve(pathArg), { ...placement(options), onWarning: (m) => console.error(`warning: ${m}`) });
    if (!latest) throw new Error(`${pathArg}: the run directory has no checkpoints`);
    source.path = latest.path;
    model = latest.model;
  } else if (source.format === 'gptcuda-checkpoint') model = (await loadCheckpoint(source.path, placement(options))).model;
  else if (source.format === 'openai-tf') model = await loadOpenAI(source.path, placement(options));
  else model = await loadHuggingFace(source.path, placement(options), { allowNonFinite: options.allowNonFinite });
  return { model, source };
}

const placement = (o: LoadModelOptions): ModelPlacement => ({ device: o.device, dtype: o.dtype ?? 'fp32', masterWeights: o.masterWeights });
const placed = (at: Device | ModelPlacement | undefined): ModelPlacement => (typeof at === 'string' ? { device: at } : at ?? {});

GPTModel.load = async (path, options = {}) => (await loadModel(path, options)).model;

/** Writes GPT-2 tensors into a fresh model one at a time (host memory stays near one tensor). */
async function fillFromGpt2(config: GPTConfig, at: ModelPlacement, read: (t: ReturnType<typeof gpt2Tensors>[number]) => Promise<Float32Array>): Promise<GPTModel> {
  const model = new GPTModel(config, { ...at, skipInit: true });
  try {
    for (const t of gpt2Tensors(config)) {
      let data = await read(t);
      const expected = t.shape.reduce((a, b) => a * b, 1);
      if (data.length !== expected) throw new Error(`tensor ${t.hf} has ${data.length} values, expected ${expected} for shape [${t.shape}]`);
      if (t.transpose) data = transpose2d(data, t.shape[0], t.shape[1]);
      let offset = 0;
      for (const name of t.ours) {
        const n = model.params.get(name).numel;
        model.params.writeParameter(name, data.subarray(offset, offset + n));
        offset += n;
      }
      // The book loads wte into the output head as an independent copy.
      if (t.openai === 'model/wte' && !config.tieWeights) model.params.writeParameter('out_head.weight', data);
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

function gpt2Config(hp: { n_vocab: number; n_ctx: number; n_embd: number; n_head: number; n_layer: number }): GPTConfig {
  const config: GPTConfig = {
    ...BOOK_CONFIG,
    vocabSize: hp.n_vocab,
    contextLength: hp.n_ctx,
    embDim: hp.n_embd,
    nHeads: hp.n_head,
    nLayers: hp.n_layer,
    qkvBias: true,
    tieWeights: false,
    init: 'gpt2',
  };
  validateConfig(config);
  return config;
}

export async function loadOpenAI(dir: string, at: Device | ModelPlacement = {}): Promise<GPTModel> {
  const hpPath = join(dir, 'hparams.json');
  if (!existsSync(hpPath)) throw new Error(`${dir}: hparams.json is missing (re-run \`gptcuda download\`)`);
  const hp = readJson(hpPath);
  const ckpt = await openTfCheckpoint(dir);
  try {
    // hparams.json's counts are checked against the tensors in the index before they drive any loop or allocation.
    if (!Number.isSafeInteger(hp?.n_layer) || hp.n_layer > ckpt.entries.length)
      throw new Error(`${hpPath}: n_layer ${JSON.stringify(hp?.n_layer)} does not fit the ${ckpt.entries.length} tensors in the checkpoint`);
    const wteEntry = ckpt.has('model/wte') ? ckpt.entry('model/wte') : undefined, wpeEntry = ckpt.has('model/wpe') ? ckpt.entry('model/wpe') : undefined;
    if (!wteEntry || !wpeEntry) throw new Error(`${dir}: tensor ${wteEntry ? 'model/wpe' : 'model/wte'} is missing from the checkpoint`);
    if (wteEntry.shape.join(',') !== `${hp.n_vocab},${hp.n_embd}`) throw new Error(`${hpPath}: n_vocab ${hp.n_vocab} / n_embd ${hp.n_embd} disagree with tensor model/wte of shape [${wteEntry.shape}]`);
    if (wpeEntry.shape.join(',') !== `${hp.n_ctx},${hp.n_embd}`) throw new Error(`${hpPath}: n_ctx ${hp.n_ctx} / n_embd ${hp.n_embd} disagree with tensor model/wpe of shape [${wpeEntry.shape}]`);
    if (ckpt.has(`model/h${hp.n_layer}/ln_1/g`)) throw new Error(`${hpPath}: n_layer is ${hp.n_layer} but the checkpoint has an extra layer (tensor model/h${hp.n_layer}/ln_1/g)`);
    let config: GPTConfig;
    try {
      config = gpt2Config(hp as Parameters<typeof gpt2Config>[0]);
    } catch (err) {
      throw new Error(`${hpPath}: ${(err as Error).message}`);
    }
    for (const t of gpt2Tensors(config)) if (!ckpt.has(t.openai)) throw new Error(`${dir}: tensor ${t.openai} (needed by hparams.json) is missing from the checkpoint`);
    return await fillFromGpt2(config, placed(at), async (t) => {
      const entry = ckpt.entry(t.openai);
      const got = entry.shape.filter((d, i) => !(i === 0 && d === 1 && entry.shape.length === t.shape.length + 1));
      if (got.join(',') !== t.shape.join(','))
        throw new Error(`${t.openai} has shape [${entry.shape}] but hparams.json implies [${t.shape}]`);
      const data = await ckpt.readTensor(t.openai);
      if (!(data instanceof Float32Array)) throw new Error(`${t.openai} is not a float tensor`);
      return data;
    });
  } finally {
    await ckpt.close();
  }
}

export async function loadHuggingFace(file: string, at: Device | ModelPlacement = {}, options: { allowNonFinite?: boolean } = {}): Promise<GPTModel> {
  const contents = await readSafetensorsFile(file);
  const tensors = new Map<string, NamedTensor>();
  for (const [name, t] of contents.tensors) tensors.set(name.replace(/^transformer\./, ''), t);
  const get = (name: string) => {
    const t = tensors.get(name);
    if (!t) throw new Error(`${file}: tensor ${name} is missing; is this a GPT-2 model.safetensors?`);
    return t;
  };
  const wte = get('wte.weight'), wpe = get('wpe.weight');
  const C = wte.shape[1];
  let nLayers = 0;
  while (tensors.has(`h.${nLayers}.ln_1.weight`)) nLayers++;
  const cfgPath = join(dirname(file), 'config.json');
  const hfConfig = existsSync(cfgPath) ? readJson(cfgPath) : null;
  const nHeads = hfConfig?.n_head ?? GPT2_HEADS_BY_WIDTH[C];
  if (!nHeads) throw new Error(`${file}: cannot tell the number of heads (no config.json beside it and width ${C} is not a GPT-2 size)`);
  // config.json must agree with the tensors actually present.
  const agree = (key: string, value: number, tensor: string) => {
    if (hfConfig && hfConfig[key] !== undefined && hfConfig[key] !== value)
      throw new Error(`${cfgPath}: ${key} is ${JSON.stringify(hfConfig[key])} but ${file} implies ${value} (tensor ${tensor})`);
  };
  agree('n_layer', nLayers, hfConfig?.n_layer > nLayers ? `h.${nLayers}.ln_1.weight missing` : `h.${nLayers - 1}.ln_1.weight`);
  agree('n_embd', C, 'wte.weight');
  agree('vocab_size', wte.shape[0]!, 'wte.weight');
  agree('n_positions', wpe.shape[0]!, 'wpe.weight');
  let config: GPTConfig;
  try {
    config = gpt2Config({ n_vocab: wte.shape[0], n_ctx: wpe.shape[0], n_embd: C, n_head: nHeads, n_layer: nLayers });
  } catch (err) {
    throw new Error(`${hfConfig ? cfgPath : file}: ${(err as Error).message}`);
  }
  const known = new Set(gpt2Tensors(config).map((t) => t.hf));
  known.add('lm_head.weight');
  for (const name of tensors.keys())
    if (!known.has(name) && !/^h\.\d+\.attn\.(bias|masked_bias)$/.test(name))
      throw new Error(`${file}: unexpected tensor ${name} for a GPT-2 with ${nLayers} layers`);
  const head = tensors.get('lm_head.weight');
  const tied = hfConfig?.tie_word_embeddings !== false;
  if (!tied && !head) throw new Error(`${cfgPath}: tie_word_embeddings is false but ${file} has no tensor lm_head.weight`);
  if (!options.allowNonFinite) {
    for (const [name, t] of tensors) {
      if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') continue;
      const v = floatData(t, { hf: name, shape: t.shape });
      for (let i = 0; i < v.length; i++)
        if (!Number.isFinite(v[i]!)) throw new Error(`${file}: tensor ${name} has a non-finite value (${v[i]}) at flat index ${i}; use a good copy (\`train --init-from\` imports it anyway with --allow-nonfinite)`);
    }
  }
  if (tied && head) {
    const a = floatData(head, { hf: 'lm_head.weight', shape: wte.shape }), b = floatData(wte, { hf: 'wte.weight', shape: wte.shape });
    for (let i = 0; i < a.length; i++)
      if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) throw new Error(`${cfgPath}: tie_word_embeddings is ${hfConfig ? 'true' : 'unset (true)'} but tensor lm_head.weight differs from wte.weight`);
  }
  const model = await fillFromGpt2(config, placed(at), async (t) => floatData(get(t.hf), t));
  // An untied head (tie_word_embeddings: false, as our export writes for the book's models).
  if (head && !tied) {
    if (head.shape.join(',') !== wte.shape.join(',')) throw new Error(`lm_head.weight has shape [${head.shape}], expected [${wte.shape}]`);
    model.params.get('out_head.weight').value.write(floatData(head, { hf: 'lm_head.weight', shape: wte.shape }));
  }
  return model;
}

function floatData(x: NamedTensor, t: { hf: string; shape: number[] }): Float32Array {
  if (x.shape.join(',') !== t.shape.join(',')) throw new Error(`${t.hf} has shape [${x.shape}], expected [${t.shape}]`);
  if (x.dtype === 'F32') return x.data as Float32Array;
  if (x.dtype === 'F16' || x.dtype === 'BF16') {
    const out = new Float32Array(x.data.length);
    (x.dtype === 'F16' ? float16ToFloat32 : bfloat16ToFloat32)(x.data as Uint16Array, out);
    return out;
  }
  throw new Error(`${t.hf} has dtype ${x.dtype}; expected a float type`);
}

/** A small JSON file (hparams.json, config.json); a damaged one is a one-line error naming it. */
function readJson(path: string): Record<string, any> {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message.replace(/\s+/g, ' ')})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}: not a JSON object`);
  return v as Record<string, any>;
}
