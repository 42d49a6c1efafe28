/**
 * What the forwarder child (`forwarder.child.ts`, run inside a namespace) and the service say to each other, one JSON
 * object a line: the child reports on stdout, the service commands on stdin. Imports nothing from wanmig's libs.
 */
import type { Endpoint, ForwarderCounters, ForwarderTarget, OpenFlow, TcpForwarderOptions } from './tcp.forwarder.js';

/** argv[2] of the child. */
export interface ForwarderChildConfig extends TcpForwarderOptions {
  /** Longest a byte count waits before it is reported (ms); connection changes are reported at once. */
  reportMs: number;
}

export type ForwarderReport =
  | { type: 'listening'; address: Endpoint; addresses: Endpoint[]; pid: number }
  /** The answer to a `retarget`, in the order they came. */
  | { type: 'retargeted' }
  /** The answer to a `flows`, in the order they came. */
  | { type: 'flows'; flows: OpenFlow[] }
  | ({ type: 'counters' } & ForwarderCounters)
  | { type: 'error'; code?: string; message: string };

/**
 * `drain`: stop accepting, let open connections finish; `stop`: cut everything and exit; `retarget`: new connections
 * (and open `lines` ones) go to `target` from now on; `flows`: report the open client connections.
 */
export type ForwarderCommand =
  | { type: 'drain' }
  | { type: 'stop' }
  | { type: 'retarget'; target: ForwarderTarget; relay: boolean }
  | { type: 'flows' };

/** Splits a byte stream into lines and hands each parsed JSON object on (anything else is ignored). */
export function jsonLines<T>(onMessage: (message: T) => void): (chunk: Buffer | string) => void {
  let partial = '';
  return (chunk) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        onMessage(JSON.parse(line) as T);
      } catch {
        // Not ours (a warning node printed): ignored.
      }
    }
  };
}
