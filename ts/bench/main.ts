#!/usr/bin/env node
// `npm run bench`: GEMM, attention, training and generation throughput of the
// native backend, as tables; `--json` adds a one-line JSON summary at the end
// (the last line of stdout, for scripts/bench-compare.sh).
//
//   node dist/bench/main.js [--only gemm,attention,train,generate] [--device cpu|cuda]
//                           [--json] [--quick] [--train-steps N] [--gen-tokens N] [--gen-tokens-nocache N] [--gen-batch N] [--gen-export DIR]
//                           [--ddp [--ddp-steps N]]
import { native } from '../tensor/native.js';
import type { Device } from '../tensor/tensor.js';
import { ATT, benchAttention, type AttentionResult } from './attention.js';
import { benchDdp, ddpUnavailable, type DdpResult } from './ddp.js';
import { benchGemm, GEMM_M, type GemmResult } from './gemm.js';
import { benchGenerate, type GenerationResult } from './generate.js';
import { benchTrain, profileTrainStep, type StepProfile, type TrainResult } from './train.js';
import { fmt, formatTable, MB, now, round, type TimeOptions } from './util.js';

const SECTIONS = ['gemm', 'attention', 'train', 'generate'] as const;
// Not run by default: it starts mpirun.
type Section = (typeof SECTIONS)[number] | 'ddp';

interface Args {
  only: Section[];
  device: Device;
  json: boolean;
  quick: boolean;
  trainSteps: number;
  genTokens: number;
  genTokensNoCache: number;
  genBatch: number;
  genExport?: string;
  ddpSteps: number;
}

const USAGE = `usage: node dist/bench/main.js [options]
  --only LIST              sections to run, comma-separated: ${SECTIONS.join(',')} (default: all)
  --device cpu|cuda        where to run (default cpu); cuda is skipped with the reason when unavailable
  --json                   also print a one-line JSON summary (the last line of stdout)
  --quick                  fewer repetitions and tokens (a smoke test, not a measurement)
  --train-steps N          timed training steps after one warmup step (default 3)
  --gen-tokens N           new tokens with the KV cache (default 200)
  --gen-tokens-nocache N   new tokens without the cache (default 200, as with the cache)
  --gen-batch N            prompts of the batched generation row (default 8)
  --gen-export DIR         also write the generation model for Hugging Face and our greedy ids to DIR
                           (scripts/bench_torch.py --only generate --gen-dir DIR compares)
  --ddp                    data-parallel training tokens/s with 1 and 2 CPU ranks (mpirun); alone, only this section
  --ddp-steps N            timed steps per world size (default 20)`;

