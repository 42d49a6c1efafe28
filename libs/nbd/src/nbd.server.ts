import { EventEmitter } from 'node:events';
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { type CommandFailure } from './command.executor.js';
import { NbdAddressInUseError, NbdClosedError, NbdError } from './errors.js';
import { type NbdExport } from './export.backend.js';
import { ExportRegistry } from './export.registry.js';
import { NBD_DEFAULT_MAX_PAYLOAD, NBD_DEFAULT_MIN_BLOCK, NBD_DEFAULT_PREFERRED_BLOCK } from './nbd.constants.js';
import { NbdConnection } from './nbd.connection.js';
import { ErrorCode } from '@wanmig/protocol';

export interface NbdServerOptions {
  exports?: NbdExport[];
  /** Export answering the empty name; by default the only export, when there is exactly one. */
  defaultExport?: string;
  /** Largest READ / WRITE payload (advertised as the maximum block size); default 32 MiB. */
  maxPayload?: number;
  /** Advertised preferred block size; default 4096. */
  preferredBlockSize?: number;
  /** Advertised (and enforced) minimum block size; default 1. */
  minBlockSize?: number;
  /** Requests executing at once per connection before the server stops reading; default 64. */
  maxInFlight?: number;
  /** READ/WRITE bytes in flight per connection before the server stops reading; default 128 MiB. */
  maxInFlightBytes?: number;
  /** A client that has not finished the handshake by then is dropped; default 30 s. */
  handshakeTimeoutMs?: number;
  /** On close, how long connections may take to finish requests in flight; default 10 s. */
  drainTimeoutMs?: number;
}

/** Listen on TCP (default 127.0.0.1, port 0 = any free port) or on a unix socket path. */
export type NbdListenOptions = { host?: string; port?: number } | { path: string };

export type NbdAddress =
  { transport: 'tcp'; host: string; port: number; uri: string } | { transport: 'unix'; path: string; uri: string };

export interface NbdSessionInfo {
  connectionId: number;
  remote: string;
  exportName: string;
  structuredReplies: boolean;
  baseAllocation: boolean;
  via: 'go' | 'export-name';
}

export interface NbdServerEvents {
  connection: [info: { connectionId: number; remote: string }];
  session: [info: NbdSessionInfo];
  disconnect: [info: { connectionId: number; exportName?: string }];
  /** A client broke the protocol (or was refused) and was disconnected. */
  protocolError: [error: Error, info: { connectionId: number; remote: string }];
  /** A backend call failed; the client got an error reply. */
  commandError: [failure: CommandFailure];
}

/**
 * An NBD server (fixed newstyle handshake, simple and structured replies, `base:allocation`) over
 * TCP and unix sockets, serving any number of named exports to any number of connections.
 */
export class NbdServer extends EventEmitter<NbdServerEvents> {
  private readonly registry: ExportRegistry;
  private readonly servers: Server[] = [];
  private readonly connections = new Set<NbdConnection>();
  private readonly listenAddresses: NbdAddress[] = [];
  private nextId = 1;
  private closing = false;
  private readonly options: Required<Omit<NbdServerOptions, 'exports' | 'defaultExport'>>;

  constructor(options: NbdServerOptions = {}) {
    super();
    this.options = {
      maxPayload: options.maxPayload ?? NBD_DEFAULT_MAX_PAYLOAD,
      preferredBlockSize: options.preferredBlockSize ?? NBD_DEFAULT_PREFERRED_BLOCK,
      minBlockSize: options.minBlockSize ?? NBD_DEFAULT_MIN_BLOCK,
      maxInFlight: options.maxInFlight ?? 64,
      maxInFlightBytes: options.maxInFlightBytes ?? 128 * 1024 * 1024,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 30_000,
      drainTimeoutMs: options.drainTimeoutMs ?? 10_000,
    };
    checkLimits(this.options);
    this.registry = new ExportRegistry(options.defaultExport);
    for (const exp of options.exports ?? []) this.registry.add(exp);
  }

  /** Addresses the server listens on. */
  get addresses(): readonly NbdAddress[] {
    return this.listenAddresses;
  }

  /** Number of open client connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Serve another export (NbdExportExistsError if the name is taken). */
  addExport(exp: NbdExport): void {
    this.registry.add(exp);
  }

