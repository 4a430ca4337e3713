// `gptcuda download`, `gptcuda inspect`, `gptcuda export`: getting weights in and out.
import { readFileSync } from 'node:fs';
import type { Argv } from 'yargs';
import { readCheckpointArchive } from '../checkpoint/archive.js';
import { parseSafetensorsHeader } from '../checkpoint/safetensors.js';
import { formatBytes } from '../io/bytes.js';
import { open as openFile } from 'node:fs/promises';
import { resolveDevice } from '../tensor/device.js';
import { exportHuggingFace } from '../weights/export.js';
import { detectWeights, loadModel } from '../weights/load.js';
import { downloadOpenAIModel, type DownloadProgress } from '../weights/openai-download.js';
import { OPENAI_MODEL_SIZES, type OpenAIModelSize } from '../weights/openai-models.js';
import { openTfCheckpoint } from '../weights/tf-checkpoint.js';
import { Progress } from './progress.js';

export function downloadCommand(y: Argv): Argv {
  return y
    .usage(`$0 download --model ${OPENAI_MODEL_SIZES.join('|')} [--dir models] [--mirror URL]\n\nDownload OpenAI's GPT-2 weights (no TensorFlow needed): resumable, size- and CRC-checked.`)
    .option('model', { type: 'string', choices: [...OPENAI_MODEL_SIZES], demandOption: true, describe: 'GPT-2 size to download' })
    .option('dir', { type: 'string', default: 'models', describe: 'folder to put <size>/ in' })
    .option('mirror', { type: 'string', describe: 'another server to try: files come from <mirror>/<size>/<file>' })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable JSON on stdout' })
    .example('$0 download --model 124M', 'into models/124M')
    .example('$0 download --model 1558M --dir /data/gpt2', '6.2 GB; rerun to resume after an interruption');
}

export async function runDownload(args: { model: string; dir: string; mirror?: string; json: boolean }): Promise<void> {
  let bar: Progress | null = null;
  let current = '';
  const onProgress = (p: DownloadProgress) => {
    if (args.json) {
      if (p.phase !== 'download') console.log(JSON.stringify({ event: p.phase, file: p.file, bytes: p.bytes, total: p.total }));
      return;
    }
    if (p.file !== current || p.phase === 'verify' && !bar) {
      bar?.finish();
      current = p.file;
      bar = new Progress({ total: p.total ?? undefined, label: p.phase === 'verify' ? 'verify' : p.file, formatAmount: formatBytes, formatRate: (r) => `${formatBytes(r)}/s` });
    }
    if (p.phase === 'skipped') {
      bar?.log(`${p.file}: already complete`);
      return;
    }
    bar?.update(p.bytes);
    if (p.phase === 'done') {
      bar?.finish();
      bar = null;
      current = '';
    }
  };
  const result = await downloadOpenAIModel({ model: args.model as OpenAIModelSize, dir: args.dir, mirror: args.mirror, onProgress, onLog: (m) => (args.json ? undefined : console.error(m)) });
  (bar as Progress | null)?.finish();
  if (args.json) console.log(JSON.stringify({ event: 'done', dir: result.dir, verified: result.verified }));
  else console.log(`GPT-2 ${args.model} is in ${result.dir} (every tensor's CRC32C verified). Use it with --weights ${result.dir}`);
}

export function inspectCommand(y: Argv): Argv {
  return y
    .usage('$0 inspect <path> [--json]\n\nList the tensors (name, dtype, shape, bytes), the detected format and the model config of a weights file or folder.')
    .positional('path', { type: 'string', describe: 'checkpoint .tar, run directory, OpenAI folder or .safetensors' })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable JSON on stdout' })
    .example('$0 inspect models/124M', "OpenAI's checkpoint")
    .example('$0 inspect runs/20261122-101500/ckpt-step00000090.tar --json', 'a training checkpoint');
}

interface TensorRow {
  name: string;
  dtype: string;
  shape: number[];
  bytes: number;
}

export async function runInspect(args: { path: string; json: boolean }): Promise<void> {
  const source = await detectWeights(args.path);
  let rows: TensorRow[] = [];
  let config: unknown = null;
  if (source.format === 'openai-tf') {
    const ckpt = await openTfCheckpoint(source.path);
    rows = ckpt.entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, bytes: e.size }));
    await ckpt.close();
    try {
      config = JSON.parse(readFileSync(`${source.path}/hparams.json`, 'utf8'));
    } catch {
      config = null;
    }
  } else if (source.format === 'hf-safetensors') {
    const fh = await openFile(source.path, 'r');
    try {
      const header = await parseSafetensorsHeader(fh, { source: source.path });
      rows = header.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.dataOffsets[1] - t.dataOffsets[0] }));
    } finally {
      await fh.close();
    }
  } else {
    const archive = await readCheckpointArchive(source.path, { nonFinite: 'warn' });
    config = archive.manifest.config;
    for (const [file, tensors] of archive.files)
      for (const t of tensors.values()) rows.push({ name: `${file}:${t.name}`, dtype: t.dtype, shape: t.shape, bytes: t.data.byteLength });
  }
  const total = rows.reduce((a, r) => a + r.bytes, 0);
  if (args.json) {
    console.log(JSON.stringify({ format: source.format, path: source.path, config, tensors: rows, total_bytes: total }));
    return;
  }
  console.log(`${source.path}: ${source.format}, ${rows.length} tensors, ${formatBytes(total)}`);
  if (config) console.log(`config: ${JSON.stringify(config)}`);
  const width = Math.max(...rows.map((r) => r.name.length), 4);
  for (const r of rows) console.log(`${r.name.padEnd(width)}  ${r.dtype.padEnd(8)} [${r.shape.join(', ')}]  ${formatBytes(r.bytes)}`);
}

export function exportCommand(y: Argv): Argv {
  return y
    .usage('$0 export --weights <checkpoint> --format hf --out <dir>\n\nWrite model.safetensors + config.json that Hugging Face transformers\' GPT2LMHeadModel loads.')
    .option('weights', { type: 'string', demandOption: true, describe: 'checkpoint or run directory to export' })
    .option('format', { type: 'string', choices: ['hf'], default: 'hf', describe: 'output format (hf: Hugging Face transformers)' })
    .option('out', { type: 'string', demandOption: true, describe: 'folder to write model.safetensors and config.json to' })
    .example('$0 export --weights runs/20261122-101500 --format hf --out export/my-gpt', 'then GPT2LMHeadModel.from_pretrained("export/my-gpt")')
    .example('$0 export --weights runs/20261122-101500/ckpt-step00000090.tar --out export/step90', 'one particular checkpoint');
}

export async function runExport(args: { weights: string; out: string }): Promise<void> {
  const { model } = await loadModel(args.weights, { device: resolveDevice('cpu').device });
  try {
    const report = await exportHuggingFace(model, args.out);
    for (const n of report.notes) console.log(`note: ${n}`);
    console.log(`wrote ${report.files.join(' and ')}`);
  } finally {
    model.dispose();
  }
}
