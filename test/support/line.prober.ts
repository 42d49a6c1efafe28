import { createConnection, type Socket } from 'node:net';

export interface ProbeAnswer {
  /** Epoch ms the answer came. */
  at: number;
  counter: number;
}

/**
 * A client of a sim guest's TCP service on one connection, as a user of the VM would hold it: `PING` every few
 * milliseconds (the next one once the last is answered), every answer kept with its time. It never reconnects: a
 * connection that closes is recorded (`closedAt`), so a test can tell a client that lost its VM from one that did not.
 */
export class LineProber {
  readonly answers: ProbeAnswer[] = [];
  requests = 0;
  /** Requests whose answer did not come (at most the one in flight when the guest paused or went). */
  unanswered = 0;
  closedAt?: number;
  malformed: string[] = [];
  private socket?: Socket;
  private timer?: NodeJS.Timeout;
  private waiting = false;
  private buffer = '';

  private constructor(private readonly intervalMs: number) {}

  /** Connects to `host:port` and starts asking. */
  static async start(address: string, intervalMs = 5): Promise<LineProber> {
    const prober = new LineProber(intervalMs);
    const [host, port] = splitAddress(address);
    const socket = createConnection({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    prober.socket = socket;
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => prober.onData(chunk));
    socket.on('close', () => {
      prober.closedAt ??= Date.now();
      if (prober.waiting) prober.unanswered++;
      prober.waiting = false;
    });
    prober.timer = setInterval(() => prober.tick(), intervalMs);
    return prober;
  }

  /** Answers that came in [from, to] (epoch ms). */
  answersBetween(from: number, to: number): ProbeAnswer[] {
    return this.answers.filter((a) => a.at >= from && a.at <= to);
  }

  /** Longest silence between two answers before `until` (epoch ms), for the test's log. */
  longestGapBefore(until: number): number {
    let gap = 0;
    const before = this.answers.filter((a) => a.at <= until);
    for (let i = 1; i < before.length; i++) gap = Math.max(gap, before[i].at - before[i - 1].at);
    return gap;
  }

  /** The counters answered never went back. */
  get counterIncreasing(): boolean {
    return this.answers.every((a, i) => i === 0 || a.counter >= this.answers[i - 1].counter);
  }

  stop(): void {
    clearInterval(this.timer);
    if (this.waiting) this.unanswered++;
    this.waiting = false;
    this.socket?.destroy();
  }

  private tick(): void {
    if (this.waiting || this.closedAt !== undefined || !this.socket?.writable) return;
    this.waiting = true;
    this.requests++;
    this.socket.write('PING\n');
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      const match = /^PONG (\d+)$/.exec(line);
      if (match) this.answers.push({ at: Date.now(), counter: Number(match[1]) });
      else this.malformed.push(line);
      this.waiting = false;
    }
  }
}

/** One question on a connection of its own (e.g. `STATE`), its one-line answer. */
export async function askOnce(address: string, question: string, timeoutMs = 5000): Promise<string> {
  const [host, port] = splitAddress(address);
  const socket = createConnection({ host, port });
  socket.setEncoding('utf8');
  try {
    return await new Promise<string>((resolve, reject) => {
      let buffer = '';
      const timer = setTimeout(() => reject(new Error(`no answer to ${question} within ${timeoutMs} ms`)), timeoutMs);
      socket.once('error', reject);
      socket.once('connect', () => socket.write(`${question}\n`));
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        const nl = buffer.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(timer);
        resolve(buffer.slice(0, nl));
      });
    });
  } finally {
    socket.destroy();
  }
}

function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(':');
  return [address.slice(0, at), Number(address.slice(at + 1))];
}