function parseArgs(argv: string[]): Args {
  const a: Args = { only: [...SECTIONS], device: 'cpu', json: false, quick: false, trainSteps: 3, genTokens: 200, genTokensNoCache: 200, genBatch: 8, ddpSteps: 20 };
  const int = (flag: string, v: string | undefined, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min} (got ${v ?? 'nothing'})`);
    return n;
  };
  let sawTrainSteps = false, sawGen = false, sawGenNoCache = false, sawOnly = false, ddp = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case '--only': {
        const list = (value() ?? '').split(',').map((s) => s.trim()).filter(Boolean);
        const bad = list.filter((s) => !(SECTIONS as readonly string[]).includes(s));
        if (bad.length || !list.length) throw new Error(`--only takes a comma-separated list of ${SECTIONS.join(', ')} (got '${list.join(',')}')`);
        a.only = SECTIONS.filter((s) => list.includes(s));
        sawOnly = true;
        break;
      }
      case '--device': {
        const d = value();
        if (d !== 'cpu' && d !== 'cuda') throw new Error(`--device must be cpu or cuda (got ${d ?? 'nothing'})`);
        a.device = d;
        break;
      }
      case '--json': a.json = true; break;
      case '--quick': a.quick = true; break;
      case '--train-steps': a.trainSteps = int(flag, value(), 1); sawTrainSteps = true; break;
      case '--gen-tokens': a.genTokens = int(flag, value(), 2); sawGen = true; break;
      case '--gen-tokens-nocache': a.genTokensNoCache = int(flag, value(), 2); sawGenNoCache = true; break;
      case '--gen-batch': a.genBatch = int(flag, value(), 1); break;
      case '--gen-export': {
        const dir = value();
        if (!dir) throw new Error('--gen-export needs a directory');
        a.genExport = dir;
        break;
      }
      case '--ddp': ddp = true; break;
      case '--ddp-steps': a.ddpSteps = int(flag, value(), 1); break;
      case '--help': case '-h': console.log(USAGE); process.exit(0); break;
      default: throw new Error(`unknown option '${arg}'\n${USAGE}`);
    }
  }
  if (ddp) a.only = [...(sawOnly ? a.only : []), 'ddp'];
  if (a.quick) {
    if (!sawTrainSteps) a.trainSteps = 1;
    if (!sawGen) a.genTokens = 20;
    if (!sawGenNoCache) a.genTokensNoCache = 5;
  }
  return a;
}

function section(title: string): void {
  console.log(`\n== ${title} ==`);
}

function printGemm(rows: GemmResult[]): void {
  console.log(`M = ${GEMM_M} tokens; fwd out[M,N] = inp[M,K]·W[N,K]^T, dinp[M,K] = dout[M,N]·W[N,K], dW[N,K] += dout^T·inp; median ms`);
  console.log(formatTable(
    ['op', 'layer', 'M', 'K', 'N', 'ms', 'GFLOP/s', 'reps'],
    rows.map((r) => [r.op, r.layer, r.M, r.K, r.N, r.ms, r.gflops, r.reps]),
  ));
}

function printAttention(rows: AttentionResult[]): void {
  console.log(`B=${ATT.B}, T=${ATT.T}, ${ATT.nHeads} heads x ${ATT.headDim} (qkv [${ATT.B}, ${ATT.T}, ${3 * ATT.nHeads * ATT.headDim}]), causal; median ms`);
  console.log(formatTable(
    ['dropout', 'forward ms', 'backward ms', 'fwd+bwd ms', 'GFLOP/s'],
    rows.map((r) => [r.dropout, r.forwardMs, r.backwardMs, r.totalMs, r.gflops]),
  ));
}

function printTrain(r: TrainResult, device: Device): void {
  const c = r.config;
  console.log(`book's model: vocab ${c.vocabSize}, ctx ${c.contextLength}, emb ${c.embDim}, ${c.nHeads} heads, ${c.nLayers} layers, ` +
    `dropout ${c.dropRate}, qkv_bias ${c.qkvBias}, ${(r.parameters / 1e6).toFixed(1)}M parameters; ` +
    `batch ${r.batch} x ${r.context}, forward+backward+AdamW, median of ${r.steps} step(s) after 1 warmup`);
  console.log(formatTable(
    ['device', 'ms/step', 'tokens/s', 'loss', 'peak RSS MB', `${device} peak tensor MB`],
    [[device, r.msPerStep, r.tokensPerSecond, r.loss, r.maxRss / MB, r.devicePeakMemory / MB]],
  ));
}

function printStepProfile(r: TrainResult, p: StepProfile): void {
  const parts = p.parts.reduce((s, x) => s + x.ms, 0);
  console.log(`\nwhere the step goes: forward ${fmt(r.forwardMs)} ms, backward ${fmt(r.backwardMs)} ms, AdamW ${fmt(r.updateMs)} ms; ` +
    `its matrix products alone take ${fmt(p.gemmMs)} ms (${fmt(p.gemmGflops)} GFLOP/s): step / GEMMs = ${(r.msPerStep / p.gemmMs).toFixed(2)}`);
  console.log(formatTable(
    ['part (timed alone at the step\'s shapes)', 'ms/step', 'of step'],
    [
      ['matrix products (Linear fwd + bwd, LM head)', p.gemmMs],
      ...p.parts.map((x): [string, number] => [x.name, x.ms]),
      ['AdamW (in the step)', r.updateMs],
      ['unaccounted (step minus the parts)', r.msPerStep - p.gemmMs - parts - r.updateMs],
    ].map(([name, ms]) => [name as string, ms as number, `${((100 * (ms as number)) / r.msPerStep).toFixed(0)}%`]),
  ));
}

