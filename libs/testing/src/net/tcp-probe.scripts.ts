/**
 * A tiny TCP probe for the network bed, as inline `node -e` scripts (they run inside namespaces, where the test
 * process itself cannot be): a server that writes `<label> <n>\n` every 50 ms on each connection, and a client that
 * reports, one JSON object per line on stdout, what happened on its single connection (no reconnects). Both end by
 * themselves after a time limit.
 */

/** argv: address port label lifetimeMs. Prints `listening <address>:<port>` when ready. */
export const TCP_PROBE_SERVER_SCRIPT = String.raw`
const net = require('node:net');
const [address, port, label, lifetimeMs] = process.argv.slice(1);
const sockets = new Set();
const server = net.createServer((socket) => {
  sockets.add(socket);
  let n = 0;
  const timer = setInterval(() => {
    n += 1;
    socket.write(label + ' ' + n + '\n');
  }, 50);
  const forget = () => {
    clearInterval(timer);
    sockets.delete(socket);
  };
  socket.on('data', () => {});
  socket.on('end', () => socket.end());
  socket.on('error', forget);
  socket.on('close', forget);
});
server.on('error', (err) => {
  console.error('error ' + err.code + ' ' + err.message);
  process.exit(2);
});
server.listen({ host: address, port: Number(port) }, () => console.log('listening ' + address + ':' + port));
setTimeout(() => {
  for (const socket of sockets) socket.destroy();
  process.exit(0);
}, Number(lifetimeMs));
process.on('SIGTERM', () => process.exit(0));
`;

/** argv: address port durationMs connectTimeoutMs. One JSON event per line; exits when the connection closes. */
export const TCP_PROBE_CLIENT_SCRIPT = String.raw`
const net = require('node:net');
const [address, port, durationMs, connectTimeoutMs] = process.argv.slice(1);
const emit = (event, extra) => process.stdout.write(JSON.stringify({ at: Date.now(), event, ...extra }) + '\n');
const socket = net.connect({ host: address, port: Number(port) });
socket.setNoDelay(true);
socket.setEncoding('utf8');
const connectTimer = setTimeout(() => {
  emit('error', { code: 'CONNECT_TIMEOUT', message: 'no connection after ' + connectTimeoutMs + ' ms' });
  socket.destroy();
}, Number(connectTimeoutMs));
const lifeTimer = setTimeout(() => {
  emit('timeout');
  socket.destroy();
}, Number(durationMs));
let pending = '';
socket.on('connect', () => {
  clearTimeout(connectTimer);
  emit('connected', { local: socket.localAddress + ':' + socket.localPort });
});
socket.on('data', (chunk) => {
  pending += chunk;
  for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
    emit('line', { text: pending.slice(0, i) });
    pending = pending.slice(i + 1);
  }
});
socket.on('end', () => emit('end'));
socket.on('error', (err) => emit('error', { code: err.code || 'ERROR', message: err.message }));
socket.on('close', () => {
  clearTimeout(connectTimer);
  clearTimeout(lifeTimer);
  emit('closed');
  process.exit(0);
});
process.on('SIGTERM', () => {
  emit('stopped');
  socket.destroy();
});
`;

export type ProbeEventKind = 'connected' | 'line' | 'end' | 'error' | 'timeout' | 'stopped' | 'closed';

export interface ProbeEvent {
  /** Wall clock (ms since the epoch) in the client, same clock as the test's Date.now(). */
  at: number;
  event: ProbeEventKind;
  text?: string;
  code?: string;
  message?: string;
  local?: string;
}

/** How the probe connection ended: `running` while it has not. */
export type ProbeOutcome = 'running' | 'peer-closed' | 'reset' | 'error' | 'timeout' | 'stopped';

export interface ProbeReport {
  connected: boolean;
  /** Lines received (in the window asked for). */
  lines: number;
  /** Lines per label (`A 12` counts for `A`). */
  labels: Record<string, number>;
  firstLineAt?: number;
  lastLineAt?: number;
  /** The longest silence between two consecutive lines, ms. */
  maxGapMs: number;
  outcome: ProbeOutcome;
  /** The error code, for `reset` and `error` (ECONNRESET, ETIMEDOUT, CONNECT_TIMEOUT...). */
  error?: string;
  endedAt?: number;
}

/** Parses the client's stdout; an incomplete last line (still being written) is left out. */
export function parseProbeEvents(stdout: string): ProbeEvent[] {
  const complete = stdout.slice(0, stdout.lastIndexOf('\n') + 1);
  const events: ProbeEvent[] = [];
  for (const line of complete.split('\n')) {
    if (!line.trim()) continue;
    try {
      const parsed = JSON.parse(line) as ProbeEvent;
      if (typeof parsed.at === 'number' && typeof parsed.event === 'string') events.push(parsed);
    } catch {
      // not one of ours (a stray warning): ignore
    }
  }
  return events;
}

/** Sums the events up; `since` (wall clock ms) counts only lines received from then on. */
export function summarizeProbe(events: readonly ProbeEvent[], since = 0): ProbeReport {
  const report: ProbeReport = { connected: false, lines: 0, labels: {}, maxGapMs: 0, outcome: 'running' };
  let previousLineAt: number | undefined;
  for (const e of events) {
    switch (e.event) {
      case 'connected':
        report.connected = true;
        break;
      case 'line': {
        if (previousLineAt !== undefined) report.maxGapMs = Math.max(report.maxGapMs, e.at - previousLineAt);
        previousLineAt = e.at;
        if (e.at < since) break;
        const label = (e.text ?? '').split(' ')[0];
        report.labels[label] = (report.labels[label] ?? 0) + 1;
        report.lines += 1;
        report.firstLineAt ??= e.at;
        report.lastLineAt = e.at;
        break;
      }
      case 'end':
        settle(report, 'peer-closed', e.at);
        break;
      case 'error':
        settle(report, e.code === 'ECONNRESET' ? 'reset' : 'error', e.at, e.code);
        break;
      case 'timeout':
        settle(report, 'timeout', e.at);
        break;
      case 'stopped':
        settle(report, 'stopped', e.at);
        break;
      case 'closed':
        report.endedAt ??= e.at;
        if (report.outcome === 'running') report.outcome = 'peer-closed';
        break;
    }
  }
  return report;
}

function settle(report: ProbeReport, outcome: ProbeOutcome, at: number, error?: string): void {
  if (report.outcome !== 'running') return;
  report.outcome = outcome;
  report.endedAt = at;
  if (error) report.error = error;
}
