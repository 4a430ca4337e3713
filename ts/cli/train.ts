// `gptcuda train`: the book's chapter-5 pretraining run, from the command line.
import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { DiskWriteError } from '../checkpoint/atomic.js';
import { RunCheckpointer, loadResumePoint } from '../checkpoint/run-checkpoints.js';
import { createLoaders } from '../data/loader.js';
import { loadText } from '../data/text.js';
import { TOKEN_FILE_MAGIC } from '../data/token-file.js';
import { LLMC_SHARD_MAGIC, dataKind, expandDataGlobs, openTokenData } from '../data/shards.js';
import { PRESETS, resolveConfig, type GPTConfig } from '../model/config.js';
import { GPTModel } from '../model/gpt.js';
import { resolveDevice, type DeviceRequest } from '../tensor/device.js';
import type { Device, Precision } from '../tensor/tensor.js';
import { saveCheckpoint } from '../checkpoint/checkpoint.js';
import { PACKAGE_ROOT, native } from '../tensor/native.js';
import { BOOK_ADAMW } from '../train/optimizer.js';
import { assignLocalGpu, joinLaunchedJob, optionsForWorld, worldIndependentOptions, type Collective } from '../train/distributed.js';
import { createOptimizer, fullMaster, fullOptimizerState, loadMoments } from '../train/zero.js';
import { RunDirectory, claimForNewRun, newRunId } from '../checkpoint/run-dir.js';
import { EXIT_CODES, StopOnSignals } from './stop-signals.js';
import { Trainer, type TrainEvent, type TrainOptions, type TrainSummary } from '../train/trainer.js';
import { loadModel, resolvePresetWeights } from '../weights/load.js';
import { OPENAI_SIZE_OF_PRESET } from '../weights/openai-models.js';
import { formatDuration } from './progress.js';
import { TrainOutput } from './train-output.js';
import { FLAG_ALIASES, checkModelShape, checkTrainFlags, deviceLine, deviceOption, dtypeOption, hint } from './options.js';

export const DEFAULT_DATA = join(PACKAGE_ROOT, 'data', 'the-verdict.txt');

export interface TrainArgs {
  data?: string[];
  model?: string;
  initFrom?: string;
  allowNonfinite?: boolean;
  modelsDir?: string;
  resume?: string;
  contextLength?: number;
  embDim?: number;
  nLayers?: number;
  nHeads?: number;
  dropRate?: number;
  qkvBias?: boolean;
  init?: 'gpt2' | 'pytorch';
  epochs: number;
  maxSteps?: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  warmupSteps: number;
  minLr?: number;
  gradClip?: number;
  gradAccum: number;
  trainRatio: number;
  stride?: number;
  shuffle: boolean;
  seed: number;
  evalFreq: number;
  evalIter: number;
  samplePrompt: string;
  out?: string;
  device: DeviceRequest;
  json: boolean;
  saveEvery?: number;
  keepCheckpoints: number;
  overwrite?: boolean;
  skipNonfinite?: boolean;
  nproc?: number;
  zero?: number;
  dtype?: Precision;
  saveDtype?: Precision;
}

