// `gptcuda eval`: the book's calc_loss_loader over every batch, and perplexity.
import type { Argv } from 'yargs';
import { createLoaders } from '../data/loader.js';
import { loadText } from '../data/text.js';
import { resolveDevice } from '../tensor/device.js';
import { loaderLoss, perplexity } from '../train/loss.js';
import { loadModel } from '../weights/load.js';
import { DEFAULT_DATA } from './train.js';
import { FLAG_ALIASES, checkEvalFlags, modelCommandOptions, modelSourcePath, type ModelCommandArgs } from './options.js';

export interface EvalArgs extends ModelCommandArgs {
  data?: string[];
  contextLength?: number;
  batchSize: number;
  trainRatio: number;
}

export function evalCommand(y: Argv): Argv<EvalArgs> {
  return modelCommandOptions<EvalArgs>(
    y,
    '$0 eval --weights <checkpoint-or-dir> [options]\n\nTrain and validation loss and perplexity over all windows of a text (the book\'s calc_loss_loader with every batch).',
    'model to evaluate: a checkpoint, a run directory, an OpenAI GPT-2 folder or a Hugging Face model.safetensors',
    (y) => y
      .option('data', { type: 'string', array: true, describe: 'text file(s) or directory (default: bundled the-verdict.txt)' })
      .option('context-length', { alias: FLAG_ALIASES['context-length'], type: 'number', describe: "window length (default and maximum: the model's context)" })
      .option('batch-size', { type: 'number', default: 2, describe: 'windows per batch' })
      .option('train-ratio', { type: 'number', default: 0.9, describe: 'fraction of the text counted as training (the rest as validation)' }),
  )
    .option('json', { type: 'boolean', default: false, describe: 'one JSON object on stdout' })
    .example('$0 eval --weights models/124M --context-length 256', "exercise 5.5: OpenAI's GPT-2 on the-verdict.txt")
    .example('$0 eval --weights runs/20261122-101500 --data notes.txt --json', 'the latest checkpoint of a run') as unknown as Argv<EvalArgs>;
}

export async function runEval(args: EvalArgs): Promise<Record<string, number>> {
  checkEvalFlags(args);
  const { device } = resolveDevice(args.device);
  const weights = modelSourcePath(args);
  if (!weights) throw new Error('eval needs --weights <checkpoint-or-dir>, or --model gpt2-small|... with downloaded weights');
  const { model } = await loadModel(weights, { device, dtype: args.dtype ?? 'fp32', masterWeights: false });
  try {
    const T = args.contextLength ?? model.config.contextLength;
    if (T > model.config.contextLength)
      throw new Error(`--context-length ${T} exceeds the model's context length ${model.config.contextLength}`);
    const paths = args.data ?? [DEFAULT_DATA];
    const loaders = createLoaders({
      text: loadText(paths.length === 1 ? paths[0] : paths),
      trainRatio: args.trainRatio,
      contextLength: T,
      batchSize: args.batchSize,
      shuffle: false,
      dropLast: false,
    });
    const trainLoss = loaderLoss(model, loaders.train);
    const valLoss = loaderLoss(model, loaders.val);
    const result = {
      train_loss: trainLoss,
      val_loss: valLoss,
      train_perplexity: perplexity(trainLoss),
      val_perplexity: perplexity(valLoss),
      train_tokens: loaders.train.numWindows * T,
      val_tokens: loaders.val.numWindows * T,
    };
    if (args.json) console.log(JSON.stringify(result));
    else {
      console.log(`Training loss: ${trainLoss.toFixed(4)} (perplexity ${result.train_perplexity.toFixed(2)}, ${result.train_tokens} tokens)`);
      console.log(`Validation loss: ${valLoss.toFixed(4)} (perplexity ${result.val_perplexity.toFixed(2)}, ${result.val_tokens} tokens)`);
    }
    return result;
  } finally {
    model.dispose();
  }
}
