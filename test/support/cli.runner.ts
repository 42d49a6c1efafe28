import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/apps/cli/src/main.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `wanmig` CLI as a user would; never throws on a non-zero exit. */
export function runCli(args: string[], timeoutMs = 240_000, env?: Record<string, string>): Promise<CliResult> {
  if (!existsSync(CLI))
    throw new Error(`${CLI} is missing: run npm run build (npm test does it through the bootstrap)`);
  return new Promise((resolve) => {
    const options = { timeout: timeoutMs, maxBuffer: 16 << 20, env: { ...process.env, ...env } };
    execFile(process.execPath, [CLI, ...args], options, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The JSON object a command prints on its last line with --json. */
export function lastJsonLine<T>(stdout: string): T {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as T;
}
