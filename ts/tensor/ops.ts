// Typed entry points to the native ops. Each takes Tensors and forwards their
// handles; shapes, dtypes, devices and liveness are checked natively.
// Backward ops ACCUMULATE into their gradient outputs (see backend.h).
import { native } from './native.js';
import type { Tensor } from './tensor.js';

const h = (t: Tensor) => t.handle;
const hOpt = (t: Tensor | null | undefined) => (t ? t.handle : null);
const o = () => native().ops;

/** Counter-based RNG address of a dropout site: the same (seed, stream) gives the same mask. */
export interface DropoutRng {
  seed: number;
  stream: number;
}

export const fill = (x: Tensor, value: number) => o().fill(h(x), value);
export const scale = (x: Tensor, factor: number) => o().scale(h(x), factor);
export const add = (out: Tensor, a: Tensor, b: Tensor) => o().add(h(out), h(a), h(b));
export const accumulate = (dst: Tensor, src: Tensor) => o().accumulate(h(dst), h(src));
export const copy = (dst: Tensor, src: Tensor) => o().copy(h(dst), h(src));
/** dst = src converted between float32 and bfloat16 (round to nearest even), on one device. */
export const convert = (dst: Tensor, src: Tensor) => o().convert(h(dst), h(src));
/** x = mean + std * N(0, 1) from the counter-based RNG: reproducible on every backend. */
export const fillNormal = (x: Tensor, mean: number, std: number, rng: DropoutRng) =>
  o().fillNormal(h(x), mean, std, rng.seed, rng.stream);
/** x = U[lo, hi) from the counter-based RNG. */
export const fillUniform = (x: Tensor, lo: number, hi: number, rng: DropoutRng) =>
  o().fillUniform(h(x), lo, hi, rng.seed, rng.stream);

export const embeddingForward = (out: Tensor, ids: Tensor, wte: Tensor, wpe: Tensor, pos0 = 0) =>
  o().embeddingForward(h(out), h(ids), h(wte), h(wpe), pos0);
export const embeddingBackward = (dwte: Tensor | null, dwpe: Tensor | null, dout: Tensor, ids: Tensor, pos0 = 0) =>
  o().embeddingBackward(hOpt(dwte), hOpt(dwpe), h(dout), h(ids), pos0);

export const layernormForward = (out: Tensor, mean: Tensor, rstd: Tensor, inp: Tensor, weight: Tensor, bias: Tensor) =>
  o().layernormForward(h(out), h(mean), h(rstd), h(inp), h(weight), h(bias));
export const layernormBackward = (
  dinp: Tensor | null, dweight: Tensor | null, dbias: Tensor | null,
  dout: Tensor, inp: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor,
) => o().layernormBackward(hOpt(dinp), hOpt(dweight), hOpt(dbias), h(dout), h(inp), h(weight), h(mean), h(rstd));
/**
 * residualOut = a + b and lnOut = LayerNorm(residualOut) in one pass: the same
 * bits as add then layernormForward. residualOut may be a or b; lnOut must
 * overlap none of them. The backward is layernormBackward with inp =
 * residualOut and dinp = the residual stream's gradient (it accumulates).
 */
export const residualLayernormForward = (
  residualOut: Tensor, lnOut: Tensor, mean: Tensor, rstd: Tensor, a: Tensor, b: Tensor, weight: Tensor, bias: Tensor,
) => o().residualLayernormForward(h(residualOut), h(lnOut), h(mean), h(rstd), h(a), h(b), h(weight), h(bias));

/** c = alpha * op(a) op(b) + beta * c for 2-D tensors; op transposes when asked. */
export const gemm = (c: Tensor, a: Tensor, b: Tensor, transA = false, transB = false, alpha = 1, beta = 0) =>
  o().gemm(h(c), h(a), h(b), transA, transB, alpha, beta);
/** out = inp weight^T + bias, weight [out_features, in_features] as PyTorch's Linear. */
export const matmulForward = (out: Tensor, inp: Tensor, weight: Tensor, bias: Tensor | null = null) =>
  o().matmulForward(h(out), h(inp), h(weight), hOpt(bias));
/**
 * Accumulates into dinp, and into dweight and dbias unless `accumulate` is
 * false: then they are written (the first backward after zeroing gradients).
 */
export const matmulBackward = (
  dinp: Tensor | null, dweight: Tensor | null, dbias: Tensor | null, dout: Tensor, inp: Tensor, weight: Tensor,
  options: { accumulate?: boolean } = {},
) => o().matmulBackward(hOpt(dinp), hOpt(dweight), hOpt(dbias), h(dout), h(inp), h(weight), options.accumulate ?? true);

/**
 * The MLP's first Linear with its GELU: pre = inp weight^T + bias, out =
 * gelu(pre) (on CUDA in bf16, the GEMM's epilogue applies GELU to the float32
 * sum). out and pre overlap nothing.
 */
