import { startChildForwarder, startInProcessForwarder } from './forwarder.handle.js';
import type { ForwarderStarter } from './relay.registry.js';

/** Longest a forwarder child may take to listen inside its namespace (ms). */
export const FORWARDER_START_TIMEOUT_MS = 10_000;

const children = new Set<number>();
let exitHook = false;

/** Kills (SIGKILL) every forwarder child still alive: the service's last words, when it exits without its shutdown. */
function killChildren(): void {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

/**
 * In this process for a listener in the service's own namespace; a child `ip netns exec <ns> node
 * forwarder.child.js` for one inside `netns`. Children are tracked by pid and never outlive the service: their stdin
 * closes with it, and what is left at exit is killed.
 */
export function forwarderStarter(options: { ipBin: string; startTimeoutMs?: number }): ForwarderStarter {
  if (!exitHook) {
    exitHook = true;
    process.once('exit', killChildren);
  }
  return (config, netns) =>
    netns === undefined
      ? startInProcessForwarder(config)
      : startChildForwarder(config, {
          netns,
          ipBin: options.ipBin,
          startTimeoutMs: options.startTimeoutMs ?? FORWARDER_START_TIMEOUT_MS,
          track: (pid, alive) => (alive ? children.add(pid) : children.delete(pid)),
        });
}