  /**
   * Stop offering an export (NbdExportNotFoundError if unknown). Connections already using it keep
   * it until they close; its backend is not closed.
   */
  removeExport(name: string): NbdExport {
    return this.registry.remove(name).config;
  }

  getExport(name: string): NbdExport {
    return this.registry.get(name).config;
  }

  listExports(): NbdExport[] {
    return this.registry.list().map((e) => e.config);
  }

  setDefaultExport(name: string | undefined): void {
    this.registry.setDefault(name);
  }

  /** Start listening; may be called several times (e.g. TCP and a unix socket). */
  async listen(options: NbdListenOptions = {}): Promise<NbdAddress> {
    if (this.closing) throw new NbdClosedError('NBD server');
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    const label = 'path' in options ? options.path : `${options.host ?? '127.0.0.1'}:${options.port ?? 0}`;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.off('listening', onListening);
        if (err.code === 'EADDRINUSE') reject(new NbdAddressInUseError(label, { cause: err }));
        else
          reject(
            new NbdError(ErrorCode.Internal, `NBD server cannot listen on ${label}: ${err.message}`, { cause: err }),
          );
      };
      const onListening = () => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      if ('path' in options) server.listen(options.path);
      else server.listen(options.port ?? 0, options.host ?? '127.0.0.1');
    });
    this.servers.push(server);
    const address = describe(server, options);
    this.listenAddresses.push(address);
    return address;
  }

  /**
   * Stop listening, let every connection finish the requests it has in flight (up to
   * drainTimeoutMs), then close them. Export backends are left open: their owner closes them.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const stopped = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    await Promise.all([...this.connections].map((c) => c.shutdown()));
    await Promise.all(stopped);
    this.servers.length = 0;
  }

  private accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    socket.on('error', () => undefined);
    const conn = new NbdConnection(
      socket,
      {
        registry: this.registry,
        limits: {
          minimum: this.options.minBlockSize,
          preferred: this.options.preferredBlockSize,
          maximum: this.options.maxPayload,
        },
        maxInFlight: this.options.maxInFlight,
        maxInFlightBytes: this.options.maxInFlightBytes,
        handshakeTimeoutMs: this.options.handshakeTimeoutMs,
        drainTimeoutMs: this.options.drainTimeoutMs,
        onSession: (c, session) => {
          this.emit('session', {
            connectionId: c.id,
            remote: c.remote,
            exportName: session.export.name,
            structuredReplies: session.structuredReplies,
            baseAllocation: session.baseAllocation,
            via: session.via,
          });
        },
        onProtocolError: (c, error) => {
          this.emit('protocolError', error, { connectionId: c.id, remote: c.remote });
        },
        onCommandError: (failure) => {
          this.emit('commandError', failure);
        },
      },
      this.nextId++,
    );
    this.connections.add(conn);
    this.emit('connection', { connectionId: conn.id, remote: conn.remote });
    void conn.closed.then(() => {
      this.connections.delete(conn);
      this.emit('disconnect', { connectionId: conn.id, exportName: conn.exportName });
    });
    void conn.run();
  }
}

function describe(server: Server, options: NbdListenOptions): NbdAddress {
  if ('path' in options) {
    return { transport: 'unix', path: options.path, uri: `nbd+unix:///?socket=${options.path}` };
  }
  const info = server.address() as AddressInfo;
  const host = info.address;
  const hostPart = info.family === 'IPv6' ? `[${host}]` : host;
  return { transport: 'tcp', host, port: info.port, uri: `nbd://${hostPart}:${info.port}` };
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function checkLimits(o: { minBlockSize: number; preferredBlockSize: number; maxPayload: number }): void {
  const problems: string[] = [];
  if (!isPowerOfTwo(o.minBlockSize) || o.minBlockSize > 65536) problems.push('minBlockSize: power of 2, ≤ 65536');
  if (!isPowerOfTwo(o.preferredBlockSize) || o.preferredBlockSize < Math.max(o.minBlockSize, 512)) {
    problems.push('preferredBlockSize: power of 2, ≥ max(minBlockSize, 512)');
  }
  if (!Number.isInteger(o.maxPayload) || o.maxPayload < o.preferredBlockSize || o.maxPayload > 0xffffffff) {
    problems.push('maxPayload: integer between preferredBlockSize and 2^32-1');
  }
  if (problems.length > 0) {
    throw new NbdError(ErrorCode.InvalidRequest, `invalid NBD server options: ${problems.join('; ')}`);
  }
}
