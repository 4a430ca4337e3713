// `gptcuda tokenize`: pre-tokenise a corpus too large for memory into a
// binary token file that `gptcuda train --data corpus.tok` streams from.
import type { Argv } from 'yargs';
import { pretokenize } from '../data/token-file.js';
import { formatBytes } from '../io/bytes.js';
import { Progress } from './progress.js';

export function tokenizeCommand(y: Argv): Argv {
  return y
    .usage('$0 tokenize <inputs..> --out <file.tok>\n\nTokenise text files or folders of .txt once (GPT-2 BPE) into a uint16 token file; train streams windows from it.')
    .positional('inputs', { type: 'string', array: true, describe: 'text files or directories of .txt files' })
    .option('out', { type: 'string', demandOption: true, describe: 'token file to write (written to a temporary name, then renamed)' })
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable JSON on stdout' })
    .example('$0 tokenize corpus/ --out corpus.tok', 'every .txt in corpus/, joined with <|endoftext|>')
    .example('$0 train --data corpus.tok --model gpt2-small', 'then train on it');
}

export async function runTokenize(args: { inputs: string[]; out: string; json: boolean }): Promise<void> {
  const bar = args.json ? null : new Progress({ label: 'tokenize', formatAmount: formatBytes, formatRate: (r) => `${formatBytes(r)}/s` });
  const result = await pretokenize(args.inputs.length === 1 ? args.inputs[0] : args.inputs, args.out, {
    onProgress: (p) => {
      bar?.setTotal(p.bytesTotal);
      bar?.update(p.bytesDone, `${p.tokens.toLocaleString('en-US')} tokens`);
    },
  });
  bar?.finish();
  if (args.json) console.log(JSON.stringify({ path: result.path, tokens: result.tokens, bytes: result.bytes }));
  else console.log(`wrote ${result.path}: ${result.tokens.toLocaleString('en-US')} tokens from ${result.files.length} file(s)`);
}
