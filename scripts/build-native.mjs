#!/usr/bin/env node
// `npm install` / `npm run build`: builds the native addon, then compiles the
// TypeScript. cmake-js when cmake is on the PATH (CPU + optional CUDA
// backend), else node-gyp with binding.gyp (CPU only). Exactly one of them runs.
//
// Environment:
//   GPTCUDA_CUDA=auto|on|off   CUDA backend (default auto: built when nvcc and cuBLAS are found)
//   CUBLAS_ROOT=<dir>          cuBLAS include/ and lib/ (e.g. an unpacked nvidia-cublas wheel)
//   GPTCUDA_BLAS=auto|on|off   OpenBLAS for CPU GEMM (default auto)
//   GPTCUDA_SKIP_NATIVE=1      skip the addon (TypeScript only)
//   GPTCUDA_BUILD=gyp          use node-gyp even where cmake exists (tests the fallback)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const has = (cmd) => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;

// node-gyp ships inside npm; outside an npm script its path is not in the environment.
function findNpmNodeGyp() {
  const npmCli = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' }).stdout?.trim();
  const candidates = [npmCli && join(npmCli, 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')];
  for (const c of candidates) if (c && existsSync(c)) return c;
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    console.error('gptcuda: neither cmake nor node-gyp was found; install cmake (recommended) or node-gyp.');
    process.exit(1);
  }
}

function run(cmd, args) {
  console.log(`> ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`gptcuda: '${cmd} ${args[0] ?? ''}' failed (exit ${r.status ?? r.signal}).`);
    process.exit(r.status ?? 1);
  }
}

if (process.env.GPTCUDA_SKIP_NATIVE !== '1') {
  if (process.env.GPTCUDA_BUILD !== 'gyp' && has('cmake')) {
    const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
    const defs = [
      `--CDGPTCUDA_CUDA=${process.env.GPTCUDA_CUDA ?? 'auto'}`,
      `--CDGPTCUDA_BLAS=${process.env.GPTCUDA_BLAS ?? 'auto'}`,
    ];
    if (process.env.CUBLAS_ROOT) defs.push(`--CDCUBLAS_ROOT=${process.env.CUBLAS_ROOT}`);
    if (process.env.GPTCUDA_CUDA_ARCHS) defs.push(`--CDGPTCUDA_CUDA_ARCHS=${process.env.GPTCUDA_CUDA_ARCHS}`);
    // configure every time (cheap) so changed options take effect; the build is incremental.
    run(process.execPath, [cmakeJs, 'configure', '--out', 'build', ...defs]);
    run(process.execPath, [cmakeJs, 'build', '--out', 'build']);
  } else {
    console.log('gptcuda: cmake not found, building the CPU backend with node-gyp (binding.gyp)');
    const gyp = process.env.npm_config_node_gyp ?? findNpmNodeGyp();
    // Headers from npm's nodedir or the system's Node, so nothing is downloaded.
    const nodedir = process.env.npm_config_nodedir ?? (existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
    run(process.execPath, [gyp, 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])]);
  }
}

// Compile the TypeScript when the compiler is installed (a development
// checkout); a published package ships dist/ already built.
const tsc = join(root, 'node_modules', '.bin', 'tsc');
if (existsSync(tsc)) run(tsc, ['-p', 'tsconfig.json']);
else if (!existsSync(join(root, 'dist'))) {
  console.error('gptcuda: dist/ is missing and TypeScript is not installed; run `npm install` with dev dependencies.');
  process.exit(1);
}
