// Runs the built CLI (`node dist/cli/main.js`) as a user would, for the CLI
// test files. Asynchronous, so independent commands can run side by side.
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

export const CLI_MAIN = join(resolve(import.meta.dirname, '..', '..'), 'dist', 'cli', 'main.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `env` is the base environment (default: this process's); `extraEnv` is laid over it. */
export function spawnCli(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; extraEnv?: Record<string, string> }): Promise<CliResult> {
  return new Promise((res, rej) => {
    const env = { ...(opts.env ?? process.env), GPTCUDA_DEBUG: '', ...opts.extraEnv };
    const child = spawn(process.execPath, [CLI_MAIN, ...args], { cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}