export const matmulGeluForward = (out: Tensor, pre: Tensor, inp: Tensor, weight: Tensor, bias: Tensor | null = null) =>
  o().matmulGeluForward(h(out), h(pre), h(inp), h(weight), hOpt(bias));
/**
 * The backward of y = act weight^T + bias with act = gelu(pre): writes dpre =
 * (dout weight) * gelu'(pre) (never accumulates), and dweight, dbias as
 * matmulBackward with inp = act.
 */
export const geluMatmulBackward = (
  dpre: Tensor, dweight: Tensor | null, dbias: Tensor | null, dout: Tensor, act: Tensor, pre: Tensor, weight: Tensor,
  options: { accumulate?: boolean } = {},
) => o().geluMatmulBackward(h(dpre), hOpt(dweight), hOpt(dbias), h(dout), h(act), h(pre), h(weight), options.accumulate ?? true);

export const geluForward = (out: Tensor, inp: Tensor) => o().geluForward(h(out), h(inp));
export const geluBackward = (dinp: Tensor, inp: Tensor, dout: Tensor) => o().geluBackward(h(dinp), h(inp), h(dout));

export const dropoutForward = (out: Tensor, inp: Tensor, p: number, rng: DropoutRng) =>
  o().dropoutForward(h(out), h(inp), p, rng.seed, rng.stream);
export const dropoutBackward = (dinp: Tensor, dout: Tensor, p: number, rng: DropoutRng) =>
  o().dropoutBackward(h(dinp), h(dout), p, rng.seed, rng.stream);

/** Causal self-attention over qkv [B,T,3C]; saves lse [B,nHeads,T] for the backward. */
export const attentionForward = (out: Tensor, lse: Tensor, qkv: Tensor, nHeads: number, p = 0, rng: DropoutRng = { seed: 0, stream: 0 }) =>
  o().attentionForward(h(out), h(lse), h(qkv), nHeads, p, rng.seed, rng.stream);
export const attentionBackward = (
  dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, nHeads: number,
  p = 0, rng: DropoutRng = { seed: 0, stream: 0 },
) => o().attentionBackward(h(dqkv), h(dout), h(qkv), h(out), h(lse), nHeads, p, rng.seed, rng.stream);
/** KV-cache attention: stores K/V of the new positions at pos0.. and attends over 0..each position. */
export const attentionDecode = (out: Tensor, kcache: Tensor, vcache: Tensor, qkv: Tensor, pos0: number) =>
  o().attentionDecode(h(out), h(kcache), h(vcache), h(qkv), pos0);

export const IGNORE_INDEX = -100;
export const crossentropyForward = (losses: Tensor, logits: Tensor, targets: Tensor, ignoreIndex = IGNORE_INDEX) =>
  o().crossentropyForward(h(losses), h(logits), h(targets), ignoreIndex);
/** Losses, and dlogits = dloss (softmax - onehot) WRITTEN (dlogits may be logits itself). */
export const crossentropyForwardBackward = (
  losses: Tensor, dlogits: Tensor, logits: Tensor, targets: Tensor, dloss: number, ignoreIndex = IGNORE_INDEX,
) => o().crossentropyForwardBackward(h(losses), h(dlogits), h(logits), h(targets), dloss, ignoreIndex);

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
}
/**
 * AdamW on the float32 master weights. With bfloat16 grads, `lowPrecision`
 * names the model's bfloat16 parameters, written from the new master by
 * stochastic rounding drawn from `rounding` (the same on every backend);
 * `offset` (default 0) is the first element's index in the draws' numbering:
 * a ZeRO-1 shard's start in the flat buffer, so it rounds as the whole update.
 */
export const adamw = (
  master: Tensor, grads: Tensor, m: Tensor, v: Tensor, a: AdamWParams,
  lowPrecision?: { params: Tensor; rounding: DropoutRng; offset?: number },
) =>
  lowPrecision
    ? o().adamw(h(master), h(grads), h(m), h(v), a.lr, a.beta1, a.beta2, a.eps, a.weightDecay, a.step,
      h(lowPrecision.params), lowPrecision.rounding.seed, lowPrecision.rounding.stream, lowPrecision.offset ?? 0)
    : o().adamw(h(master), h(grads), h(m), h(v), a.lr, a.beta1, a.beta2, a.eps, a.weightDecay, a.step);
/** out[0] = sum(x^2), written on the device. */
export const sumSquares = (out: Tensor, x: Tensor) => o().sumSquares(h(out), h(x));
/** x *= min(1, maxNorm / (sqrt(normSq[0]) + 1e-6)), reading normSq on the device. */
export const clipByNorm = (x: Tensor, normSq: Tensor, maxNorm: number) => o().clipByNorm(h(x), h(normSq), maxNorm);
