import { type Socket, connect } from 'node:net';
import { ErrorCode } from '@wanmig/protocol';
import { HypervisorError } from '../errors.js';

/**
 * A client of a sim guest's TCP service (tests, demo clients): requests are pipelined on one
 * connection and replies matched in order. A reply is returned as the guest sent it, `ERR ...`
 * lines included (see parseServiceReply).
 */
export class SimServiceClient {
  private readonly waiters: { resolve: (line: string) => void; reject: (err: Error) => void }[] = [];
  private closedError: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly address: string,
  ) {
    let partial = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.waiters.shift()?.resolve(line);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closedError = new HypervisorError(ErrorCode.StreamClosed, `service connection to ${address} closed`);
      for (const waiter of this.waiters.splice(0)) waiter.reject(this.closedError);
    });
  }

  /** Connects to `host:port`. */
  static connect(address: string, timeoutMs = 5000): Promise<SimServiceClient> {
    const at = address.lastIndexOf(':');
    const host = address.slice(0, at);
    const port = Number(address.slice(at + 1));
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new HypervisorError(ErrorCode.Unavailable, `cannot reach the guest service at ${address}`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', reject);
        resolve(new SimServiceClient(socket, address));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Sends one request line and resolves with its reply line. */
  request(line: string): Promise<string> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.socket.write(`${line}\n`);
    });
  }

  /** The guest's counter, from `PING`. */
  async ping(): Promise<number> {
    const reply = await this.request('PING');
    const m = /^PONG (\d+)$/.exec(reply);
    if (!m) throw new HypervisorError(ErrorCode.Internal, `unexpected PING reply ${JSON.stringify(reply)}`);
    return Number(m[1]);
  }

  close(): void {
    this.socket.destroy();
  }
}
