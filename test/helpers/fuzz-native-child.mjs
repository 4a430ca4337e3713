// Seeded fuzz of the addon's JS surface, run in a child process by
// test/fuzz-native.test.ts so that a crash (SIGSEGV, SIGABRT) shows up as the
// child's exit signal instead of killing the test runner. Every op and Tensor
// member is called with random and perturbed arguments: wrong shapes, dtypes
// and types, negative/huge/NaN/fractional numbers, disposed tensors, views at
// huge offsets, inside and outside recordings. A refused call must throw an
// Error; anything else thrown is reported and fails the run (exit code 2).
//   node test/helpers/fuzz-native-child.mjs <seed> <calls>
// Uses dist/ (npm run build:ts) because plain node cannot import the .ts sources.
import { Tensor, native } from '../../dist/tensor/index.js';

const seed = Number(process.argv[2] ?? 1);
const target = Number(process.argv[3] ?? 2000);

// mulberry32: small, seedable, enough for choosing arguments.
let state = seed >>> 0;
function rand() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rand() * n);
const pick = (xs) => xs[int(xs.length)];

const addon = native();
const ops = addon.ops;

// Arities of the op table (ts/tensor/native.ts); calls use these ±1.
const arity = {
  fill: 2, scale: 2, add: 3, accumulate: 2, copy: 2, fillNormal: 5, fillUniform: 5,
  embeddingForward: 5, embeddingBackward: 5, layernormForward: 6, layernormBackward: 8, residualLayernormForward: 8,
  gemm: 7, matmulForward: 4, matmulBackward: 7, matmulGeluForward: 5, geluMatmulBackward: 8, geluForward: 2, geluBackward: 3,
  dropoutForward: 5, dropoutBackward: 5, attentionForward: 7, attentionBackward: 9,
  attentionDecode: 5, crossentropyForward: 4, crossentropyForwardBackward: 6, adamw: 13,
  sumSquares: 2, clipByNorm: 3, convert: 2,
};
for (const name of Object.keys(ops)) if (!(name in arity)) throw new Error(`fuzz: no arity for new op ${name}`);

// Shapes of a small GPT block (B=2, T=4, C=6, NH=2, V=10, Tmax=8) so that
// well-formed calls happen too, plus random small shapes.
const gptShapes = [[2, 4], [2, 4, 6], [2, 4, 18], [2, 2, 4], [10, 6], [8, 6], [6], [18, 6], [18], [2, 2, 8, 3], [8], [1], [2, 4, 10], [8, 10]];
const oddNumbers = [0, 1, 2, 3, -1, -0.5, 0.5, 1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 2 ** 64, -(2 ** 63), 1e308, Number.MIN_VALUE, -100];
// For new tensors: refused sizes only, never a legal multi-GiB allocation.
const oddSizes = oddNumbers.filter((x) => !(x >= 2 ** 20 && x <= 2 ** 52));
const oddValues = [undefined, null, 'x', '3', true, false, {}, [], [1, 2], () => 1, Symbol('s'), 10n, new Float32Array(4), new Int32Array(8)];

const pool = [];
function randomShape() {
  if (rand() < 0.5) return pick(gptShapes);
  const rank = int(5);
  return Array.from({ length: rank }, () => pick([0, 1, 2, 3, 4, 6]));
}
function newTensor() {
  const dtype = rand() < 0.7 ? 'float32' : rand() < 0.8 ? 'int32' : 'bfloat16';
  const shape = randomShape();
  const t = Tensor.zeros(shape, { dtype });
  const n = t.numel;
  // Ids in range for the GPT shapes most of the time, garbage otherwise.
  if (dtype === 'int32') t.write(Int32Array.from({ length: n }, () => (rand() < 0.9 ? int(4) : pick([-1, 10, 2 ** 31 - 1, -(2 ** 31)]))));
  else if (dtype === 'float32') t.write(Float32Array.from({ length: n }, () => (rand() < 0.95 ? rand() * 2 - 1 : pick([NaN, Infinity, 1e30]))));
  pool.push(t);
  if (pool.length > 40) {
    const old = pool.splice(int(pool.length), 1)[0];
    tryCall(() => old.dispose());
  }
  return t;
}
function randomTensor() {
  const r = rand();
  if (pool.length === 0 || r < 0.15) return newTensor();
  const t = pick(pool);
  if (r < 0.2) {
    const v = tryCall(() => t.view(int(3), randomShape()));
    return v instanceof Tensor ? v : t;
  }
  if (r < 0.23) {
    // A disposed tensor or a view of a disposed root.
    const d = Tensor.zeros(randomShape());
    const v = d.numel > 0 ? d.view(0, [1]) : d;
    d.dispose();
    return v;
  }
  return t;
}
function randomArg() {
  const r = rand();
  if (r < 0.6) return randomTensor().handle;
  if (r < 0.85) return pick(oddNumbers);
  if (r < 0.9) return rand() < 0.5;
  return pick(oddValues);
}