export function trainCommand(yargs: Argv): Argv<TrainArgs> {
  return dtypeOption(deviceOption(yargs
    .usage('$0 train [options]\n\nPretrain a GPT on your text, as chapter 5 of "Build a Large Language Model (From Scratch)".\nWith no options: the book\'s 124M-shaped model (context 256) on the bundled the-verdict.txt, 10 epochs, batch 2.')
    .option('data', { type: 'string', array: true, describe: "text file(s), a directory of .txt files, token files (gptcuda tokenize) or llm.c's *.bin shards; * and ? globs allowed (default: bundled the-verdict.txt)" })
    .option('model', { type: 'string', describe: 'preset: book, gpt2-small, gpt2-medium, gpt2-large, gpt2-xl (default: book)' })
    .option('models-dir', { type: 'string', describe: 'with --model gpt2-*: start from the GPT-2 weights downloaded there (as --init-from)' })
    .option('init-from', { type: 'string', describe: 'start from saved weights: a checkpoint, an OpenAI GPT-2 folder or a Hugging Face safetensors file' })
    .option('allow-nonfinite', { type: 'boolean', describe: 'with --init-from a Hugging Face model.safetensors: import NaN/Inf weights instead of refusing them (default: refuse)' })
    .option('resume', { type: 'string', describe: 'continue a run: a checkpoint .tar, or a run directory (its latest complete checkpoint); default: a new run' })
    .option('context-length', { alias: FLAG_ALIASES['context-length'], type: 'number', describe: "context length, model and data windows (default: the preset's, 256 for book, 1024 for gpt2-*)" })
    .option('emb-dim', { alias: FLAG_ALIASES['emb-dim'], type: 'number', describe: "embedding width (default: the preset's, 768 for book)" })
    .option('n-layers', { alias: FLAG_ALIASES['n-layers'], type: 'number', describe: "transformer blocks (default: the preset's, 12 for book)" })
    .option('n-heads', { alias: FLAG_ALIASES['n-heads'], type: 'number', describe: "attention heads; must divide --emb-dim (default: the preset's, 12 for book)" })
    .option('drop-rate', { alias: FLAG_ALIASES['drop-rate'], type: 'number', describe: 'dropout rate, in [0, 1) (default: 0.1)' })
    .option('qkv-bias', { type: 'boolean', describe: "bias in the Q/K/V projections (default: the preset's, off for book)" })
    .option('init', { type: 'string', choices: ['gpt2', 'pytorch'], describe: "initialisation (default: the book's PyTorch defaults for --model book, GPT-2's for gpt2-*)" })
    .option('epochs', { type: 'number', default: 10, describe: 'passes over the training data' })
    .option('max-steps', { alias: FLAG_ALIASES['max-steps'], type: 'number', describe: 'stop after this many optimizer updates (default: run all --epochs)' })
    .option('batch-size', { type: 'number', default: 2, describe: 'windows per micro-batch' })
    .option('lr', { alias: FLAG_ALIASES['lr'], type: 'number', default: BOOK_ADAMW.lr, describe: 'peak learning rate (AdamW)' })
    .option('weight-decay', { type: 'number', default: BOOK_ADAMW.weightDecay, describe: 'AdamW weight decay' })
    .option('warmup-steps', { type: 'number', default: 0, describe: 'linear learning-rate warmup (Appendix D)' })
    .option('min-lr', { type: 'number', describe: 'cosine-decay the learning rate to this after warmup, Appendix D (default: constant)' })
    .option('grad-clip', { type: 'number', describe: 'clip the global gradient norm to this (default: no clipping)' })
    .option('grad-accum', { type: 'number', default: 1, describe: 'micro-batches per optimizer update' })
    .option('train-ratio', { type: 'number', default: 0.9, describe: 'fraction of the text used for training (the rest validates)' })
    .option('stride', { type: 'number', describe: 'window stride in tokens (default: context length)' })
    .option('shuffle', { type: 'boolean', default: true, describe: 'shuffle training windows (--no-shuffle to keep order)' })
    .option('seed', { type: 'number', default: 123, describe: 'random seed (initialisation, shuffling, dropout)' })
    .option('eval-freq', { alias: FLAG_ALIASES['eval-freq'], type: 'number', default: 5, describe: 'evaluate every N optimizer updates' })
    .option('eval-iter', { alias: FLAG_ALIASES['eval-iter'], type: 'number', default: 5, describe: 'batches per evaluation' })
    .option('sample-prompt', { type: 'string', default: 'Every effort moves you', describe: "text continued after each epoch to show progress ('' for no samples)" })
    .option('out', { alias: FLAG_ALIASES['out'], type: 'string', describe: 'run directory: log, loss plot, checkpoints (default runs/<date-time>)' })
    .option('save-every', { type: 'number', describe: 'write a checkpoint every N updates (default: only at the end)' })
    .option('keep-checkpoints', { type: 'number', default: 3, describe: 'checkpoints to keep in the run directory' })
    .option('overwrite', { type: 'boolean', default: false, describe: "replace another run's checkpoints in the --out directory (default: refuse)" })
    .option('skip-nonfinite', { type: 'boolean', default: false, describe: 'skip updates with a NaN/Inf loss or gradient norm instead of stopping (default: stop)' })
    .option('save-dtype', { type: 'string', choices: ['fp32', 'bf16'], default: 'fp32', describe: 'bf16: also write model-bf16.tar at the end, the weights alone at half the size, for eval and generate (checkpoints stay float32)' })),
    'parameters, activations and gradients in float32 or bfloat16; bf16 keeps float32 master weights, moments and statistics (llm.c\'s recipe) (default: fp32; on --resume the run\'s own)')
    .option('json', { type: 'boolean', default: false, describe: 'JSON lines on stdout instead of text' })
    .option('nproc', { type: 'number', describe: 'data parallel on this machine: run N ranks under mpirun (each --batch-size; an update spans N x --grad-accum micro-batches)' })
    .option('zero', { type: 'number', choices: [0, 1], default: 0, describe: 'data parallel: 1 shards the AdamW moments across ranks (ZeRO-1), 0 keeps them whole on every rank' })
    .example('$0 train', "the book's run on the bundled text")
    .example('$0 train --data my-notes/ --epochs 3 --out runs/notes', 'train on every .txt in a folder')
    .example("$0 train --data 'fineweb10B/fineweb_train_*.bin' --model gpt2-small --max-steps 1000", "llm.c's token shards, streamed")
    .example('$0 train --n-layers 2 --emb-dim 64 --n-heads 4 --context-length 64 --max-steps 50', 'a tiny model, quickly')
    .example('$0 train --resume runs/notes', 'continue an interrupted run')
    .example('$0 train --dtype bf16 --save-dtype bf16 --out runs/bf16', 'mixed precision, plus a half-size model file')
    .example('$0 train --init-from models/124M --lr 5e-5 --epochs 1', "continue pretraining OpenAI's GPT-2") as unknown as Argv<TrainArgs>;
}

function timestamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** The bundled text is short: say so plainly, with a context length that fits. */
function explainShortDefaultText<T>(isDefault: boolean, contextLength: number, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (!isDefault || !(e instanceof Error) || !/^Not enough text/.test(e.message)) throw e;
    throw new Error(`the bundled the-verdict.txt is too short for context length ${contextLength}; use --context-length 256, or --data with more text`);
  }
}

/** The Trainer's settings: the flags', or on resume the checkpoint's. */
function trainOptions(args: TrainArgs, resumed: { trainOptions: TrainOptions | null } | null, world: Collective | null): TrainOptions {
  // A run saved with N ranks continues with this job's: the micro-batches of a step stay the same.
  const options: TrainOptions = resumed?.trainOptions ? optionsForWorld(resumed.trainOptions, world) : {
    epochs: args.epochs,
    maxSteps: args.maxSteps,
    optimizer: { ...BOOK_ADAMW, lr: args.lr, weightDecay: args.weightDecay },
    warmupSteps: args.warmupSteps,
    minLr: args.minLr,
    gradClip: args.gradClip,
    gradAccum: args.gradAccum,
    evalFreq: args.evalFreq,
    evalIter: args.evalIter,
    samplePrompt: args.samplePrompt,
  };
  if (resumed) {
    // A resumed run may be extended: a larger --epochs / --max-steps given now wins.
    if (args.epochs !== undefined && args.epochs > options.epochs) options.epochs = args.epochs;
    if (args.maxSteps !== undefined) options.maxSteps = args.maxSteps;
  }
  return options;
}

