import { describe, expect, it } from 'vitest';

import { Rng, fillNormal, fillUniform, type RngState } from '../ts/tensor/rng.js';

/**
 * Independent xoshiro128** written from the reference C code with BigInt, so
 * the 32-bit Math.imul/shift tricks in the real one are checked against
 * arithmetic that cannot overflow silently.
 */
function referenceXoshiro128ss(seed: [number, number, number, number]): () => number {
  const M = 0xffffffffn;
  const s = seed.map(BigInt);
  const rotl = (x: bigint, k: bigint): bigint => ((x << k) | (x >> (32n - k))) & M;
  return () => {
    const result = (rotl((s[1]! * 5n) & M, 7n) * 9n) & M;
    const t = (s[1]! << 9n) & M;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11n);
    return Number(result);
  };
}

function stateOf(words: [number, number, number, number]): RngState {
  return { kind: 'xoshiro128**', s: words, spare: null };
}

describe('Rng core generator', () => {
  it('matches the xoshiro128** reference (published first outputs for state 1,2,3,4)', () => {
    const r = Rng.fromState(stateOf([1, 2, 3, 4]));
    // First outputs of the reference C implementation from state {1, 2, 3, 4}.
    expect([r.nextU32(), r.nextU32(), r.nextU32(), r.nextU32()]).toEqual([11520, 0, 5927040, 70819200]);
  });

  it('matches a BigInt reference for many outputs and arbitrary states', () => {
    for (const words of [
      [1, 2, 3, 4],
      [0xdeadbeef, 0x01234567, 0x89abcdef, 0xffffffff],
      [0x80000000, 0, 0, 1],
    ] as Array<[number, number, number, number]>) {
      const r = Rng.fromState(stateOf(words));
      const ref = referenceXoshiro128ss(words);
      for (let i = 0; i < 2000; i++) expect(r.nextU32()).toBe(ref());
    }
  });

  it('outputs are unsigned 32-bit integers', () => {
    const r = new Rng(7);
    for (let i = 0; i < 1000; i++) {
      const x = r.nextU32();
      expect(Number.isInteger(x) && x >= 0 && x < 2 ** 32).toBe(true);
    }
  });
});

describe('Rng seeding and state', () => {
  it('is deterministic for a seed', () => {
    const a = new Rng(123);
    const b = new Rng(123);
    for (let i = 0; i < 100; i++) expect(a.nextU32()).toBe(b.nextU32());
  });

  it('different seeds give different streams, including seeds differing only above 32 bits', () => {
    const seq = (seed: number): number[] => {
      const r = new Rng(seed);
      return Array.from({ length: 8 }, () => r.nextU32());
    };
    expect(seq(1)).not.toEqual(seq(2));
    expect(seq(0)).not.toEqual(seq(1));
    expect(seq(5)).not.toEqual(seq(2 ** 32 + 5));
    const r0 = new Rng(0).getState();
    expect(r0.s.some((w) => w !== 0)).toBe(true);
  });

  it('getState/setState resumes bit-for-bit through JSON, including a cached normal', () => {
    const a = new Rng(99);
    for (let i = 0; i < 10; i++) a.uniform();
    a.normal(); // leaves the Box–Muller partner cached
    const saved = JSON.parse(JSON.stringify(a.getState())) as RngState;
    expect(saved.spare).not.toBeNull();
    const b = Rng.fromState(saved);
    const c = new Rng(1);
    c.setState(saved);
    for (let i = 0; i < 50; i++) {
      const x = a.normal();
      expect(b.normal()).toBe(x);
      expect(c.normal()).toBe(x);
      const u = a.uniform();
      expect(b.uniform()).toBe(u);
      expect(c.uniform()).toBe(u);
      const k = a.int(1000);
      expect(b.int(1000)).toBe(k);
      expect(c.int(1000)).toBe(k);
    }
  });

  it('getState returns a snapshot, not a live view', () => {
    const r = new Rng(3);
    const s = r.getState();
    const copy = JSON.stringify(s);
    r.nextU32();
    expect(JSON.stringify(s)).toBe(copy);
  });

  it('clone continues identically and independently', () => {
    const a = new Rng(5);
    a.normal();
    const b = a.clone();
    const xs = Array.from({ length: 5 }, () => a.normal());
    const ys = Array.from({ length: 5 }, () => b.normal());
    expect(ys).toEqual(xs);
  });

  it('rejects invalid states and seeds', () => {
    const r = new Rng(1);
    expect(() => r.setState(stateOf([0, 0, 0, 0]))).toThrow(/all-zero/);
    expect(() => r.setState({ kind: 'xoshiro128**', s: [1, 2, 3], spare: null } as unknown as RngState)).toThrow(/four/);
    expect(() => r.setState({ kind: 'xoshiro128**', s: [1, 2, 3, 2 ** 32], spare: null } as unknown as RngState)).toThrow(/32-bit/);
    expect(() => r.setState({ kind: 'mt19937', s: [1, 2, 3, 4], spare: null } as unknown as RngState)).toThrow();
    expect(() => r.setState({ kind: 'xoshiro128**', s: [1, 2, 3, 4], spare: Number.NaN })).toThrow(/spare/);
    expect(() => new Rng(Number.NaN)).toThrow(/finite/);
  });
});

