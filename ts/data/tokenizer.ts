/**
 * GPT-2 byte-pair-encoding tokenizer, the same one the book loads with
 * `tiktoken.get_encoding("gpt2")`.
 *
 * The ranks ship inside js-tiktoken (`js-tiktoken/ranks/gpt2`), so this works
 * fully offline; the lite entry point avoids bundling every other encoding.
 */
import { Tiktoken } from 'js-tiktoken/lite';
import gpt2 from 'js-tiktoken/ranks/gpt2';

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

// Pre-tokenized pieces repeat with a Zipf distribution, so caching each
// piece's tokens skips most BPE work (js-tiktoken caches nothing, which makes
// it ~1.5 MB/s on English prose; with the cache it is several times faster).
// Bounded so a huge corpus cannot grow it without limit.
const PIECE_CACHE_LIMIT = 500_000;
const pieceCache = new Map<string, number[]>();
let pieceRegex: RegExp | undefined;

/**
 * Encode text to GPT-2 token ids. `<|endoftext|>` in the text becomes the single
 * id 50256, like the book's `tokenizer.encode(text, allowed_special={"<|endoftext|>"})`.
 *
 * Same result as `getTokenizer().encode(text, ["<|endoftext|>"])`: the text is
 * cut at `<|endoftext|>` and split with GPT-2's own pre-tokenizer pattern
 * exactly as js-tiktoken does, and each piece not seen before is encoded by
 * js-tiktoken on its own. A piece re-split on its own is still one piece (every
 * alternative of the pattern matches a whole piece from its start), so its
 * tokens are the same as in context.
 */
export function textToTokenIds(text: string): number[] {
  const enc = getTokenizer();
  pieceRegex ??= new RegExp(gpt2.pat_str, 'gu');
  const out: number[] = [];
  let start = 0;
  for (;;) {
    const at = text.indexOf(EOT_TEXT, start);
    const end = at < 0 ? text.length : at;
    if (end > start) {
      const segment = text.slice(start, end);
      pieceRegex.lastIndex = 0;
      for (const m of segment.matchAll(pieceRegex)) {
        const piece = m[0];
        let ids = pieceCache.get(piece);
        if (ids === undefined) {
          ids = enc.encode(piece, [EOT_TEXT]);
          if (pieceCache.size >= PIECE_CACHE_LIMIT) pieceCache.clear();
          pieceCache.set(piece, ids);
        }
        for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
      }
    }
    if (at < 0) break;
    out.push(EOT_ID);
    start = at + EOT_TEXT.length;
  }
  return out;
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
