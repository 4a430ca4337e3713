// vitest globalSetup for the cuda-emulated projects: builds the CUDA backend's
// sources against the SIMT emulator (native/cuda/emu/backend.sh) into
// build/emu/gptcuda_cuda.so, which those projects load through
// GPTCUDA_CUDA_LIBRARY. Incremental: only changed sources are recompiled.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const emulatedLibrary = path.join(root, 'build', 'emu', 'gptcuda_cuda.so');

export default function setup() {
  execFileSync('bash', [path.join(root, 'native/cuda/emu/backend.sh'), path.dirname(emulatedLibrary)], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}