/** The --data paths (globs expanded) and, for text, the text; token files and shards are opened later. */
function resolveCorpus(paths: string[]): { dataPaths: string[]; isTokenData: boolean; text?: string } {
  const dataPaths = expandDataGlobs(paths);
  const kinds = dataPaths.map(dataKind);
  for (const [i, p] of dataPaths.entries()) {
    if (!existsSync(p) || !statSync(p).isFile()) continue;
    if (/\.tok$/i.test(p) && kinds[i] !== 'tok')
      throw new Error(`${p} is not a gptcuda token file (no ${TOKEN_FILE_MAGIC} header); make one with \`${hint(`tokenize <text files> --out ${p}`)}\`, or rename it if it is plain text`);
    if (/\.bin$/i.test(p) && kinds[i] !== 'shard')
      throw new Error(`${p} is not an llm.c token shard (its first int32 is not ${LLMC_SHARD_MAGIC}); give llm.c's *.bin shards, gptcuda .tok files or text`);
  }
  // Token files (from `gptcuda tokenize`) and llm.c shards are streamed (opened once the model's
  // vocabulary is known, so a bad id in a token file fails before training); text is read whole.
  const isTokenData = kinds.some((k) => k !== 'text');
  const text = isTokenData ? undefined : loadText(dataPaths.length === 1 ? dataPaths[0] : dataPaths);
  return { dataPaths, isTokenData, text };
}

/**
 * The model to train: the resumed checkpoint's, the --init-from weights, or
 * the config of a new one (built only once the data is known to be usable:
 * initialisation takes a while for the larger presets).
 */
async function resolveModel(args: TrainArgs, resumedModel: GPTModel | null, device: Device): Promise<{ loadedModel: GPTModel | null; newConfig: GPTConfig | null }> {
  let loadedModel: GPTModel | null = null;
  let newConfig: GPTConfig | null = null;
  const initFrom = args.initFrom ?? (args.modelsDir && args.model ? resolvePresetWeights(args.model, args.modelsDir) : undefined);
  if (resumedModel) loadedModel = resumedModel;
  else if (initFrom) {
    loadedModel = (await loadModel(initFrom, { device, dtype: args.dtype ?? 'fp32', allowNonFinite: args.allowNonfinite })).model;
    if (args.dropRate !== undefined) (loadedModel.config as GPTConfig).dropRate = args.dropRate;
    loadedModel.dropoutSeed = args.seed;
  } else {
    newConfig = resolveConfig(args.model, {
      contextLength: args.contextLength,
      embDim: args.embDim,
      nLayers: args.nLayers,
      nHeads: args.nHeads,
      dropRate: args.dropRate,
      qkvBias: args.qkvBias,
      init: args.init,
    });
  }
  return { loadedModel, newConfig };
}

