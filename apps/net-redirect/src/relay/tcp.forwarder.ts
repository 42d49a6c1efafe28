/**
 * The relay's and the VM NIC's data path: TCP listeners that pipe every connection they accept to one target (a TCP
 * endpoint or a unix socket), both ways, half-close aware (a client's FIN is passed on to the target and the target
 * may still answer, and the other way round), and count connections and bytes. The target can change while it runs
 * (`retarget`); with `lines` framing an open connection is carried over to the new target without the client noticing.
 * Imports nothing from wanmig's libs: the forwarder child process (`ip netns exec … node forwarder.child.js`) runs it
 * on its own.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface ForwarderCounters {
  accepted: number;
  active: number;
  /** Closed, whichever way (`failed` included). */
  closed: number;
  /** Closed by an error: target refused or unreachable, a reset, the connect time limit. */
  failed: number;
  /** Connections carried over to, or accepted for, a target flagged `relay` (each counted once). */
  relayed: number;
  /** From clients to the target. */
  bytesIn: number;
  /** From the target back to clients. */
  bytesOut: number;
}

export interface Endpoint {
  host: string;
  port: number;
}

/** A unix socket path (they cross network namespaces: the guest's service socket on the shared filesystem). */
export interface UnixEndpoint {
  path: string;
}

export type ForwarderTarget = Endpoint | UnixEndpoint;

/**
 * `none`: bytes are piped as they come. `lines`: the protocol is one request line, one reply line; the forwarder keeps
 * each connection's unanswered request lines so that a retarget can replay them to the new upstream.
 */
export type ForwarderFraming = 'lines' | 'none';

export interface TcpForwarderOptions {
  listen: Endpoint;
  /** More endpoints accepting for the same target (the NIC: every VM address, and its tunnel). */
  alsoListen?: Endpoint[];
  target: ForwarderTarget;
  framing?: ForwarderFraming;
  /** The target is a relay (another site's tunnel): connections accepted for it count as `relayed`. */
  relay?: boolean;
  /** How long a connection to the target may take before the client's connection is dropped (ms). */
  connectTimeoutMs?: number;
  /**
   * `lines` only: when an upstream goes away with requests unanswered (the guest stopped for its switchover), the
   * client is held this long (ms) while the forwarder reconnects to the current target (a retarget, or the same one
   * back); 0 or absent: the client's connection closes with its upstream.
   */
  holdMs?: number;
}

/** An open client connection as the kernel sees it: who (`client`:`clientPort`) reached which listener endpoint. */
export interface OpenFlow {
  client: string;
  clientPort: number;
  address: string;
  port: number;
}

/** `connection`: a connection was accepted or closed; `bytes`: bytes moved. */
export type ForwarderChange = 'connection' | 'bytes';

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** Between two reconnect attempts of a held connection (ms). */
export const HOLD_RETRY_MS = 50;
/**
 * Most unanswered request bytes kept per `lines` connection. Beyond it the connection is not replayable: on a retarget
 * it stays on its old upstream.
 */
export const MAX_REPLAY_BYTES = 64 * 1024;

export const emptyCounters = (): ForwarderCounters => ({
  accepted: 0,
  active: 0,
  closed: 0,
  failed: 0,
  relayed: 0,
  bytesIn: 0,
  bytesOut: 0,
});

export function describeTarget(target: ForwarderTarget): string {
  return 'path' in target ? target.path : `${target.host}:${target.port}`;
}

export class TcpForwarder {
  readonly counters: ForwarderCounters = emptyCounters();
  private readonly open = new Set<ForwardedConnection>();
  private accepting = true;
  private target: ForwarderTarget;
  private relay: boolean;

  private constructor(
    private readonly servers: Server[],
    private readonly options: TcpForwarderOptions,
    private readonly onChange: (change: ForwarderChange) => void,
  ) {
    this.target = options.target;
    this.relay = options.relay ?? false;
  }

