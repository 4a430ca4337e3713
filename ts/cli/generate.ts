// `gptcuda generate`: stream text from a model to stdout.
import type { Argv } from 'yargs';
import { EOT_ID, textToTokenIds, tokenIdsToText } from '../data/tokenizer.js';
import { stream } from '../generate/generate.js';
import { resolveDevice } from '../tensor/device.js';
import { loadModel } from '../weights/load.js';
import { checkGenerateFlags, hint, modelCommandOptions, modelSourcePath, type ModelCommandArgs } from './options.js';

export interface GenerateArgs extends ModelCommandArgs {
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topK?: number;
  topP?: number;
  seed: number;
  eos: boolean;
}

export function generateCommand(y: Argv): Argv<GenerateArgs> {
  return modelCommandOptions<GenerateArgs>(
    y,
    '$0 generate --weights <checkpoint-or-dir> --prompt <text> [options]\n\nGenerate text: greedy by default (--temperature 0), or sampled with temperature, top-k and top-p.',
    'a checkpoint, a run directory, an OpenAI GPT-2 folder or a Hugging Face model.safetensors',
    (y) => y
      .option('prompt', { type: 'string', default: 'Every effort moves you', describe: 'text to continue' })
      .option('max-new-tokens', { type: 'number', default: 25, describe: 'tokens to generate' })
      .option('temperature', { type: 'number', default: 0, describe: 'sampling temperature; 0 = greedy' })
      .option('top-k', { type: 'number', describe: 'sample among the k most likely tokens; needs --temperature > 0 (default: off)' })
      .option('top-p', { type: 'number', describe: 'nucleus sampling: smallest set with this probability mass, in (0, 1] (default: off)' })
      .option('seed', { type: 'number', default: 123, describe: 'random seed for sampling' })
      .option('eos', { type: 'boolean', default: false, describe: 'stop at <|endoftext|>' }),
  )
    .option('json', { type: 'boolean', default: false, describe: 'print {"ids","text","tokens_per_s"} at the end instead of streaming' })
    .example('$0 generate --weights runs/20261122-101500 --prompt "Every effort moves you"', 'greedy, from your latest checkpoint')
    .example('$0 generate --weights models/124M --prompt "Every effort moves" --max-new-tokens 30', "OpenAI's GPT-2 124M")
    .example('$0 generate --weights models/124M --temperature 1.4 --top-k 25 --seed 123', 'the book\'s sampling settings') as unknown as Argv<GenerateArgs>;
}

export async function runGenerate(args: GenerateArgs): Promise<void> {
  checkGenerateFlags(args);
  if (args.topK !== undefined && !(args.temperature > 0))
    console.error('warning: --top-k has no effect in greedy decoding (--temperature 0); add e.g. --temperature 1');
  const weights = modelSourcePath(args);
  if (!weights)
    throw new Error(`generate needs --weights: train a model first (\`${hint('train')}\`, then --weights runs/<run>) or download GPT-2 (\`${hint('download --model 124M')}\`, then --weights models/124M)`);
  const { device } = resolveDevice(args.device);
  const { model } = await loadModel(weights, { device, dtype: args.dtype ?? 'fp32', masterWeights: false });
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    const prompt = textToTokenIds(args.prompt);
    const ctx = model.config.contextLength;
    if (prompt.length > ctx) console.error(`note: the prompt is ${prompt.length} tokens, longer than the model's context; it was cut to the last ${ctx} tokens`);
    const ids = [...prompt];
    const start = performance.now();
    let printed = tokenIdsToText(prompt);
    if (!args.json) process.stdout.write(printed);
    try {
      for await (const token of stream(model, prompt, {
        maxNewTokens: args.maxNewTokens,
        temperature: args.temperature,
        topK: args.topK,
        topP: args.topP,
        seed: args.seed,
        eosId: args.eos ? EOT_ID : undefined,
        signal: controller.signal,
      })) {
        ids.push(token);
        if (!args.json) {
          // Decode the whole text so multi-token characters print once complete.
          const text = tokenIdsToText(ids);
          if (!text.endsWith('\uFFFD')) {
            process.stdout.write(text.slice(printed.length));
            printed = text;
          }
        }
      }
    } catch (e) {
      if (!controller.signal.aborted) throw e;
    }
    const seconds = (performance.now() - start) / 1000;
    const text = tokenIdsToText(ids);
    if (args.json) {
      console.log(JSON.stringify({ ids, text, tokens_per_s: (ids.length - prompt.length) / Math.max(seconds, 1e-9) }));
    } else {
      process.stdout.write(text.slice(printed.length) + '\n');
    }
  } finally {
    process.off('SIGINT', onSigint);
    model.dispose();
  }
}