export async function runTrain(args: TrainArgs): Promise<TrainSummary> {
  checkTrainFlags(args);
  if (!args.initFrom && !args.resume && !(args.modelsDir && args.model)) {
    const preset = PRESETS[args.model ?? 'book'];
    if (preset) checkModelShape(args, preset);
  }
  assignLocalGpu();
  const { device, reason } = resolveDevice(args.device);
  // ---- data parallel (ts/train/distributed.ts): only rank 0 prints, logs and writes the run directory.
  const world = joinLaunchedJob();
  const isRoot = world?.isRoot ?? true;
  if (world && args.nproc !== undefined && args.nproc !== world.size) throw new Error(`--nproc ${args.nproc} but the launcher started ${world.size} ranks; drop --nproc under mpirun or srun`);
  world?.useNccl(device);
  // ----
  if (!args.resume && !args.initFrom && !args.modelsDir && args.model?.startsWith('gpt2-') && !args.json && isRoot)
    console.log(`training ${args.model} from scratch (use --init-from models/${OPENAI_SIZE_OF_PRESET[args.model] ?? '124M'} for OpenAI's weights)`);

  // Resuming restores model, optimizer, data position and settings from the checkpoint.
  const resumePoint = args.resume ? await loadResumePoint(args.resume, { device, dtype: args.dtype, onWarning: (m) => console.error(`warning: ${m}`) }) : null;
  const resumePath = resumePoint?.path;
  const resumed = resumePoint?.checkpoint ?? null;
  const runDir = resolve(args.out ?? (args.resume && statSync(resolve(args.resume)).isDirectory() ? args.resume : join('runs', timestamp())));
  // A run directory belongs to one run: its lock, and no other run's checkpoints.
  const runId = (resumed?.manifest.run_id as string | undefined) ?? (resumed ? undefined : newRunId());
  const dir = isRoot ? await RunDirectory.open(runDir) : null;
  let stepsDone = false;
  try {
    if (isRoot && runId !== undefined && (!resumePath || dirname(resumePath) !== runDir)) {
      const replaced = await claimForNewRun(runDir, runId, args.overwrite === true);
      if (replaced.length) {
        for (const n of ['log.jsonl', 'loss-plot.svg']) rmSync(join(runDir, n), { force: true });
        console.error(`--overwrite: removed ${replaced.length} checkpoint(s) of the previous run in ${runDir}`);
      }
    }
    return await trainInDir();
  } catch (err) {
    if (!stepsDone) dir?.removeIfUnused();
    throw err;
  } finally {
    dir?.release();
  }

  async function trainInDir(): Promise<TrainSummary> {

    // Data settings come from the checkpoint on resume, so the order continues.
    const dataCfg = resumed ? (resumed.manifest.data as Record<string, unknown>) : null;
    const corpus = resolveCorpus(args.data ?? (dataCfg?.paths as string[] | undefined) ?? [DEFAULT_DATA]);
    const { dataPaths } = corpus;
    const { loadedModel, newConfig } = await resolveModel(args, resumed?.model ?? null, device);
    // Every id of a token file is checked against this model's vocabulary at open, so a bad one fails
    // before training with the file and offset (shards are checked as their windows are read).
    const tokenData = corpus.isTokenData ? openTokenData(dataPaths, { vocabSize: (loadedModel?.config ?? newConfig!).vocabSize }) : null;
    const modelContext = (loadedModel?.config ?? newConfig!).contextLength;
    const windowLength = (dataCfg?.context_length as number | undefined) ?? Math.min(args.contextLength ?? modelContext, modelContext);
    if (args.contextLength !== undefined && args.contextLength > modelContext)
      throw new Error(`--context-length ${args.contextLength} exceeds the model's context length ${modelContext}`);
    const loaderConfig = {
      paths: dataPaths.map((p) => resolve(p)),
      train_ratio: (dataCfg?.train_ratio as number | undefined) ?? args.trainRatio,
      context_length: windowLength,
      stride: (dataCfg?.stride as number | undefined) ?? args.stride ?? windowLength,
      batch_size: (dataCfg?.batch_size as number | undefined) ?? args.batchSize,
      shuffle: (dataCfg?.shuffle as boolean | undefined) ?? args.shuffle,
      seed: (dataCfg?.seed as number | undefined) ?? args.seed,
    };
    const loaders = explainShortDefaultText(args.data === undefined && !dataCfg, windowLength, () => createLoaders({
      ...(tokenData ? { ids: tokenData } : { text: corpus.text, textSource: dataPaths.join(', ') }),
      trainRatio: loaderConfig.train_ratio,
      contextLength: loaderConfig.context_length,
      stride: loaderConfig.stride,
      batchSize: loaderConfig.batch_size,
      shuffle: loaderConfig.shuffle,
      seed: loaderConfig.seed,
    }));
    const model: GPTModel = loadedModel ?? new GPTModel(newConfig!, { seed: args.seed, device, dtype: args.dtype ?? 'fp32' });

    const options = trainOptions(args, resumed, world);
    if (world) {
      // Every rank starts from rank 0's weights: the master, and at bf16 the exact bf16 copy (a resume's stochastic rounding).
      // Before the optimizer: ZeRO-1 at bf16 keeps only the rank's part of the master.
      if (model.params.master && model.params.master !== model.params.flat) world.broadcast(model.params.master);
      world.broadcast(model.params.flat);
    }
    const trainer = new Trainer(model, loaders.train, loaders.val, options, createOptimizer(model.params, options.optimizer, world, args.zero ?? 0, model.dropoutSeed));
    if (world) trainer.collective = world;
    if (resumed?.trainState && resumed.optimizer) {
      loadMoments(trainer.optimizer, resumed.optimizer.m, resumed.optimizer.v);
      trainer.restore(resumed.trainState, resumed.optimizer.step);
    }

    const out = new TrainOutput(runDir, { json: args.json, writes: isRoot });
    const header = {
      event: 'start',
      device,
      device_reason: reason,
      dtype: model.dtype,
      parameters: model.numParameters,
      config: model.config,
      train_tokens: loaders.trainTokens,
      val_tokens: loaders.valTokens,
      train_batches: loaders.train.numBatches,
      val_batches: loaders.val.numBatches,
      total_steps: trainer.totalSteps,
      run_dir: runDir,
      resumed_from: resumePath ?? null,
      step: trainer.state.step,
      ...(world ? { ranks: world.size, mpi: world.version, ...(world.ncclVersion ? { nccl: world.ncclVersion } : {}) } : {}),
    };
    out.record(header);
    const say = (line: string) => out.say(line);
    if (world) say(world.describe(device));
    say(`gptcuda train: ${(model.numParameters / 1e6).toFixed(1)}M parameters`);
    say(deviceLine(device, args.device, native().backends().cuda.reason) + (model.dtype === 'bf16' ? ', bf16 (float32 master weights)' : ''));
    say(`data: ${loaders.trainTokens} training tokens (${loaders.train.numBatches} batches), ${loaders.valTokens} validation tokens (${loaders.val.numBatches} batches)`);
    if (resumePath) say(`resuming from ${resumePath} at step ${trainer.state.step}`);
    say(`run directory: ${runDir}`);

    out.startProgress(trainer.totalSteps, trainer.state.step, loaders.train.batchSize * windowLength * trainer.microBatchesPerStep);
    const onEvent = (e: TrainEvent) => {
      if (e.event === 'step') stepsDone = true;
      out.event(e);
    };
    const stop = new StopOnSignals(trainer, world !== null, (notice) => out.notice(notice));

    const checkpoints = new RunCheckpointer({
      runDir, model, options, seed: args.seed, loaderConfig, runId, keep: args.keepCheckpoints,
      // Only rank 0 writes the run directory; the other ranks just follow the same steps.
      writes: isRoot,
      // ZeRO-1: gathering the moments (and at bf16 the master) takes every rank; the saved options hold no world size.
      moments: (t) => fullOptimizerState(t.optimizer),
      trainOptions: worldIndependentOptions(options, world),
      onSaved: async (record) => {
        out.record(record);
        await out.writePlot(trainer.state);
      },
    });
    const checkpoint = checkpoints.save;

    /**
     * One line for an error during training: the cause, then where the work
     * is. An error after the first step (a bad token) keeps the last
     * completed step; a save the disk refused is not retried (the disk is
     * still full or read-only), the last checkpoint written is named instead.
     */
    async function afterFailedStep(err: unknown): Promise<string> {
      const cause = (err as Error).message;
      const readOnly = err instanceof DiskWriteError && err.code === 'EROFS';
      // A resumed run's checkpoint counts until this invocation writes one (it may lie outside the run directory).
      const { lastSaved, savedStep, saveFailure } = checkpoints;
      const lastPath = lastSaved ?? resumePath;
      const from = lastSaved || (resumePath && dirname(resumePath) === runDir) ? runDir : (resumePath ?? runDir);
      const resume = `resume with: ${hint(`train --resume ${from}${readOnly ? ' --out <a writable directory>' : ''}`)}`;
      const last = () => (lastPath ? `; the last checkpoint is ${lastPath} (step ${lastSaved ? savedStep : startStep}); ${resume}` : '; no checkpoint of this run was written');
      if (!stepsDone) return lastPath ? cause + last() : cause;
      // Not with ZeRO-1: the other ranks, not failing, would not join the gather of the moments.
      if (savedStep === trainer.state.step || saveFailure !== undefined || (world && args.zero === 1)) return cause + last();
      try {
        await checkpoint(trainer, 'stop');
        return `${cause}; the checkpoint of step ${trainer.state.step} (the last completed) was written to ${checkpoints.lastSaved}; ${resume}`;
      } catch (err2) {
        return `${cause}; no checkpoint of step ${trainer.state.step} could be written (${(err2 as Error).message})${last()}`;
      }
    }

    const startStep = trainer.state.step;
    const startTokens = trainer.state.tokensSeen;
    let summary: TrainSummary;
    try {
      summary = await trainer.run({
        onEvent,
        onCheckpoint: checkpoint,
        saveEvery: args.saveEvery,
        nonFinite: args.skipNonfinite ? 'skip' : 'stop',
        onNonFinite: (e) => {
          out.logOnly(e as unknown as Record<string, unknown>);
          if (isRoot) console.error(`step ${e.step}: ${e.what}; ${e.action === 'skip' ? 'update skipped (--skip-nonfinite)' : 'stopping before the update'}`);
        },
      });
    } catch (err) {
      throw new Error(await afterFailedStep(err), { cause: err });
    } finally {
      stop.dispose();
      out.finishProgress();
    }
    if (stop.signal) process.exitCode = EXIT_CODES[stop.signal] ?? 1;
    if (summary.non_finite) {
      const nf = summary.non_finite;
      model.dispose();
      trainer.optimizer.dispose();
      world?.finish();
      throw new Error(
        `training stopped at step ${nf.step}: ${nf.what} (the update was not applied); the last good step's weights (step ${summary.steps}) are saved in ${checkpoints.lastSaved}. ` +
          `Lower --lr, add --grad-clip, or pass --skip-nonfinite to skip such updates; resume with: ${hint(`train --resume ${runDir}`)}`,
      );
    }
    await out.writePlot(trainer.state);
    // ZeRO-1 at bf16: every rank takes part in gathering the master.
    const master = args.saveDtype === 'bf16' ? fullMaster(trainer.optimizer) : undefined;
    if (args.saveDtype === 'bf16' && isRoot) {
      const path = join(runDir, 'model-bf16.tar');
      await saveCheckpoint(path, { model, saveDtype: 'bf16', ...(master ? { master } : {}), ...(runId !== undefined ? { extra: { run_id: runId } } : {}) });
      out.record({ event: 'export', dtype: 'bf16', path });
      say(`bf16 weights: ${path}`);
    }
    out.record({ event: 'done', ...summary, run_dir: runDir });
    if (out.isJson) {
      if (summary.stopped_early && isRoot) console.error(`stopped early; resume with: ${hint(`train --resume ${runDir}`)}`);
    } else {
      const runTotal = startStep > 0 ? `; run total: ${summary.steps} steps, ${summary.tokens_seen} tokens` : '';
      say(`done: this invocation: ${summary.steps - startStep} steps, ${summary.tokens_seen - startTokens} tokens in ${formatDuration(summary.seconds)} (${Math.round(summary.tokens_per_s)} tok/s)${runTotal}`);
      say(`final train loss ${summary.final_train_loss.toFixed(3)}, val loss ${summary.final_val_loss.toFixed(3)}`);
      say(`loss plot: ${out.plotPath}; log: ${out.logPath}`);
      if (summary.stopped_early) say(`stopped early; resume with: ${hint(`train --resume ${runDir}`)}`);
    }
    model.dispose();
    trainer.optimizer.dispose();
    // Every rank got here after the same step, rank 0's output written: the job ends normally.
    world?.finish();
    return summary;
  }
}
