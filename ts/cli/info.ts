// `gptcuda info`: the build (backends compiled in), the devices found, and why CUDA is unavailable.
import type { Argv } from 'yargs';
import { LIBRARY_VERSION } from '../checkpoint/checkpoint.js';
import { native } from '../tensor/native.js';

export function infoCommand(y: Argv): Argv<{ json: boolean }> {
  return y
    .usage('$0 info [--json]\n\nShow the build, the devices and whether CUDA is usable.')
    .option('json', { type: 'boolean', default: false, describe: 'machine-readable JSON on stdout' })
    .example('$0 info', 'human-readable')
    .example('$0 info --json', 'for scripts') as unknown as Argv<{ json: boolean }>;
}

export function runInfo(args: { json: boolean }): void {
  const b = native().backends();
  const devices: Record<string, unknown>[] = [{ device: 'cpu', ...native().deviceInfo('cpu') }];
  if (b.cuda.available) devices.push({ device: 'cuda', ...native().deviceInfo('cuda') });
  // Data parallel: libmpi (CPU tensors) and libnccl (CUDA tensors, through the CUDA backend) are opened at run time.
  const mpi = native().mpi.probe();
  const nccl = native().nccl.probe();
  const info = { version: LIBRARY_VERSION, node: process.version, backends: b, devices, mpi, nccl };
  if (args.json) return console.log(JSON.stringify(info));
  console.log(`gptcuda ${LIBRARY_VERSION} (Node ${process.version})`);
  console.log(`cpu:  ${b.cpu.threads} threads, GEMM: ${b.cpu.gemm}`);
  console.log(mpi.available ? `mpi:  ${mpi.impl} (${mpi.library})` : `mpi:  unavailable: ${mpi.reason}`);
  console.log(nccl.available ? `nccl: ${nccl.version} (${nccl.library})` : `nccl: unavailable: ${nccl.reason}`);
  // Each reason once: a build without CUDA is unavailable for that reason alone.
  if (!b.cuda.available && (b.cuda.reason ?? '').includes(b.cuda.buildInfo)) return console.log(`cuda: unavailable: ${b.cuda.reason}`);
  console.log(`cuda: ${b.cuda.buildInfo}`);
  if (b.cuda.available) {
    const d = native().deviceInfo('cuda');
    console.log(`      ${d.name}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, compute capability ${d.computeCapability}`);
  } else console.log(`      unavailable: ${b.cuda.reason}`);
}