  /** Listens on every endpoint, or rejects with the first listen error (its `code`), leaving nothing open. */
  static async listen(
    options: TcpForwarderOptions,
    onChange: (change: ForwarderChange) => void = () => {},
  ): Promise<TcpForwarder> {
    const endpoints = [options.listen, ...(options.alsoListen ?? [])];
    const servers = endpoints.map(() => createServer({ allowHalfOpen: true }));
    const forwarder = new TcpForwarder(servers, options, onChange);
    for (const server of servers) server.on('connection', (socket) => forwarder.accept(socket));
    try {
      for (const [i, server] of servers.entries()) {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: endpoints[i].host, port: endpoints[i].port, exclusive: true }, () => {
            server.removeListener('error', reject);
            resolve();
          });
        });
        // A listener error after the start (rare: the socket broke) stops accepting; open connections go on.
        server.on('error', () => forwarder.stopAccepting());
      }
    } catch (err) {
      for (const server of servers) if (server.listening) server.close();
      throw err;
    }
    return forwarder;
  }

  /** Where it listens (the port the system chose when 0 was asked). */
  get address(): Endpoint {
    return this.addresses[0];
  }

  /** Every endpoint, in the order asked (`listen`, then `alsoListen`). */
  get addresses(): Endpoint[] {
    const endpoints = [this.options.listen, ...(this.options.alsoListen ?? [])];
    return endpoints.map((endpoint, i) => {
      const address = this.servers[i].address();
      const port = typeof address === 'object' && address !== null ? address.port : endpoint.port;
      return { host: endpoint.host, port };
    });
  }

  get framing(): ForwarderFraming {
    return this.options.framing ?? 'none';
  }

  /**
   * New connections go to `target`. Open `lines` connections are carried over (their unanswered lines replayed to a
   * new upstream at `target`); the others keep their upstream and finish where they are.
   */
  retarget(target: ForwarderTarget, relay: boolean): void {
    this.target = target;
    this.relay = relay;
    for (const connection of this.open) connection.retarget(target, relay);
  }

  /** The open client connections (those whose client socket still has its addresses). */
  flows(): OpenFlow[] {
    return [...this.open].flatMap((connection) => connection.flow ?? []);
  }

  /** Closes the listeners; open connections go on until they end. */
  stopAccepting(): void {
    if (!this.accepting) return;
    this.accepting = false;
    for (const server of this.servers) server.close();
  }

  /** Closes the listeners and cuts every open connection; resolves once all of them are closed and counted. */
  destroy(): Promise<void> {
    this.stopAccepting();
    return Promise.all([...this.open].map((connection) => connection.destroy())).then(() => undefined);
  }

  private accept(client: Socket): void {
    if (!this.accepting) {
      client.destroy();
      return;
    }
    this.counters.accepted++;
    this.counters.active++;
    const connection = new ForwardedConnection(
      client,
      this.options,
      this.counters,
      this.onChange,
      () => this.open.delete(connection),
      () => ({ target: this.target, relay: this.relay }),
    );
    this.open.add(connection);
    connection.start(this.target, this.relay);
    this.onChange('connection');
  }
}

/**
 * One client connection and its current upstream. The upstream can be swapped (a retarget): the old one is dropped
 * without touching the client, so the client's connection outlives it.
 */
