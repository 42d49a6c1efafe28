import { setTimeout as sleep } from 'node:timers/promises';
import { WaitTimeoutError } from './errors.js';

export { sleep };

export interface WaitOptions {
  /** What is being waited for, for the timeout message. */
  what: string;
  timeoutMs: number;
  intervalMs?: number;
}

const DEFAULT_POLL_INTERVAL_MS = 25;

/**
 * Polls `check` until it returns a value other than `undefined`/`false`, and returns that value.
 * An exception thrown by `check` counts as "not yet"; the last one becomes the timeout error's cause.
 */
export async function waitUntil<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  const interval = options.intervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) throw new WaitTimeoutError(options.what, options.timeoutMs, { cause: lastError });
    await sleep(interval);
  }
}
