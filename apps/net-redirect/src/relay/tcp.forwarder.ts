/**
 * The relay's data path: a TCP listener that pipes every connection it accepts to one target, both ways, half-close
 * aware (a client's FIN is passed on to the target and the target may still answer, and the other way round), and
 * counts connections and bytes. Imports nothing from wanmig's libs: the forwarder child process (`ip netns exec …
 * node forwarder.child.js`) runs it on its own.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface ForwarderCounters {
  accepted: number;
  active: number;
  /** Closed, whichever way (`failed` included). */
  closed: number;
  /** Closed by an error: target refused or unreachable, a reset, the connect time limit. */
  failed: number;
  /** From clients to the target. */
  bytesIn: number;
  /** From the target back to clients. */
  bytesOut: number;
}

export interface Endpoint {
  host: string;
  port: number;
}

export interface TcpForwarderOptions {
  listen: Endpoint;
  target: Endpoint;
  /** How long a connection to the target may take before the client's connection is dropped (ms). */
  connectTimeoutMs?: number;
}

/** `connection`: a connection was accepted or closed; `bytes`: bytes moved. */
export type ForwarderChange = 'connection' | 'bytes';

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

export const emptyCounters = (): ForwarderCounters => ({
  accepted: 0,
  active: 0,
  closed: 0,
  failed: 0,
  bytesIn: 0,
  bytesOut: 0,
});

export class TcpForwarder {
  readonly counters: ForwarderCounters = emptyCounters();
  private readonly open = new Set<Socket>();
  private accepting = true;

  private constructor(
    private readonly server: Server,
    private readonly options: TcpForwarderOptions,
    private readonly onChange: (change: ForwarderChange) => void,
  ) {}

  /** Listens, or rejects with the listen error (its `code`, e.g. EADDRINUSE), leaving nothing open. */
  static listen(options: TcpForwarderOptions, onChange: (change: ForwarderChange) => void = () => {}) {
    return new Promise<TcpForwarder>((resolve, reject) => {
      const server = createServer({ allowHalfOpen: true });
      const forwarder = new TcpForwarder(server, options, onChange);
      server.on('connection', (socket) => forwarder.accept(socket));
      server.once('error', (err) => {
        server.close();
        reject(err);
      });
      server.listen({ host: options.listen.host, port: options.listen.port, exclusive: true }, () => {
        server.removeAllListeners('error');
        // A listener error after the start (rare: the socket broke) stops accepting; open connections go on.
        server.on('error', () => forwarder.stopAccepting());
        resolve(forwarder);
      });
    });
  }

  /** Where it listens (the port the system chose when 0 was asked). */
  get address(): Endpoint {
    const address = this.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : this.options.listen.port;
    return { host: this.options.listen.host, port };
  }

  /** Closes the listener; open connections go on until they end. */
  stopAccepting(): void {
    if (!this.accepting) return;
    this.accepting = false;
    this.server.close();
  }

  /** Closes the listener and cuts every open connection; resolves once all of them are closed and counted. */
  destroy(): Promise<void> {
    this.stopAccepting();
    const closed = [...this.open].map(
      (socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())),
    );
    for (const socket of this.open) socket.destroy();
    return Promise.all(closed).then(() => undefined);
  }

  private accept(client: Socket): void {
    if (!this.accepting) {
      client.destroy();
      return;
    }
    const c = this.counters;
    c.accepted++;
    c.active++;
    const { target, connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS } = this.options;
    const upstream = connect({ host: target.host, port: target.port, allowHalfOpen: true });
    this.open.add(client);
    this.open.add(upstream);
    let failed = false;
    let closedSockets = 0;
    const fail = () => {
      failed = true;
      client.destroy();
      upstream.destroy();
    };
    upstream.setTimeout(connectTimeoutMs, fail);
    upstream.once('connect', () => upstream.setTimeout(0));
    client.on('error', fail);
    upstream.on('error', fail);
    client.on('data', (chunk: Buffer) => {
      c.bytesIn += chunk.length;
      this.onChange('bytes');
    });
    upstream.on('data', (chunk: Buffer) => {
      c.bytesOut += chunk.length;
      this.onChange('bytes');
    });
    // pipe() ends the other side's write half when this side's read half ends: half-close passed on.
    client.pipe(upstream);
    upstream.pipe(client);
    const onClose = (socket: Socket) => {
      this.open.delete(socket);
      if (++closedSockets < 2) {
        // One side is gone for good: the other cannot carry this connection on.
        (socket === client ? upstream : client).destroy();
        return;
      }
      c.active--;
      c.closed++;
      if (failed) c.failed++;
      this.onChange('connection');
    };
    client.once('close', () => onClose(client));
    upstream.once('close', () => onClose(upstream));
    this.onChange('connection');
  }
}
