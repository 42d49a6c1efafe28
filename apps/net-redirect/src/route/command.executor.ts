import { execFile } from 'node:child_process';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** Runs one command (argv, no shell). The seam the route agent's unit specs replace with a fake. */
export interface CommandExecutor {
  run(argv: readonly string[], options: { timeoutMs: number }): Promise<CommandResult>;
}

/** A command that exited non-zero, was killed (its time limit) or could not start. */
export class CommandFailedError extends Error {
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(argv: readonly string[], fields: { exitCode: number | null; stderr: string; reason?: string }) {
    const detail = fields.stderr.trim() || fields.reason || `exit code ${fields.exitCode}`;
    super(`${argv.join(' ')}: ${detail}`);
    this.name = 'CommandFailedError';
    this.argv = argv;
    this.exitCode = fields.exitCode;
    this.stderr = fields.stderr.trim();
  }
}

const MAX_OUTPUT_BYTES = 1 << 20;

/** The real executor: `execFile`, killed at its time limit. */
export const processExecutor: CommandExecutor = {
  run(argv, { timeoutMs }) {
    const [file, ...args] = argv;
    return new Promise((resolve, reject) => {
      execFile(
        file,
        args,
        { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (!err) return resolve({ stdout, stderr });
          const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
          const exitCode = typeof e.code === 'number' ? e.code : null;
          const reason = e.killed
            ? `killed after ${timeoutMs} ms`
            : typeof e.code === 'string'
              ? `${e.code}: ${e.message}`
              : undefined;
          reject(new CommandFailedError(argv, { exitCode, stderr: stderr ?? '', reason }));
        },
      );
    });
  },
};