describe('Rng distributions', () => {
  const N = 200_000;

  it('uniform() lies in [0, 1) with mean 1/2 and variance 1/12', () => {
    const r = new Rng(2024);
    let sum = 0;
    let sumSq = 0;
    let min = 1;
    let max = 0;
    for (let i = 0; i < N; i++) {
      const u = r.uniform();
      sum += u;
      sumSq += u * u;
      if (u < min) min = u;
      if (u > max) max = u;
    }
    const mean = sum / N;
    const variance = sumSq / N - mean * mean;
    expect(min).toBeGreaterThanOrEqual(0);
    expect(max).toBeLessThan(1);
    // Standard error of the mean is sqrt(1/12/N) ≈ 6.5e-4; allow ~6 of them.
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.004);
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(0.002);
  });

  it('normal() has mean 0, std 1 and the right mass within one sigma', () => {
    const r = new Rng(77);
    let sum = 0;
    let sumSq = 0;
    let within1 = 0;
    let nonFinite = 0;
    for (let i = 0; i < N; i++) {
      const z = r.normal();
      if (!Number.isFinite(z)) nonFinite++;
      sum += z;
      sumSq += z * z;
      if (Math.abs(z) < 1) within1++;
    }
    expect(nonFinite).toBe(0);
    const mean = sum / N;
    const std = Math.sqrt(sumSq / N - mean * mean);
    // SE(mean) ≈ 2.2e-3, SE(std) ≈ 1.6e-3, SE(fraction) ≈ 1.0e-3.
    expect(Math.abs(mean)).toBeLessThan(0.012);
    expect(Math.abs(std - 1)).toBeLessThan(0.01);
    expect(Math.abs(within1 / N - 0.682689)).toBeLessThan(0.006);
  });

  it('int(n) is in range and roughly uniform (chi-square)', () => {
    const r = new Rng(11);
    const n = 10;
    const counts = new Array<number>(n).fill(0);
    const draws = 100_000;
    let outOfRange = 0;
    for (let i = 0; i < draws; i++) {
      const k = r.int(n);
      if (!(Number.isInteger(k) && k >= 0 && k < n)) outOfRange++;
      else counts[k]!++;
    }
    expect(outOfRange).toBe(0);
    const expected = draws / n;
    const chi2 = counts.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
    // 9 degrees of freedom: P(chi2 > 33.7) ≈ 1e-4.
    expect(chi2).toBeLessThan(33.7);
    expect(r.int(1)).toBe(0);
    expect(() => r.int(0)).toThrow();
    expect(() => r.int(2.5)).toThrow();
  });

  it('shuffle is a reproducible permutation that actually moves things', () => {
    const base = Array.from({ length: 100 }, (_, i) => i);
    const a = new Rng(1).shuffle(base.slice());
    const b = new Rng(1).shuffle(base.slice());
    const c = new Rng(2).shuffle(base.slice());
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(a).not.toEqual(base);
    expect(a.slice().sort((x, y) => x - y)).toEqual(base);
    const typed = new Rng(1).shuffle(Uint32Array.from(base));
    expect(Array.from(typed)).toEqual(a);
  });

  it('shuffle picks every position for an element with equal probability', () => {
    const r = new Rng(8);
    const trials = 40_000;
    const pos = new Array<number>(4).fill(0);
    for (let t = 0; t < trials; t++) {
      const arr = r.shuffle([0, 1, 2, 3]);
      pos[arr.indexOf(0)]!++;
    }
    for (const c of pos) expect(Math.abs(c / trials - 0.25)).toBeLessThan(0.015);
  });

  it('fillNormal and fillUniform fill with the requested scale', () => {
    const out = fillNormal(new Float32Array(100_000), 0.02, new Rng(3));
    let sum = 0;
    let sumSq = 0;
    for (const v of out) {
      sum += v;
      sumSq += v * v;
    }
    const mean = sum / out.length;
    expect(Math.abs(mean)).toBeLessThan(0.0005);
    expect(Math.abs(Math.sqrt(sumSq / out.length) - 0.02)).toBeLessThan(0.0005);
    const again = fillNormal(new Float32Array(100), 0.02, new Rng(3));
    expect(Array.from(again)).toEqual(Array.from(out.subarray(0, 100)));

    const shifted = fillNormal(new Float32Array(10_000), 1, new Rng(4), 5);
    expect(Math.abs(shifted.reduce((s, v) => s + v, 0) / shifted.length - 5)).toBeLessThan(0.05);

    const u = fillUniform(new Float32Array(10_000), -2, 2, new Rng(5));
    expect(Math.min(...u)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...u)).toBeLessThanOrEqual(2);
    expect(Math.abs(u.reduce((s, v) => s + v, 0) / u.length)).toBeLessThan(0.06);
  });
});
