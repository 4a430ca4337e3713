/**
 * Reading text as the book does, and chapter 5's train/validation split.
 *
 * Faithfulness notes:
 *  - Files are read like Python's `open(path, "r", encoding="utf-8")`: invalid
 *    UTF-8 is an error and newlines are translated (`\r\n` and `\r` → `\n`).
 *  - Text is split into train/validation by *characters* (Python code points),
 *    and each part is tokenized separately, exactly as chapter 5 does. For
 *    the-verdict.txt that gives 4,612 + 534 tokens (one more than the 5,145 of
 *    the whole text, because the split falls inside a word).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { EOT_TEXT } from './tokenizer.js';

// ---------------------------------------------------------------------------
// Reading text
// ---------------------------------------------------------------------------

/** Python's universal-newlines mode, so CRLF files tokenize as in the book. */
export function normalizeNewlines(text: string): string {
  return text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
}

function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    // ignoreBOM keeps a leading U+FEFF, as Python's "utf-8" codec does.
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    const where = at >= 0 ? ` at byte ${at} (0x${bytes[at]!.toString(16).padStart(2, '0')})` : '';
    throw new Error(
      `${file}: not valid UTF-8 text${where}; convert it first, e.g. iconv -f latin1 -t utf-8 ${file} > ${file.replace(/(\.[^./]*)?$/, '.utf8$1')}`,
    );
  }
}

/** Byte offset of the first byte that does not start or continue a valid UTF-8 sequence; -1 if none. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    let n: number;
    let min: number;
    if (c < 0x80) { i++; continue; }
    else if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

/**
 * Expand the inputs to a list of text files: a file stands for itself, a
 * directory for its `.txt` files sorted by name (not recursive).
 */
export function resolveInputs(inputs: string | string[]): string[] {
  const list = typeof inputs === 'string' ? [inputs] : inputs;
  if (list.length === 0) throw new Error('No input text given: pass a .txt file, several files, or a directory of .txt files');
  const files: string[] = [];
  for (const input of list) {
    let st: fs.Stats;
    try {
      st = fs.statSync(input);
    } catch {
      throw new Error(`Input not found: ${input}`);
    }
    if (st.isDirectory()) {
      const entries = fs.readdirSync(input, { withFileTypes: true });
      if (entries.length === 0) throw new Error(`Input directory is empty: ${input}`);
      // Code-unit order rather than localeCompare, so the order (and thus the
      // token stream) is the same on every machine.
      const txt = entries
        .filter((e) => /\.txt$/i.test(e.name) && isFileFollowingLinks(path.join(input, e.name)))
        .map((e) => e.name)
        .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      if (txt.length === 0) throw new Error(`Input directory has no .txt files: ${input}`);
      for (const name of txt) files.push(path.join(input, name));
    } else if (st.isFile()) {
      files.push(input);
    } else {
      throw new Error(`Input is neither a file nor a directory: ${input}`);
    }
  }
  return files;
}

function isFileFollowingLinks(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Read one UTF-8 text file the way Python's `open(path, encoding="utf-8").read()` would. */
export function readTextFile(file: string): string {
  return normalizeNewlines(decodeUtf8(fs.readFileSync(file), file));
}

/**
 * Load a text file, several files, or a directory of `.txt` files (sorted by
 * name). Several files are joined with `<|endoftext|>`, which the tokenizer
 * turns into the single id 50256.
 */
export function loadText(inputs: string | string[]): string {
  return resolveInputs(inputs).map(readTextFile).join(EOT_TEXT);
}

// ---------------------------------------------------------------------------
// Train/validation split
// ---------------------------------------------------------------------------

/** Length in Unicode code points, i.e. Python's `len(str)`. */
export function codePointLength(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** UTF-16 index of code point number `cp` (clamped to the end). */
function codePointToIndex(text: string, cp: number): number {
  let i = 0;
  let k = 0;
  while (k < cp && i < text.length) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      i += d >= 0xdc00 && d <= 0xdfff ? 2 : 1;
    } else {
      i++;
    }
    k++;
  }
  return i;
}

export interface TextSplit {
  train: string;
  val: string;
  /** Split position in code points: `int(train_ratio * len(text))`. */
  splitIndex: number;
}

/**
 * The book's split: `split_idx = int(train_ratio * len(text_data))`, then
 * `text_data[:split_idx]` and `text_data[split_idx:]`. Counting is in code
 * points so that non-ASCII text splits where Python would split it (a JS string
 * index counts UTF-16 units, and would cut emoji in half).
 */
export function splitText(text: string, trainRatio = 0.9): TextSplit {
  checkRatio(trainRatio);
  const splitIndex = Math.floor(trainRatio * codePointLength(text));
  const at = codePointToIndex(text, splitIndex);
  return { train: text.slice(0, at), val: text.slice(at), splitIndex };
}

export function checkRatio(trainRatio: number): void {
  if (!(typeof trainRatio === 'number' && trainRatio > 0 && trainRatio < 1)) {
    throw new Error(`train ratio must be a number strictly between 0 and 1, got ${trainRatio}`);
  }
}