let calls = 0;
let refused = 0;
const bad = [];
function check(e, what) {
  if (e instanceof Error) {
    refused++;
    if (String(e.message).includes('\n') && bad.length < 20) bad.push(`${what}: multi-line message ${JSON.stringify(e.message)}`);
  } else if (bad.length < 20) bad.push(`${what}: threw a non-Error ${String(e)}`);
}
function tryCall(fn, what = 'call') {
  calls++;
  try {
    return fn();
  } catch (e) {
    check(e, what);
    return undefined;
  }
}

const pending = [];
let recording = false;
const tensorMembers = [
  (t) => t.shape, (t) => t.dtype, (t) => t.device, (t) => t.disposed, (t) => t.numel, (t) => t.toString(),
  (t) => t.handle.offset, (t) => t.toFloat32Array(), (t) => t.toInt32Array(), (t) => t.item(),
  (t) => t.view(pick(oddNumbers), randomShape()),
  (t) => t.view(int(4), [pick(oddNumbers), pick(oddNumbers)]),
  (t) => t.view(pick([2 ** 64 - 1, 2 ** 63, 2 ** 53 - 1, 2 ** 53]), [1]),
  (t) => t.view(0, [2 ** 32, 2 ** 32]),
  (t) => t.view(0, [2 ** 32 + 1, 2 ** 32 + 1]),
  (t) => t.handle.view(randomArg(), randomArg()),
  (t) => t.handle.view(0, ['1', null, {}]),
  (t) => t.write(pick([new Float32Array(t.handle.disposed ? 1 : t.numel), new Int32Array(3), new Uint16Array(2)])),
  (t) => t.handle.write(randomArg()),
  (t) => t.dispose(),
];

while (calls < target) {
  const r = rand();
  if (r < 0.6) {
    const name = pick(Object.keys(arity));
    const n = Math.max(0, arity[name] + pick([0, 0, 0, 0, -1, 1]));
    const args = Array.from({ length: n }, randomArg);
    tryCall(() => ops[name](...args), name);
  } else if (r < 0.9) {
    const t = randomTensor();
    const m = pick(tensorMembers);
    tryCall(() => m(t), 'tensor member');
  } else if (r < 0.94) {
    tryCall(() => Tensor.zeros(pick([randomShape(), [pick(oddSizes)], [pick(oddSizes), 3], [2 ** 32, 2 ** 32], [2 ** 40, 2 ** 40, 0]]), { dtype: pick(['float32', 'int32', 'bfloat16', 'int8']), device: pick(['cpu', 'cpu', 'cuda', 'x']) }), 'zeros');
  } else if (r < 0.96) {
    tryCall(() => addon.createTensor(randomArg(), randomArg(), randomArg()), 'createTensor');
  } else if (!recording) {
    tryCall(() => addon.beginRecording(), 'beginRecording');
    recording = true;
  } else {
    const rec = tryCall(() => addon.endRecording(), 'endRecording');
    recording = false;
    // Dispose some pool tensors before or while the recording runs.
    if (rand() < 0.5) for (let i = 0; i < 3 && pool.length; i++) tryCall(() => pool.splice(int(pool.length), 1)[0].dispose());
    const p = tryCall(() => addon.runRecording(rand() < 0.9 ? rec : randomArg()), 'runRecording');
    if (p && typeof p.then === 'function') {
      if (rand() < 0.5) for (let i = 0; i < 3 && pool.length; i++) tryCall(() => pool.splice(int(pool.length), 1)[0].dispose());
      pending.push(p.then(() => {}, (e) => check(e, 'runRecording (async)')));
      if (rand() < 0.5) await Promise.all(pending.splice(0));
    }
  }
}
if (recording) tryCall(() => addon.endRecording());
await Promise.all(pending);
for (const t of pool) tryCall(() => t.dispose());
console.log(JSON.stringify({ seed, calls, refused, bad }));
process.exit(bad.length ? 2 : 0);
