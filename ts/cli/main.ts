#!/usr/bin/env node
// The `gptcuda` command line.
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { evalCommand, runEval, type EvalArgs } from './eval.js';
import { generateCommand, runGenerate, type GenerateArgs } from './generate.js';
import { installOutputErrorHandlers } from './output.js';
import { infoCommand, runInfo } from './info.js';
import { runTokenize, tokenizeCommand } from './tokenize.js';
import { downloadCommand, exportCommand, inspectCommand, runDownload, runExport, runInspect } from './weights.js';
import { runTrain, trainCommand, type TrainArgs } from './train.js';

// Each command file types its own options; yargs only needs a builder.
const builder = (f: (y: Argv) => unknown) => f as (y: Argv) => Argv;

// `gptcuda generate | head` closes stdout early: exit quietly, as Unix tools do
// (train saves its checkpoint first; see output.ts).
installOutputErrorHandlers();

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('gptcuda')
    .parserConfiguration({ 'duplicate-arguments-array': false })
    .usage('$0 <command> [options]\n\nPretrain, evaluate and sample GPT-2-style models (chapter 5 of "Build a Large Language Model (From Scratch)").')
    .command('train', 'pretrain a model on your text', builder(trainCommand), async (a) => { await runTrain(a as unknown as TrainArgs); })
    .command('eval', 'loss and perplexity of a model on a text', builder(evalCommand), async (a) => { await runEval(a as unknown as EvalArgs); })
    .command('generate', 'generate text from a model', builder(generateCommand), async (a) => { await runGenerate(a as unknown as GenerateArgs); })
    .command('download', "download OpenAI's GPT-2 weights", builder(downloadCommand), async (a) => { await runDownload(a as never); })
    .command('inspect <path>', 'list the tensors and config of weights', builder(inspectCommand), async (a) => { await runInspect(a as never); })
    .command('export', 'export weights for Hugging Face transformers', builder(exportCommand), async (a) => { await runExport(a as never); })
    .command('tokenize <inputs..>', 'pre-tokenise a large corpus into a token file', builder(tokenizeCommand), async (a) => { await runTokenize(a as never); })
    .command('info', 'backends, devices, CUDA status', builder(infoCommand), async (a) => { await runInfo(a as unknown as { json: boolean }); })
    .example('$0 train', "train the book's model on the bundled text")
    .example('$0 generate --weights runs/<run> --prompt "Every effort moves you"', 'sample from it')
    .demandCommand(1, 'choose a command (gptcuda --help lists them)')
    .strict()
    .recommendCommands()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err, y) => {
      if (err) throw err;
      console.error(`${y.help()}\n\n${msg}`);
      process.exit(2);
    })
    .parseAsync();
}

main().catch((e: unknown) => {
  console.error(`gptcuda: ${e instanceof Error ? e.message : String(e)}`);
  if (process.env.GPTCUDA_DEBUG) console.error(e);
  process.exit(1);
});
