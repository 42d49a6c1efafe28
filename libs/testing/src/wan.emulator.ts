import { type Server, type Socket, connect, createServer } from 'node:net';
import { WanEmulatorError } from './errors.js';
import { LOOPBACK_HOST } from './free-port.util.js';
import { UNLIMITED_BANDWIDTH, type WanLinkSettings } from './link.scheduler.js';
import { WanDirectionChannel } from './wan-direction.channel.js';

export const WanDirection = { AToB: 'aToB', BToA: 'bToA' } as const;
export type WanDirection = (typeof WanDirection)[keyof typeof WanDirection];

export interface WanEmulatorOptions {
  /** Where connections are forwarded to. */
  target: { host?: string; port: number };
  listenHost?: string;
  /** Default: a random free port. */
  listenPort?: number;
  /** One-way delay for both directions (ms); default 0. */
  delayMs?: number;
  /** Rate for both directions (bit/s); default unlimited (0). */
  bandwidthBps?: number;
  /** Per-direction overrides. */
  aToB?: Partial<WanLinkSettings>;
  bToA?: Partial<WanLinkSettings>;
  /**
   * Which site the connecting clients are on; the target is the other one. Default 'a', so `aToB` counts bytes
   * from clients to the target. The two-site topology sets 'b', because site B dials site A.
   */
  clientSide?: 'a' | 'b';
  /** Queue headroom above rate × delay; see {@link queueWatermarks}. */
  queueMarginBytes?: number;
}

export interface WanStats {
  /** Bytes put on the wire from site A towards site B. */
  aToB: number;
  bToA: number;
  /** Connections open through the emulator now. */
  connections: number;
  /** Connections accepted since start (or the last resetStats). */
  accepted: number;
  /** Connections closed on arrival because the link was cut. */
  refused: number;
}

interface ConnectionPair {
  client: Socket;
  upstream: Socket;
}

/**
 * Userspace TCP proxy that behaves like a WAN link: one-way delay and a rate cap per direction, bounded queues
 * that push back on senders through TCP, byte counters, and link cuts. The kernel's netem is not available here.
 */
export class WanEmulator {
  private readonly directions: Record<WanDirection, WanDirectionChannel>;
  private readonly pairs = new Set<ConnectionPair>();
  private accepted = 0;
  private refused = 0;
  private cutActive = false;
  private restoreTimer?: NodeJS.Timeout;
  private closing?: Promise<void>;

  private constructor(
    private readonly server: Server,
    private readonly options: WanEmulatorOptions,
  ) {
    const base = { delayMs: options.delayMs ?? 0, bandwidthBps: options.bandwidthBps ?? UNLIMITED_BANDWIDTH };
    this.directions = {
      aToB: new WanDirectionChannel({ ...base, ...options.aToB }, options.queueMarginBytes),
      bToA: new WanDirectionChannel({ ...base, ...options.bToA }, options.queueMarginBytes),
    };
    server.on('connection', (socket) => this.onConnection(socket));
  }

  static async start(options: WanEmulatorOptions): Promise<WanEmulator> {
    // allowHalfOpen: a FIN travels through the link like data, so we decide when to end the other side.
    const server = createServer({ allowHalfOpen: true, noDelay: true });
    const emulator = new WanEmulator(server, options);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new WanEmulatorError(`cannot listen on ${options.listenHost ?? LOOPBACK_HOST}`, { cause: err })),
      );
      server.listen(options.listenPort ?? 0, options.listenHost ?? LOOPBACK_HOST, () => resolve());
    });
    return emulator;
  }

  get host(): string {
    return this.options.listenHost ?? LOOPBACK_HOST;
  }

  get port(): number {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new WanEmulatorError('WAN emulator is not listening');
    return address.port;
  }

  /** `host:port` clients connect to. */
  get address(): string {
    return `${this.host}:${this.port}`;
  }

  get isCut(): boolean {
    return this.cutActive;
  }

  stats(): WanStats {
    return {
      aToB: this.directions.aToB.bytes,
      bToA: this.directions.bToA.bytes,
      connections: this.pairs.size,
      accepted: this.accepted,
      refused: this.refused,
    };
  }

  /** Bytes held in the emulator for one direction right now (bounded by about rate × delay + margin). */
  queuedBytes(direction: WanDirection): number {
    return this.directions[direction].queued;
  }

  resetStats(): void {
    this.directions.aToB.bytes = 0;
    this.directions.bToA.bytes = 0;
    this.accepted = 0;
    this.refused = 0;
  }

  settings(): Record<WanDirection, WanLinkSettings> {
    return { aToB: this.directions.aToB.settings, bToA: this.directions.bToA.settings };
  }

  /** Changes delay and/or rate at runtime, for one direction or both. */
  configure(settings: Partial<WanLinkSettings>, direction: WanDirection | 'both' = 'both'): void {
    for (const name of direction === 'both' ? Object.values(WanDirection) : [direction]) {
      this.directions[name].update(settings);
    }
  }

  /**
   * Cuts the link: destroys every connection through it, drops what was in flight, and closes new connections on
   * arrival until `restore()` — called automatically after `durationMs` when given.
   */
  cut(durationMs?: number): void {
    this.assertOpen();
    this.cutActive = true;
    clearTimeout(this.restoreTimer);
    this.restoreTimer = durationMs === undefined ? undefined : setTimeout(() => this.restore(), durationMs);
    this.destroyConnections();
  }

  restore(): void {
    clearTimeout(this.restoreTimer);
    this.restoreTimer = undefined;
    this.cutActive = false;
  }

  /** Stops listening and tears down every connection. Idempotent. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.restore();
      this.server.close(() => resolve());
      this.destroyConnections();
      this.directions.aToB.close();
      this.directions.bToA.close();
    });
    return this.closing;
  }

  private destroyConnections(): void {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    this.directions.aToB.clear();
    this.directions.bToA.clear();
  }

  private onConnection(client: Socket): void {
    if (this.cutActive || this.closing) {
      this.refused++;
      client.on('error', () => undefined);
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = connect({
      host: this.options.target.host ?? LOOPBACK_HOST,
      port: this.options.target.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    const pair: ConnectionPair = { client, upstream };
    this.pairs.add(pair);
    const { aToB, bToA } = this.directions;
    const [outbound, inbound] = this.options.clientSide === 'b' ? [bToA, aToB] : [aToB, bToA];
    outbound.attach(client, upstream);
    inbound.attach(upstream, client);
    // A reset on either side (or a refused upstream) tears down both, like a broken path would.
    const teardown = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', teardown);
    upstream.on('error', teardown);
    let open = 2;
    const onClose = (): void => {
      if (--open === 0) this.pairs.delete(pair);
    };
    client.on('close', onClose);
    upstream.on('close', onClose);
  }

  private assertOpen(): void {
    if (this.closing) throw new WanEmulatorError('WAN emulator is closed');
  }
}

/** Starts a {@link WanEmulator}. */
export function startWanEmulator(options: WanEmulatorOptions): Promise<WanEmulator> {
  return WanEmulator.start(options);
}
