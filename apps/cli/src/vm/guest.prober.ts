import { createConnection, type Socket } from 'node:net';

export interface ProbeReport {
  requests: number;
  answers: number;
  /** Longest time between two answers: the pause as a client of the guest saw it. */
  maxGapMs: number;
  /** When that gap began and ended (epoch ms). */
  gapStart: number;
  gapEnd: number;
  /** Counter values around the move: the destination must continue from the source. */
  lastCounterBefore: number;
  firstCounterAfter: number;
  switchedAt: number | null;
  /** Answers from the new address. */
  answersAfterSwitch: number;
  counterWentBack: boolean;
  /** Connections made after the first: a connection that broke (or a switch). */
  reconnects: number;
}

/**
 * How the guest's service is asked: `ping`, the embedded guest's (one connection, `PING` answered `PONG <counter>`);
 * `counter`, the QEMU test guest's (each connection answers one `COUNTER <n>` line and closes).
 */
export type ProbeProtocol = 'ping' | 'counter';

/** A paused guest's forwarded port still accepts (QEMU's slirp runs on) but never answers: a query gives up. */
const COUNTER_QUERY_TIMEOUT_MS = 2_000;

/**
 * A client of the guest's TCP service (`host:port`, or `unix:<path>`: a door into a namespace): asks every few
 * milliseconds and records the answers, so the downtime reported is the one a user of the VM saw. A VM with
 * addresses is reached at its own address and keeps its connection across a move (network redirection); one
 * reached at its host port is told the new one (`switchTo`).
 */
export class GuestProber {
  private socket?: Socket;
  private address: string;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private inFlight = false;
  private buffer = '';
  private lastAnswerAt = 0;
  private lastCounter = -1;
  private switchedAt: number | null = null;
  private readonly report: ProbeReport = {
    requests: 0,
    answers: 0,
    maxGapMs: 0,
    gapStart: 0,
    gapEnd: 0,
    lastCounterBefore: -1,
    firstCounterAfter: -1,
    switchedAt: null,
    answersAfterSwitch: 0,
    counterWentBack: false,
    reconnects: 0,
  };
  private connections = 0;
  /** Every answer's time (epoch ms) and counter, bounded: what came around a given moment. */
  private readonly log: Array<{ at: number; counter: number }> = [];

  constructor(
    address: string,
    private readonly intervalMs = 5,
    private readonly maxSeconds = 600,
    private readonly protocol: ProbeProtocol = 'ping',
  ) {
    this.address = address;
  }

  start(): void {
    const deadline = Date.now() + this.maxSeconds * 1000;
    if (this.protocol === 'counter') {
      this.timer = setInterval(() => {
        if (this.stopped || Date.now() > deadline) return this.halt();
        if (!this.inFlight) this.askCounter();
      }, this.intervalMs);
      return;
    }
    this.connect();
    this.timer = setInterval(() => {
      if (this.stopped || Date.now() > deadline) return this.halt();
      if (!this.inFlight && this.socket && !this.socket.connecting && this.socket.writable) {
        this.inFlight = true;
        this.report.requests++;
        this.socket.write('PING\n');
      }
    }, this.intervalMs);
  }

  get switched(): boolean {
    return this.switchedAt !== null;
  }

  get reconnects(): number {
    return this.report.reconnects;
  }

  get answersAfterSwitch(): number {
    return this.report.answersAfterSwitch;
  }

  /**
   * Around `at` (epoch ms; the pause, for a client that never switched): how many answers came after it and the
   * counters on either side, and how long after `at` the first answer at or after `from` came (the resume: answers
   * between the pause and the resume were on their way before the pause).
   */
  around(
    at: number,
    from = at,
  ): { firstAnswerMs?: number; answersAfter: number; lastCounterBefore: number; firstCounterAfter: number } {
    const after = this.log.findIndex((a) => a.at > at);
    const before = after < 0 ? this.log.at(-1) : this.log[after - 1];
    const first = this.log.find((a) => a.at >= from && a.at > at);
    return {
      ...(first ? { firstAnswerMs: first.at - at } : {}),
      answersAfter: after < 0 ? 0 : this.log.length - after,
      lastCounterBefore: before?.counter ?? -1,
      firstCounterAfter: after < 0 ? -1 : this.log[after].counter,
    };
  }

  /** The VM now answers at `address`: drop the old connection (held by a paused source) and go there. */
  switchTo(address: string): void {
    this.address = address;
    this.switchedAt = Date.now();
    this.report.switchedAt = this.switchedAt;
    this.report.lastCounterBefore = this.lastCounter;
    this.socket?.destroy();
    this.socket = undefined;
    this.inFlight = false;
    if (this.protocol === 'ping') this.connect();
  }

  stop(): ProbeReport {
    this.stopped = true;
    this.halt();
    return { ...this.report };
  }

  private halt(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.socket?.destroy();
  }

  private connect(): void {
    if (this.stopped) return;
    if (this.connections++ > 0) this.report.reconnects++;
    const socket = this.address.startsWith('unix:')
      ? createConnection({ path: this.address.slice('unix:'.length) })
      : createConnection({ host: splitAddress(this.address)[0], port: splitAddress(this.address)[1] });
    this.socket = socket;
    this.buffer = '';
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    const retry = () => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = undefined;
      this.inFlight = false;
      setTimeout(() => this.connect(), 20);
    };
    socket.on('error', retry);
    socket.on('close', retry);
  }

  /** One `counter` query: a connection, its one line, closed; abandoned after a bound or by a switch. */
  private askCounter(): void {
    this.inFlight = true;
    this.report.requests++;
    const socket = this.address.startsWith('unix:')
      ? createConnection({ path: this.address.slice('unix:'.length) })
      : createConnection({ host: splitAddress(this.address)[0], port: splitAddress(this.address)[1] });
    this.socket = socket;
    let text = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      if (this.socket === socket) {
        this.socket = undefined;
        this.inFlight = false;
      }
    };
    const timer = setTimeout(done, COUNTER_QUERY_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const m = /^COUNTER (\d+)\s*$/m.exec(text);
      if (!m || this.socket !== socket) return;
      done();
      this.answer(Number(m[1]));
    });
    socket.on('error', done);
    socket.on('close', done);
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      const m = /^PONG (\d+)$/.exec(line);
      if (!m) continue;
      this.inFlight = false;
      this.answer(Number(m[1]));
    }
  }

  private answer(counter: number): void {
    const now = Date.now();
    this.report.answers++;
    if (this.log.length < MAX_LOGGED_ANSWERS) this.log.push({ at: now, counter });
    if (this.lastAnswerAt > 0 && now - this.lastAnswerAt > this.report.maxGapMs) {
      this.report.maxGapMs = now - this.lastAnswerAt;
      this.report.gapStart = this.lastAnswerAt;
      this.report.gapEnd = now;
    }
    if (counter < this.lastCounter) this.report.counterWentBack = true;
    if (this.switchedAt !== null) {
      this.report.answersAfterSwitch++;
      if (this.report.firstCounterAfter < 0) this.report.firstCounterAfter = counter;
    }
    this.lastCounter = counter;
    this.lastAnswerAt = now;
  }
}

const MAX_LOGGED_ANSWERS = 1_000_000;

function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(':');
  return [address.slice(0, at), Number(address.slice(at + 1))];
}
