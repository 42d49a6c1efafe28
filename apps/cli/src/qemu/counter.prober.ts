import { connect, type Socket } from 'node:net';
import { LOOPBACK_HOST, parseGuestCounter } from '@wanmig/testing';

export const DEFAULT_PROBE_INTERVAL_MS = 20;
/** A paused guest's forwarded port still accepts (QEMU's slirp runs on) but never answers: give up on a query. */
export const DEFAULT_PROBE_QUERY_TIMEOUT_MS = 2_000;

export interface CounterProbeReport {
  queries: number;
  answers: number;
  /** Queries that got no answer (timed out, refused, cut by a switch). */
  misses: number;
  /** Longest time between two answers: the pause as a client of the guest saw it. */
  maxGapMs: number;
  /** That gap's start, ms after the prober started. */
  maxGapStartMs: number;
  /** The last counter the source answered before the switch, and the first one the destination answered. */
  lastSourceCounter: number | undefined;
  firstDestinationCounter: number | undefined;
  answersAfterSwitch: number;
  /** An answer lower than the one before it (the guest went back in time). */
  counterWentBack: boolean;
}

/** The report of a probe that never asked (the runner's `probeCounter: false`): all zeros. */
export function emptyProbeReport(): CounterProbeReport {
  return {
    queries: 0,
    answers: 0,
    misses: 0,
    maxGapMs: 0,
    maxGapStartMs: 0,
    lastSourceCounter: undefined,
    firstDestinationCounter: undefined,
    answersAfterSwitch: 0,
    counterWentBack: false,
  };
}

/**
 * A client of the test guest's counter service (one `COUNTER <n>` per connection): asks every `intervalMs`, one
 * query at a time, and records the gaps between answers. When the VM moves it is told the new port; the query
 * still waiting on the old one is dropped at once (a paused source would hold it until the timeout).
 */
export class CounterProber {
  private port: number;
  private running = false;
  private loop?: Promise<void>;
  private current?: Socket;
  private readonly startedAt = performance.now();
  private lastAnswerAt: number | undefined;
  private lastCounter: number | undefined;
  private switched = false;
  private readonly report: CounterProbeReport = emptyProbeReport();

  constructor(
    port: number,
    private readonly options: { intervalMs?: number; queryTimeoutMs?: number; host?: string } = {},
  ) {
    this.port = port;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Asks `port` from now on; the query in flight to the old one is abandoned. */
  switchTo(port: number): void {
    this.port = port;
    this.switched = true;
    this.report.lastSourceCounter = this.lastCounter;
    this.current?.destroy();
  }

  get answersAfterSwitch(): number {
    return this.report.answersAfterSwitch;
  }

  /** Stops asking; the report covers every answer until now. */
  async stop(): Promise<CounterProbeReport> {
    this.running = false;
    this.current?.destroy();
    await this.loop;
    return { ...this.report };
  }

  private async run(): Promise<void> {
    const interval = this.options.intervalMs ?? DEFAULT_PROBE_INTERVAL_MS;
    while (this.running) {
      const port = this.port;
      const asked = performance.now();
      this.report.queries++;
      const counter = await this.query(port);
      if (!this.running) break;
      if (counter === undefined || port !== this.port) {
        this.report.misses++;
      } else {
        this.record(counter);
      }
      const wait = interval - (performance.now() - asked);
      if (wait > 0 && this.running) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  private record(counter: number): void {
    const now = performance.now();
    this.report.answers++;
    if (this.lastAnswerAt !== undefined && now - this.lastAnswerAt > this.report.maxGapMs) {
      this.report.maxGapMs = now - this.lastAnswerAt;
      this.report.maxGapStartMs = this.lastAnswerAt - this.startedAt;
    }
    if (this.lastCounter !== undefined && counter < this.lastCounter) this.report.counterWentBack = true;
    if (this.switched) {
      this.report.answersAfterSwitch++;
      this.report.firstDestinationCounter ??= counter;
    }
    this.lastAnswerAt = now;
    this.lastCounter = counter;
  }

  /** One connection, one answer; undefined on any failure or timeout. */
  private query(port: number): Promise<number | undefined> {
    const timeoutMs = this.options.queryTimeoutMs ?? DEFAULT_PROBE_QUERY_TIMEOUT_MS;
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      const socket = connect(port, this.options.host ?? LOOPBACK_HOST);
      this.current = socket;
      socket.setTimeout(timeoutMs, () => socket.destroy());
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', () => undefined);
      socket.once('close', (hadError) => {
        if (this.current === socket) this.current = undefined;
        resolve(hadError ? undefined : parseGuestCounter(Buffer.concat(chunks).toString('utf8')));
      });
    });
  }
}
