// The CUDA emulator's bf16 WMMA (native/cuda/emu/shim/mma.h), which the bf16
// tensor-core attention kernels run on in the cuda-emulated suites: one warp's
// m16n16k16 mma_sync against float64 sums, bit for bit, and the pointer and
// ldm rules a GPU enforces. The emulator's documented arithmetic (simt.h):
// exact products, each output's K products and its accumulator summed and
// rounded once to float32, the accumulator float32 between calls. The inputs
// are chosen so that float64 sums them exactly (below), so the float64
// reference rounded once is that arithmetic's result.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { root } from './helpers/build-emulated-cuda.js';
import { bf16Value } from './helpers/op-cases/bf16.js';
import * as R from './helpers/reference.js';

const HAVE_GXX = spawnSync('g++', ['--version']).status === 0;
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
const bitsOf = (x: number) => ((f32[0] = x), u32[0]!);
const valueOf = (bits: number) => ((u32[0] = bits), f32[0]!);

let dir = '', exe = '';
beforeAll(() => {
  if (!HAVE_GXX) return;
  dir = fs.mkdtempSync(join(tmpdir(), 'gptcuda-wmma-'));
  exe = join(dir, 'emulated-wmma');
  const emu = join(root, 'native', 'cuda', 'emu');
  const built = spawnSync('g++', ['-std=c++20', '-O1', '-include', join(emu, 'simt.h'), `-I${join(emu, 'shim')}`, `-I${emu}`,
    `-I${join(root, 'native', 'include')}`, join(root, 'test', 'helpers', 'emulated-wmma.cc'), '-o', exe], { encoding: 'utf8' });
  expect(built.status, built.stderr).toBe(0);
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * bf16 values +-(1 + m/128) 2^e, e in [-6, 1], and float32 accumulators of
 * magnitude < 8 that are multiples of 2^-26: every product is a multiple of
 * 2^-26 below 2^4, so every partial sum is a multiple of 2^-26 below 2^10,
 * which float64 (53 bits) holds exactly; a float32 rounding of one keeps it a
 * multiple of 2^-26, so the second product's sums are exact too.
 */
function inputs(seed: number) {
  const rng = new R.SeededRandom(seed);
  const bf16 = () => ((rng.int(0, 2) << 15) | ((127 + rng.int(-6, 2)) << 7) | rng.int(0, 128)) >>> 0;
  const a = Array.from({ length: 16 * 24 }, bf16), b = Array.from({ length: 16 * 24 }, bf16);
  const c = Array.from({ length: 256 }, () => bitsOf(Math.round(rng.normal() * 2 ** 24) / 2 ** 26));
  return { a, b, c };
}

function run(stdin: string, ...args: string[]) {
  return spawnSync(exe, args, { input: stdin, encoding: 'utf8', timeout: 60_000 });
}

describe.skipIf(!HAVE_GXX)('emulated WMMA, bf16 m16n16k16 with a float32 accumulator', () => {
  it('D = A B + C and then + A B^T: the float64 sums rounded once to float32, bit for bit', () => {
    for (const seed of [1, 2, 3]) {
      const { a, b, c } = inputs(seed);
      const r = run([...a, ...b, ...c].join(' '));
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { d1: number[]; d2: number[] };
      const A = (i: number, k: number) => bf16Value(a[i * 24 + k]!), B = (k: number, n: number) => bf16Value(b[k * 24 + n]!);
      const want1: number[] = [], want2: number[] = [];
      let inexact = 0; // sums that float32 must round: the comparison sees the rounding
      for (let i = 0; i < 16; i++)
        for (let j = 0; j < 16; j++) {
          let s = valueOf(c[i * 16 + j]!);
          for (let k = 0; k < 16; k++) s += A(i, k) * B(k, j);
          want1.push(bitsOf(Math.fround(s)));
          if (Math.fround(s) !== s) inexact++;
        }
      for (let i = 0; i < 16; i++)
        for (let j = 0; j < 16; j++) {
          let s = valueOf(want1[i * 16 + j]!);
          for (let k = 0; k < 16; k++) s += A(i, k) * B(j, k); // B read column-major: element (k, j) at j * 24 + k
          want2.push(bitsOf(Math.fround(s)));
        }
      expect(out.d1).toEqual(want1);
      expect(out.d2).toEqual(want2);
      expect(inexact).toBeGreaterThan(100);
    }
  });

  it.each([
    ['a pointer off a 256-bit boundary', 'misaligned', /wmma pointer not 256-bit aligned or ldm 24 not a multiple of 8/],
    ['an ldm of 12 (not 16 bytes)', 'ldm', /ldm 12 not a multiple of 8/],
  ])('refuses a bf16 load with %s as a GPU does', (_what, mistake, message) => {
    const { a, b, c } = inputs(4);
    const r = run([...a, ...b, ...c].join(' '), mistake);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });
});
