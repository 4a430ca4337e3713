// Child process for the checkpoint crash-safety test: writes a large
// checkpoint over an existing one so the parent can SIGKILL it mid-write.
// Usage: node write-checkpoint-child.mjs <compiled archive.js> <target> <megabytes>
import { pathToFileURL } from 'node:url';

const [modulePath, target, megabytes] = process.argv.slice(2);
const { writeCheckpointArchive } = await import(pathToFileURL(modulePath).href);

const tensors = [];
const perTensor = 4 << 20; // 4 MiB each, so the file grows through many writes
const count = Math.ceil((Number(megabytes) << 20) / perTensor);
for (let i = 0; i < count; i++) {
  const data = new Float32Array(perTensor / 4);
  for (let j = 0; j < data.length; j++) data[j] = (i * 31 + j) % 1000;
  tensors.push({ name: `big.${i}`, dtype: 'F32', shape: [data.length], data });
}
process.stdout.write('writing\n');
await writeCheckpointArchive(target, { manifest: { step: 999 }, files: [{ name: 'model.safetensors', tensors }] });
process.stdout.write('done\n');