function printGenerate(r: GenerationResult): void {
  const c = r.config;
  console.log(`GPT-2 small config (random weights): vocab ${c.vocabSize}, ctx ${c.contextLength}, emb ${c.embDim}, ` +
    `${c.nHeads} heads, ${c.nLayers} layers, ${(r.parameters / 1e6).toFixed(1)}M parameters; fp32, greedy, ` +
    `${r.cached.promptTokens}-token prompts; read bandwidth ${r.bandwidthGBs.toFixed(2)} GB/s (parallel read loop, best of 5)`);
  console.log(formatTable(
    ['batch', 'KV cache', 'new tokens', 'first token ms', 'total s', 'tokens/s', 'decode tokens/s', 'ms/step', 'bound tokens/s', 'of bound'],
    [r.cached, r.batched, r.uncached].map((g) => [
      g.batch, g.useCache ? 'yes' : 'no', g.newTokens, g.firstTokenS * 1e3, g.totalS, g.tokensPerSecond, g.decodeTokensPerSecond,
      (1e3 * g.batch) / g.decodeTokensPerSecond,
      g.useCache ? g.boundTokensPerSecond : '-', g.useCache ? `${(100 * g.fractionOfBound).toFixed(0)}%` : '-',
    ]),
  ));
  const h = r.bf16;
  console.log(`bf16 weights (rounded from the same fp32 ones, half the bytes per token): batch 1 ${h.cached.decodeTokensPerSecond.toFixed(2)} decode tokens/s ` +
    `(${h.speedup.toFixed(2)}x fp32, ${(100 * h.cached.fractionOfBound).toFixed(0)}% of its bound), batch ${h.batched.batch} ${h.batched.decodeTokensPerSecond.toFixed(2)} ` +
    `(${h.batchedSpeedup.toFixed(2)}x fp32); greedy tokens equal to fp32's: ${(100 * h.idsAgreement).toFixed(0)}%`);
  console.log(`batch ${r.batched.batch} decodes ${r.batchSpeedup.toFixed(2)}x the tokens/s of batch 1; without the cache only ` +
    `${r.uncached.newTokens} tokens are generated (each recomputes the whole sequence), so the rates compare per token at ` +
    `shorter sequences: decode speedup with the cache ${r.speedup.toFixed(1)}x`);
  const p = r.profile;
  const sum = p.parts.reduce((a, x) => a + x.ms, 0);
  console.log(`\nwhere a batch-1 decode step goes (position ${p.position}; each op kind alone over all layers, median ms per token):`);
  console.log(formatTable(
    ['part', 'ms/token', 'share', 'MB read', 'GB/s'],
    p.parts.map((x) => [x.name, x.ms, `${((100 * x.ms) / p.asyncStepMs).toFixed(1)}%`, x.bytes ? x.bytes / 1e6 : '-', x.bytes ? x.bytes / 1e6 / x.ms : '-']),
  ));
  console.log(`sum of parts ${sum.toFixed(2)} ms; the step as generate() runs it (recorded, replayed on a worker thread) ` +
    `${p.asyncStepMs.toFixed(2)} ms, so ${(p.asyncStepMs - sum).toFixed(2)} ms of op dispatch, recording and thread hand-offs; ` +
    `the same step issued op by op on this thread ${p.syncStepMs.toFixed(2)} ms`);
  console.log(`bound: ${((p.weightBytes + p.cacheBytes) / 1e6).toFixed(1)} MB per token (weights ${(p.weightBytes / 1e6).toFixed(1)}, ` +
    `cache ${(p.cacheBytes / 1e6).toFixed(1)}) at ${p.bandwidthGBs.toFixed(2)} GB/s = ${(1e3 / p.boundTokensPerSecond).toFixed(2)} ms/token; ` +
    `the step is at ${((100 * 1e3) / p.boundTokensPerSecond / p.asyncStepMs).toFixed(0)}% of it; ` +
    `the same products through the packing GEMM: ${p.gemmPathMs.toFixed(2)} ms`);
}

