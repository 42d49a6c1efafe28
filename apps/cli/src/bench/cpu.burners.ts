import { spawn, type ChildProcess } from 'node:child_process';

/** A burner never outlives this, even if whoever started it dies without stopping it. */
export const BURNER_MAX_MS = 20 * 60_000;

export interface CpuBurners {
  readonly count: number;
  stop(): void;
}

/**
 * `count` processes that each keep one core busy (a bounded spin loop in a child Node), the load under which a
 * migration must still be exact. Each stops by itself after `maxMs`; `stop()` kills them by pid at once.
 */
export function startCpuBurners(count: number, maxMs = BURNER_MAX_MS): CpuBurners {
  const children: ChildProcess[] = [];
  for (let i = 0; i < count; i++) {
    const child = spawn(process.execPath, ['-e', `const end = Date.now() + ${maxMs}; while (Date.now() < end);`], {
      stdio: 'ignore',
    });
    child.on('error', () => undefined);
    children.push(child);
  }
  return {
    count,
    stop: () => {
      for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
