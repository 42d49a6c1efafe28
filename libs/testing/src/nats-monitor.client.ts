import { waitUntil } from './wait.util.js';

/** Anything with a monitoring endpoint: a {@link NatsServerHandle} fits. */
export interface MonitoredServer {
  readonly name: string;
  readonly monitorUrl?: string;
}

export interface LeafConnectionInfo {
  account: string;
  ip: string;
  port: number;
  rtt?: string;
  in_msgs: number;
  out_msgs: number;
  in_bytes: number;
  out_bytes: number;
  subscriptions: number;
  subscriptions_list?: string[];
}

export interface LeafzResponse {
  server_id: string;
  leafnodes: number;
  leafs?: LeafConnectionInfo[] | null;
}

const REQUEST_TIMEOUT_MS = 2_000;

export async function fetchMonitor<T>(server: MonitoredServer, path: string): Promise<T> {
  if (!server.monitorUrl) throw new Error(`server ${server.name} has no monitoring endpoint`);
  const response = await fetch(`${server.monitorUrl}${path}`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`GET ${path} on ${server.name}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

export function leafz(server: MonitoredServer, subscriptions = false): Promise<LeafzResponse> {
  return fetchMonitor<LeafzResponse>(server, subscriptions ? '/leafz?subs=1' : '/leafz');
}

/** Waits until `server` has at least `count` leafnode connections (solicited or accepted). */
export async function waitForLeafConnections(server: MonitoredServer, count = 1, timeoutMs = 15_000): Promise<void> {
  await waitUntil(async () => (await leafz(server)).leafnodes >= count, {
    what: `${count} leafnode connection(s) on ${server.name}`,
    timeoutMs,
  });
}

/**
 * Waits until `server` has learned, over a leafnode connection, of a remote subscription matching `subject`.
 * Interest crosses the WAN asynchronously (one one-way delay after the remote SUB), so a publisher that must not
 * lose its first message waits for this first.
 */
export async function waitForRemoteInterest(
  server: MonitoredServer,
  subject: string,
  timeoutMs = 15_000,
): Promise<void> {
  await waitUntil(
    async () => {
      const info = await leafz(server, true);
      return (info.leafs ?? []).some((leaf) => (leaf.subscriptions_list ?? []).some((s) => subjectMatches(s, subject)));
    },
    { what: `remote interest in ${subject} at ${server.name}`, timeoutMs },
  );
}

/** NATS subject matching: does subscription `filter` (may hold `*` and `>`; may carry a queue name) match `subject`? */
export function subjectMatches(filter: string, subject: string): boolean {
  const filterTokens = filter.split(' ')[0].split('.');
  const subjectTokens = subject.split('.');
  for (let i = 0; i < filterTokens.length; i++) {
    const token = filterTokens[i];
    if (token === '>') return subjectTokens.length > i;
    if (i >= subjectTokens.length) return false;
    if (token !== '*' && token !== subjectTokens[i]) return false;
  }
  return filterTokens.length === subjectTokens.length;
}
