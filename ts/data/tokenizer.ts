/**
 * GPT-2 byte-pair-encoding tokenizer, the same one the book loads with
 * `tiktoken.get_encoding("gpt2")`.
 *
 * The ranks ship inside js-tiktoken (`js-tiktoken/ranks/gpt2`), so this works
 * fully offline; the lite entry point avoids bundling every other encoding.
 */
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2 from 'js-tiktoken/ranks/gpt2';
import * as os from 'node:os';
import { native, type NativeBpe } from '../tensor/native.js';

/** `<|endoftext|>`: separates documents, as in the book's data loader. */
export const EOT_ID = 50256;
export const EOT_TEXT = '<|endoftext|>';
/** GPT-2 vocabulary size: 50,000 merges + 256 byte tokens + `<|endoftext|>`. */
export const VOCAB_SIZE = 50257;

let cached: Tiktoken | undefined;

/** The shared GPT-2 tokenizer; building the rank tables takes ~100 ms, so it is built once. */
export function getTokenizer(): Tiktoken {
  if (cached === undefined) cached = new Tiktoken(gpt2);
  return cached;
}

let nativeBpe: NativeBpe | undefined;

/**
 * The native encoder (native/text), built from the same js-tiktoken ranks:
 * each token's bytes and rank, decoded from the compressed rank file once.
 */
function getNativeBpe(): NativeBpe {
  if (nativeBpe !== undefined) return nativeBpe;
  const tokens: Buffer[] = [];
  const ranks: number[] = [];
  for (const line of gpt2.bpe_ranks.split('\n')) {
    if (line === '') continue;
    // "! <first rank> <base64 token> <base64 token> ...", ranks counting up.
    const [, first, ...b64] = line.split(' ');
    const offset = Number.parseInt(first!, 10);
    b64.forEach((t, i) => {
      tokens.push(Buffer.from(t, 'base64'));
      ranks.push(offset + i);
    });
  }
  const lengths = Uint32Array.from(tokens, (t) => t.length);
  nativeBpe = new (native().BpeTokenizer)(Buffer.concat(tokens), lengths, Uint32Array.from(ranks), EOT_TEXT, EOT_ID);
  return nativeBpe;
}

// Below this many characters starting threads costs more than they save.
const PARALLEL_MIN_CHARS = 1 << 18;
// More chunks than threads, so a chunk that is slow to encode (rare words,
// long runs) does not leave the other threads idle at the end.
const CHUNKS_PER_THREAD = 4;

/** Threads for long inputs: GPTCUDA_TOKENIZER_THREADS, else every core. */
export function tokenizerThreads(): number {
  const env = process.env.GPTCUDA_TOKENIZER_THREADS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1 || n > 4096) {
      throw new Error(`GPTCUDA_TOKENIZER_THREADS=${env} is not a thread count; give an integer in [1, 4096] or unset it`);
    }
    return n;
  }
  return os.availableParallelism();
}

function split(text: string, threads: number): [chunks: number, threads: number] {
  if (text.length < PARALLEL_MIN_CHARS || threads === 1) return [1, 1];
  return [threads * CHUNKS_PER_THREAD, threads];
}

/**
 * Encode text to GPT-2 token ids. `<|endoftext|>` in the text becomes the single
 * id 50256, like the book's `tokenizer.encode(text, allowed_special={"<|endoftext|>"})`.
 *
 * Same ids as `getTokenizer().encode(text, ["<|endoftext|>"])`, from a native
 * encoder: GPT-2's pre-tokenizer pattern written out as a scanner, BPE merges
 * over a hash table of ranks and a piece cache. Long texts are cut where the
 * pieces cannot change and encoded on several threads.
 */
export function textToTokenIds(text: string, options: { threads?: number } = {}): number[] {
  const [chunks, threads] = split(text, options.threads ?? tokenizerThreads());
  return Array.from(getNativeBpe().encode(text, chunks, threads));
}

/**
 * `textToTokenIds` on worker threads, leaving the event loop free (progress
 * output, the next file read), and without the copy into a JS array.
 */
export function textToTokenIdsAsync(text: string, options: { threads?: number } = {}): Promise<Uint32Array> {
  const [chunks, threads] = split(text, options.threads ?? tokenizerThreads());
  return getNativeBpe().encodeAsync(text, chunks, threads);
}

/**
 * The native encoder with an explicit cut count, for tests of the cuts: any
 * count must give the ids of one pass.
 */
export function textToTokenIdsInChunks(text: string, chunks: number, threads: number): Uint32Array {
  return getNativeBpe().encode(text, chunks, threads);
}

/**
 * Decode token ids to text. Ids outside the vocabulary are an error rather than
 * being skipped silently (which is what js-tiktoken would do), because they
 * usually mean a model with the wrong vocabulary size or a corrupt token file.
 */
export function tokenIdsToText(ids: ArrayLike<number>): string {
  const list = Array.from(ids);
  for (let i = 0; i < list.length; i++) {
    const id = list[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= VOCAB_SIZE) {
      throw new Error(`tokenIdsToText: token id ${id} at position ${i} is outside the GPT-2 vocabulary [0, ${VOCAB_SIZE})`);
    }
  }
  return getTokenizer().decode(list);
}
