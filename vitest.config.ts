import { defineConfig } from 'vitest/config';

import { emulatedLibrary } from './test/helpers/build-emulated-cuda.js';

const shared = {
  testTimeout: 300_000,
  hookTimeout: 300_000,
  // Native ops use every core through their own thread pool; running test
  // files in parallel would only oversubscribe the machine.
  fileParallelism: false,
};

// The CUDA suites run twice more against the emulated CUDA backend (the real
// native/cuda sources on a CPU SIMT emulator, see native/cuda/emu/), so the
// CUDA code is exercised on every machine, GPU or not: as on an H100 (TF32
// tensor cores, and bf16 ones for bf16 attention), with TF32 off (the CUDA-core
// attention kernels, float32 and bf16), and as on an
// A100 (sm_80's smaller shared memory per block); and the op table's
// tensor-core ops once more with the emulator's TF32 rounding off.
const cudaSuites = ['test/op-table.test.ts', 'test/cuda-model.test.ts', 'test/cuda-errors.test.ts', 'test/cuda-bf16.test.ts'];
const emulated = (name: string, include: string[], env: Record<string, string>, testNamePattern?: RegExp) => ({
  test: {
    ...shared,
    name,
    include,
    testNamePattern,
    globalSetup: ['test/helpers/build-emulated-cuda.ts'],
    env: { GPTCUDA_CUDA_LIBRARY: emulatedLibrary, ...env },
  },
});

export default defineConfig({
  test: {
    projects: [
      { test: { ...shared, name: 'main', include: ['test/**/*.test.ts'] } },
      emulated('cuda-emulated', cudaSuites, {}),
      emulated('cuda-emulated-fp32', ['test/op-table.test.ts'], { GPTCUDA_TF32: '0' }),
      emulated('cuda-emulated-sm80', ['test/op-table.test.ts'], { GPTCUDA_EMU_CC: '8.0' }),
      // the ops that run on tensor cores (attention with hs <= 64, cuBLAS), on unrounded inputs: float32 tolerances
      emulated('cuda-emulated-tc-exact', ['test/op-table.test.ts'], { GPTCUDA_EMU_TF32_EXACT: '1' }, /^op table on cuda (attention|gemm|matmul)/),
    ],
  },
});
