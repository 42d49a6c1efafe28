import { rmSync } from 'node:fs';

/**
 * Last line of defence so that nats-servers never outlive the test process: every spawned child and every
 * temporary directory is registered here, and an 'exit' hook (plus SIGINT/SIGTERM/SIGHUP) kills and removes
 * whatever a test forgot to stop. Only synchronous work is possible in an 'exit' hook, hence SIGKILL and rmSync.
 */
const livePids = new Set<number>();
const liveDirs = new Set<string>();
const lastWords = new Set<() => void>();
let hooksInstalled = false;

const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export function trackPid(pid: number): void {
  installHooks();
  livePids.add(pid);
}

export function untrackPid(pid: number): void {
  livePids.delete(pid);
}

export function trackDir(dir: string): void {
  installHooks();
  liveDirs.add(dir);
}

export function untrackDir(dir: string): void {
  liveDirs.delete(dir);
}

/**
 * A synchronous clean-up to run in the same last moment, before tracked dirs go: for processes that are not children
 * (detached guests, found through files in those dirs). Returns the function that unregisters it.
 */
export function onLastWords(cleanup: () => void): () => void {
  installHooks();
  lastWords.add(cleanup);
  return () => lastWords.delete(cleanup);
}

function killEverything(): void {
  for (const cleanup of lastWords) {
    try {
      cleanup();
    } catch {
      // best effort at exit
    }
  }
  lastWords.clear();
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  livePids.clear();
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort at exit
    }
  }
  liveDirs.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killEverything);
  for (const signal of FORWARDED_SIGNALS) {
    const onSignal = (): void => {
      killEverything();
      process.removeListener(signal, onSignal);
      // Keep the default behaviour (terminate) unless someone else handles this signal.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}
