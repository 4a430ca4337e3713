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
import { launchedWorld, runUnderMpirun } from '../train/distributed.js';
import { commandPrefix, hint, nearest, unknownOptionMessage } from './options.js';

/** Library messages suggest `gptcuda …` commands: write them the way the user ran us. */
const asInvoked = (m: string): string => m.replace(/`gptcuda (?=[a-z-])/g, `\`${commandPrefix()} `);

const BUILDERS: Record<string, (y: Argv) => unknown> = {
  train: trainCommand, eval: evalCommand, generate: generateCommand, download: downloadCommand,
  inspect: inspectCommand, export: exportCommand, tokenize: tokenizeCommand, info: infoCommand,
};

/** Every flag name (and alias) of a command, or of the top level. */
function flagsOf(command: string | undefined): string[] {
  const y = yargs([]);
  const b = command ? BUILDERS[command] : undefined;
  if (b) b(y);
  const o = (y as unknown as { getOptions(): unknown }).getOptions() as { key: Record<string, unknown>; alias: Record<string, string[]> };
  return [...new Set([...Object.keys(o.key), ...Object.values(o.alias).flat(), 'help', 'version'])];
}

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
    .command('train', 'pretrain a model on your text', builder(trainCommand), async (a) => { const t = a as unknown as TrainArgs; if (t.nproc !== undefined && !launchedWorld()) process.exitCode = await runUnderMpirun(t.nproc); else await runTrain(t); })
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
    .wrap(yargs().terminalWidth())
    .fail((msg, err) => {
      if (err) throw err;
      // One line, no help dump: help is for --help.
      const unknown = /^Unknown arguments?: ([^,\s]+)/.exec(msg ?? '');
      const command = hideBin(process.argv).find((a) => !a.startsWith('-'));
      if (unknown && unknown[1] === command && !BUILDERS[command]) {
        const near = nearest(command, Object.keys(BUILDERS));
        console.error(`gptcuda: unknown command ${command}${near ? `; did you mean ${near}?` : ''} (${hint('--help')} lists them)`);
      } else if (unknown) console.error(`gptcuda: ${unknownOptionMessage(unknown[1], flagsOf(command && BUILDERS[command] ? command : undefined))}`);
      else if (/^Invalid values:/.test(msg ?? '')) {
        const lines = [...(msg ?? '').matchAll(/Argument: ([\w-]+), Given: (.*?), Choices: (.*)$/gm)];
        for (const [, flag, given, choices] of lines)
          console.error(`gptcuda: --${flag} must be one of ${choices.replace(/"/g, '')} (got ${given})`);
        if (lines.length === 0) console.error(`gptcuda: ${msg}`);
      } else if (/^Missing required arguments?: /.test(msg ?? ''))
        console.error(`gptcuda: ${command ?? ''} needs ${(msg ?? '').replace(/^[^:]*: /, '').split(', ').map((f) => `--${f}`).join(' and ')} (see ${hint(`${command ?? ''} --help`)})`);
      else if (/^choose a command/.test(msg ?? '')) console.error(`gptcuda: choose a command (${hint('--help')} lists them)`);
      else console.error(`gptcuda: ${msg} (see ${hint(`${command && BUILDERS[command] ? command + ' ' : ''}--help`)})`);
      process.exit(2);
    })
    .parseAsync();
}

main().catch((e: unknown) => {
  console.error(`gptcuda: ${asInvoked(e instanceof Error ? e.message : String(e))}`);
  if (process.env.GPTCUDA_DEBUG) console.error(e);
  process.exit(1);
});
