// What a broken stdout/stderr pipe does. By default (`gptcuda generate | head`)
// the command exits quietly, as Unix tools do; a command with work to save
// (train) installs a handler instead, so EPIPE never costs a checkpoint.
let handler: ((stream: 'stdout' | 'stderr') => void) | null = null;

export function setOutputClosedHandler(f: ((stream: 'stdout' | 'stderr') => void) | null): void {
  handler = f;
}

const BROKEN = new Set(['EPIPE', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

export function installOutputErrorHandlers(): void {
  for (const name of ['stdout', 'stderr'] as const) {
    process[name].on('error', (e: NodeJS.ErrnoException) => {
      if (!BROKEN.has(e.code ?? '')) throw e;
      if (handler) handler(name);
      else if (name === 'stdout') process.exit(0);
    });
  }
}