function printDdp(rows: DdpResult[]): void {
  console.log('2 layers, 64 wide, context 64, batch 4 per rank (2 ranks: twice the tokens per step); `train --nproc N`, threads split between ranks; tokens/s over all ranks');
  const base = rows[0]!.tokensPerSecond;
  console.log(formatTable(
    ['ranks', 'steps', 'tokens/step', 'ms/step', 'tokens/s', 'vs 1 rank'],
    rows.map((r) => [r.ranks, r.steps, r.tokensPerStep, r.msPerStep, r.tokensPerSecond, r.tokensPerSecond / base]),
  ));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const addon = native();
  const backends = addon.backends();
  const started = now();
  const summary: Record<string, unknown> = {
    bench: 'gptcuda',
    device: args.device,
    node: process.version,
    cpu: backends.cpu,
    sections: args.only,
  };
  console.log(`gptcuda bench: device ${args.device}; CPU backend ${backends.cpu.threads} threads, GEMM ${backends.cpu.gemm}`);
  if (args.device === 'cuda') {
    if (!backends.cuda.available) {
      const reason = backends.cuda.reason ?? 'CUDA is not available';
      console.log(`skipping every section on cuda: ${reason}`);
      summary.skipped = reason;
      if (args.json) console.log(JSON.stringify(summary));
      return;
    }
    console.log(`GPU: ${addon.deviceInfo('cuda').name}`);
    summary.gpu = addon.deviceInfo('cuda').name;
  }
  const timing: TimeOptions = args.quick ? { warmup: 1, minReps: 1, maxReps: 2, minSeconds: 0 } : { warmup: 1, minReps: 3, maxReps: 20, minSeconds: 0.5 };

  for (const s of args.only) {
    const t0 = now();
    switch (s) {
      case 'gemm': {
        section('GEMM');
        const rows = benchGemm(args.device, timing);
        printGemm(rows);
        summary.gemm = rows.map((r) => ({ name: r.name, layer: r.layer, op: r.op, M: r.M, N: r.N, K: r.K, ms: round(r.ms, 4), gflops: round(r.gflops, 2) }));
        break;
      }
      case 'attention': {
        section('attention forward + backward');
        const rows = benchAttention(args.device, timing);
        printAttention(rows);
        summary.attention = rows.map((r) => ({ ...ATT, dropout: r.dropout, forward_ms: round(r.forwardMs), backward_ms: round(r.backwardMs), total_ms: round(r.totalMs), gflops: round(r.gflops, 2) }));
        break;
      }
      case 'train': {
        section('training');
        const r = benchTrain(args.device, args.trainSteps);
        printTrain(r, args.device);
        const profile = profileTrainStep(args.device, r.batch, r.context, timing);
        printStepProfile(r, profile);
        summary.train = {
          forward_ms: round(r.forwardMs, 1), backward_ms: round(r.backwardMs, 1), adamw_ms: round(r.updateMs, 1),
          gemm_ms: round(profile.gemmMs, 1), gemm_gflops: round(profile.gemmGflops, 1), step_over_gemm: round(r.msPerStep / profile.gemmMs, 3),
          parts_ms: Object.fromEntries(profile.parts.map((x) => [x.name, round(x.ms, 1)])),
          batch: r.batch, context: r.context, parameters: r.parameters, steps: r.steps, ms_per_step: round(r.msPerStep, 1),
          tokens_per_s: round(r.tokensPerSecond, 1), loss: round(r.loss, 4),
          max_rss_mb: round(r.maxRss / MB, 1), device_peak_mb: round(r.devicePeakMemory / MB, 1),
        };
        break;
      }
      case 'generate': {
        section('generation');
        const r = await benchGenerate(args.device, args.genTokens, args.genTokensNoCache, 20, args.genBatch, timing, args.genExport);
        printGenerate(r);
        const run = (g: GenerationResult['cached']) => ({
          batch: g.batch, new_tokens: g.newTokens, prompt_tokens: g.promptTokens, first_token_ms: round(g.firstTokenS * 1e3, 1),
          total_s: round(g.totalS), tokens_per_s: round(g.tokensPerSecond, 2), decode_tokens_per_s: round(g.decodeTokensPerSecond, 2),
          ...(g.useCache ? { bound_tokens_per_s: round(g.boundTokensPerSecond, 2), fraction_of_bound: round(g.fractionOfBound, 3) } : {}),
        });
        const p = r.profile;
        summary.generate = {
          parameters: r.parameters, bandwidth_gbs: round(r.bandwidthGBs, 2), cached: run(r.cached), batched: run(r.batched),
          uncached: run(r.uncached), speedup: round(r.speedup, 2), batch_speedup: round(r.batchSpeedup, 2),
          bf16: {
            cached: run(r.bf16.cached), batched: run(r.bf16.batched), speedup: round(r.bf16.speedup, 3),
            batched_speedup: round(r.bf16.batchedSpeedup, 3), ids_agreement: round(r.bf16.idsAgreement, 3),
          },
          profile: {
            position: p.position, sync_step_ms: round(p.syncStepMs, 2), async_step_ms: round(p.asyncStepMs, 2), gemm_path_ms: round(p.gemmPathMs, 2),
            bytes_per_token: p.weightBytes + p.cacheBytes, parts: p.parts.map((x) => ({ name: x.name, ms: round(x.ms, 3) })),
          },
        };
        break;
      }
      case 'ddp': {
        section('data-parallel training (CPU ranks over MPI)');
        const why = ddpUnavailable();
        if (why) {
          console.log(`skipped: ${why}`);
          summary.ddp = { skipped: why };
          break;
        }
        const rows = await benchDdp(args.quick ? 3 : args.ddpSteps);
        printDdp(rows);
        summary.ddp = rows.map((r) => ({ ranks: r.ranks, steps: r.steps, tokens_per_step: r.tokensPerStep, ms_per_step: round(r.msPerStep, 1), tokens_per_s: round(r.tokensPerSecond, 1) }));
        break;
      }
    }
    console.log(`(${s}: ${(now() - t0).toFixed(1)} s)`);
  }
  summary.seconds = round(now() - started, 1);
  console.log(`\ntotal ${(now() - started).toFixed(1)} s`);
  if (args.json) console.log(JSON.stringify(summary));
}

main().catch((e: unknown) => {
  console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