class ForwardedConnection {
  private upstream!: Socket;
  private upstreamClosed = false;
  private clientClosed = false;
  private clientEnded = false;
  private upstreamEnded = false;
  private failed = false;
  private relayed = false;
  private finished = false;
  /** Request bytes sent upstream whose reply line has not come back yet (complete lines, then a partial one). */
  private unanswered = Buffer.alloc(0);
  private replayable: boolean;
  /** Bytes of a reply line the client already got part of: a swap then would duplicate them. */
  private replyPartial = 0;
  /** A retarget waiting for the current reply line to finish. */
  private pending?: { target: ForwarderTarget; relay: boolean; timer: NodeJS.Timeout };
  /** The current upstream got connected (a held connection only comes from one that did). */
  private upstreamConnected = false;
  /** Held: the upstream went away with requests unanswered; reconnecting to the current target until `deadline`. */
  private held?: { deadline: number; timer?: NodeJS.Timeout };
  private readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    private readonly client: Socket,
    private readonly options: TcpForwarderOptions,
    private readonly counters: ForwarderCounters,
    private readonly onChange: (change: ForwarderChange) => void,
    private readonly onFinished: () => void,
    private readonly currentTarget: () => { target: ForwarderTarget; relay: boolean },
  ) {
    this.replayable = options.framing === 'lines';
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    client.on('error', () => this.fail());
    client.on('data', (chunk: Buffer) => this.fromClient(chunk));
    client.on('end', () => {
      this.clientEnded = true;
      this.upstream.end();
    });
    client.once('close', () => {
      this.clientClosed = true;
      if (this.held) clearTimeout(this.held.timer);
      this.held = undefined;
      // The client is gone for good: nothing to carry over any more.
      this.upstream.destroy();
      this.maybeFinished();
    });
  }

  get flow(): OpenFlow | undefined {
    const { remoteAddress, remotePort, localAddress, localPort } = this.client;
    if (this.clientClosed || !remoteAddress || !remotePort || !localAddress || !localPort) return undefined;
    return { client: remoteAddress, clientPort: remotePort, address: localAddress, port: localPort };
  }

  start(target: ForwarderTarget, relay: boolean): void {
    if (relay) this.markRelayed();
    this.upstream = this.openUpstream(target);
  }

  retarget(target: ForwarderTarget, relay: boolean): void {
    if (!this.replayable || this.clientClosed || this.upstreamEnded || this.finished) return;
    if (this.held) {
      // Reconnect to the new target now rather than at the next attempt.
      clearTimeout(this.held.timer);
      this.drop(this.upstream);
      this.reconnect();
      return;
    }
    if (this.pending) {
      clearTimeout(this.pending.timer);
      this.pending = undefined;
    }
    if (this.replyPartial === 0) {
      this.swap(target, relay);
      return;
    }
    // Half a reply line is out: wait for its end, but not forever (an upstream that stalls mid-line). Meanwhile the
    // client's next requests wait in its socket, so that they go to the new target.
    const timer = setTimeout(() => this.flushPending(), this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    this.pending = { target, relay, timer };
    this.client.pause();
  }

  destroy(): Promise<void> {
    this.client.destroy();
    this.upstream.destroy();
    return this.closed;
  }

  private openUpstream(target: ForwarderTarget): Socket {
    const upstream =
      'path' in target
        ? connect({ path: target.path, allowHalfOpen: true })
        : connect({ host: target.host, port: target.port, allowHalfOpen: true });
    this.upstreamClosed = false;
    this.upstreamEnded = false;
    this.upstreamConnected = false;
    upstream.setTimeout(this.options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, () =>
      this.held ? upstream.destroy() : this.fail(),
    );
    upstream.once('connect', () => {
      upstream.setTimeout(0);
      this.upstreamConnected = true;
      if (this.held) this.release();
    });
    // While a retarget waits for this upstream's reply line, its end or failure only hastens the switch; while the
    // connection is held, a failed attempt is retried (its close follows).
    upstream.on('error', () => {
      if (this.pending) this.flushPending();
      else if (!this.held && !this.holdable()) this.fail();
    });
    upstream.on('data', (chunk: Buffer) => this.fromUpstream(chunk));
    upstream.on('end', () => {
      if (this.pending) return this.flushPending();
      if (this.holdable()) return this.hold();
      this.upstreamEnded = true;
      this.client.end();
    });
    upstream.on('drain', () => {
      if (!this.pending) this.client.resume();
    });
    upstream.once('close', () => {
      if (this.pending) return this.flushPending();
      if (this.held) return this.retryLater();
      if (this.holdable()) return this.hold();
      this.upstreamClosed = true;
      // The upstream is gone for good: the client cannot be carried on with it.
      this.client.destroy();
      this.maybeFinished();
    });
    return upstream;
  }

  /**
   * An upstream that served this connection went away with requests unanswered and no half reply out: replaying them
   * elsewhere (or to the same target back) answers each once. The guest's requests are all read-only, so a request
   * the old upstream read but did not answer may be asked again.
   */
  private holdable(): boolean {
    return (
      (this.options.holdMs ?? 0) > 0 &&
      this.replayable &&
      this.upstreamConnected &&
      !this.failed &&
      !this.clientClosed &&
      !this.finished &&
      this.replyPartial === 0 &&
      this.unanswered.length > 0
    );
  }

  private hold(): void {
    this.drop(this.upstream);
    this.client.pause();
    this.held = { deadline: Date.now() + (this.options.holdMs ?? 0) };
    this.reconnect();
  }

  private reconnect(): void {
    const held = this.held;
    if (!held || this.clientClosed) return;
    if (Date.now() >= held.deadline) {
      // Nobody took it over in time: the client learns it the usual way.
      this.held = undefined;
      this.failed = true;
      this.upstreamClosed = true;
      this.client.destroy();
      this.maybeFinished();
      return;
    }
    const { target, relay } = this.currentTarget();
    if (relay) this.markRelayed();
    this.upstream = this.openUpstream(target);
  }

  private retryLater(): void {
    if (!this.held) return;
    this.upstreamClosed = true;
    this.held.timer = setTimeout(() => this.reconnect(), HOLD_RETRY_MS);
  }

  /** Connected again: the unanswered requests first, then piping goes on. */
  private release(): void {
    this.held = undefined;
    this.replyPartial = 0;
    if (this.unanswered.length > 0) this.upstream.write(this.unanswered);
    if (this.clientEnded) this.upstream.end();
    this.client.resume();
  }

  /** Lets an upstream go without touching the client. */
  private drop(upstream: Socket): void {
    upstream.removeAllListeners();
    upstream.on('error', () => {});
    upstream.destroy();
  }

  private swap(target: ForwarderTarget, relay: boolean): void {
    this.drop(this.upstream);
    this.replyPartial = 0;
    if (relay) this.markRelayed();
    this.upstream = this.openUpstream(target);
    if (this.unanswered.length > 0) this.upstream.write(this.unanswered);
    if (this.clientEnded) this.upstream.end();
    this.client.resume();
  }

  private flushPending(): void {
    const pending = this.pending;
    if (!pending) return;
    clearTimeout(pending.timer);
    this.pending = undefined;
    if (!this.clientClosed && !this.finished) this.swap(pending.target, pending.relay);
  }

  private fromClient(chunk: Buffer): void {
    this.counters.bytesIn += chunk.length;
    if (this.replayable) {
      this.unanswered = Buffer.concat([this.unanswered, chunk]);
      if (this.unanswered.length > MAX_REPLAY_BYTES) {
        this.replayable = false;
        this.unanswered = Buffer.alloc(0);
      }
    }
    if (!this.upstream.write(chunk)) this.client.pause();
    this.onChange('bytes');
  }

  private fromUpstream(chunk: Buffer): void {
    this.counters.bytesOut += chunk.length;
    if (this.replayable || this.pending) {
      // Each '\n' from upstream answers the oldest unanswered request line.
      let from = 0;
      for (let nl = chunk.indexOf(10, from); nl !== -1; nl = chunk.indexOf(10, from)) {
        const end = this.unanswered.indexOf(10);
        this.unanswered = end === -1 ? this.unanswered : this.unanswered.subarray(end + 1);
        from = nl + 1;
      }
      this.replyPartial = from === 0 ? this.replyPartial + chunk.length : chunk.length - from;
    }
    if (!this.client.write(chunk)) {
      this.upstream.pause();
      this.client.once('drain', () => this.upstream.resume());
    }
    this.onChange('bytes');
    if (this.pending && this.replyPartial === 0) this.flushPending();
  }

  private markRelayed(): void {
    if (this.relayed) return;
    this.relayed = true;
    this.counters.relayed++;
  }

  private fail(): void {
    this.failed = true;
    this.client.destroy();
    this.upstream?.destroy();
  }

  private maybeFinished(): void {
    if (this.finished || !this.clientClosed || !this.upstreamClosed) return;
    this.finished = true;
    if (this.pending) clearTimeout(this.pending.timer);
    this.counters.active--;
    this.counters.closed++;
    if (this.failed) this.counters.failed++;
    this.onFinished();
    this.onChange('connection');
    this.resolveClosed();
  }
}
