import { WaitTimeoutError } from '../errors.js';
import type { NetRole } from './net-bed.plan.js';
import { assertIPv4 } from './net-bed.plan.js';
import { NetBedError } from './net.errors.js';
import type { NetnsProcess, NetnsSpawnOptions } from './netns.process.js';
import {
  parseProbeEvents,
  summarizeProbe,
  TCP_PROBE_CLIENT_SCRIPT,
  TCP_PROBE_SERVER_SCRIPT,
  type ProbeEvent,
  type ProbeReport,
} from './tcp-probe.scripts.js';

/** What the probe helpers need from a bed: starting a program in one of its namespaces. */
export interface NetSpawner {
  spawn(role: NetRole, argv: readonly string[], options?: NetnsSpawnOptions): NetnsProcess;
}

export const DEFAULT_PROBE_SERVER_LIFETIME_MS = 60_000;
export const DEFAULT_PROBE_CLIENT_DURATION_MS = 15_000;
export const DEFAULT_PROBE_CONNECT_TIMEOUT_MS = 3_000;
const READY_TIMEOUT_MS = 5_000;
const POLL_MS = 20;

export interface ProbeServerOptions {
  address: string;
  port: number;
  /** Written before each line's counter; no spaces. */
  label: string;
  /** The server exits by itself after this long (default 60 s). */
  lifetimeMs?: number;
}

/** Starts the probe server in a namespace and waits until it listens. */
export async function startProbeServer(
  bed: NetSpawner,
  role: NetRole,
  options: ProbeServerOptions,
): Promise<NetnsProcess> {
  assertIPv4(options.address, 'probe server address');
  if (!/^\S+$/.test(options.label)) throw new NetBedError(`probe label ${JSON.stringify(options.label)} has spaces`);
  const lifetime = options.lifetimeMs ?? DEFAULT_PROBE_SERVER_LIFETIME_MS;
  const server = bed.spawn(role, [
    process.execPath,
    '-e',
    TCP_PROBE_SERVER_SCRIPT,
    options.address,
    String(options.port),
    options.label,
    String(lifetime),
  ]);
  try {
    await server.waitForOutput((out) => out.includes('listening '), {
      what: `probe server ${options.label} to listen on ${options.address}:${options.port} in ${role}`,
      timeoutMs: READY_TIMEOUT_MS,
    });
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

export interface ProbeClientOptions {
  address: string;
  port: number;
  /** Which namespace the client runs in (default `client`). */
  from?: NetRole;
  /** The client gives up and closes after this long (default 15 s). */
  durationMs?: number;
  connectTimeoutMs?: number;
}

/** One probe connection made from inside a namespace; read what it received with `report()`. */
export class ProbeClient {
  constructor(readonly proc: NetnsProcess) {}

  events(): ProbeEvent[] {
    return parseProbeEvents(this.proc.stdout);
  }

  /** What the connection got so far; `since` (wall clock ms) counts only lines from then on. */
  report(since?: number): ProbeReport {
    return summarizeProbe(this.events(), since);
  }

  /** Waits until `count` lines (with `label`, if given) have arrived; fails early if the connection ends first. */
  async waitForLines(
    count: number,
    options: { label?: string; since?: number; timeoutMs: number },
  ): Promise<ProbeReport> {
    const what = `${count} probe lines${options.label ? ` labelled ${options.label}` : ''}`;
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      const report = this.report(options.since);
      const got = options.label ? (report.labels[options.label] ?? 0) : report.lines;
      if (got >= count) return report;
      if (report.outcome !== 'running' || this.proc.exitStatus)
        throw new NetBedError(
          `probe connection ended (${report.outcome} ${report.error ?? ''}) before ${what}: ${JSON.stringify(report)}`,
        );
      if (Date.now() >= deadline)
        throw new WaitTimeoutError(`${what} (got ${JSON.stringify(report)})`, options.timeoutMs);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  /** Waits for the client to end by itself (peer closed, reset, time limit) and returns the final report. */
  async finished(): Promise<ProbeReport> {
    await this.proc.exited;
    return this.report();
  }

  /** Ends the connection now and returns the final report. */
  async stop(): Promise<ProbeReport> {
    await this.proc.stop();
    return this.report();
  }
}

/** Opens one probe connection from inside a namespace (by default `client`); no reconnects. */
export function startProbeClient(bed: NetSpawner, options: ProbeClientOptions): ProbeClient {
  assertIPv4(options.address, 'probe address');
  const proc = bed.spawn(options.from ?? 'client', [
    process.execPath,
    '-e',
    TCP_PROBE_CLIENT_SCRIPT,
    options.address,
    String(options.port),
    String(options.durationMs ?? DEFAULT_PROBE_CLIENT_DURATION_MS),
    String(options.connectTimeoutMs ?? DEFAULT_PROBE_CONNECT_TIMEOUT_MS),
  ]);
  return new ProbeClient(proc);
}
