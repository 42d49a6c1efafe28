import { type Socket, connect as netConnect } from 'node:net';
import { ErrorCode } from '@wanmig/protocol';
import { readerForSocket, type ByteReader } from './byte.reader.js';
import { ClientHandshake, type ClientSession } from './client.handshake.js';
import { NbdClosedError, NbdConnectionClosedError, NbdError } from './errors.js';
import { type BlockSizeLimits } from './handshake.negotiator.js';
import { CommandFlag, NbdCommand, TransmissionFlag } from './nbd.constants.js';
import { type BlockExtent } from './reply.codec.js';
import { ReplyDispatcher, type ReplyValue } from './reply.dispatcher.js';
import { encodeRequestHeader } from './request.codec.js';

/** Where to connect: TCP (default host 127.0.0.1) or a unix socket. */
export type NbdConnectTarget = { host?: string; port: number } | { path: string };

export interface NbdClientOptions {
  /** Export to open; default '' (the server's default export). */
  exportName?: string;
  /** Negotiate structured replies; default true. */
  structuredReplies?: boolean;
  /** Negotiate `base:allocation` so that blockStatus() works; default false. */
  blockStatus?: boolean;
  /** Requests in flight before further calls queue; default 64. */
  maxInFlight?: number;
  /** Give up connecting (and handshaking) after this long; default 10 s. */
  connectTimeoutMs?: number;
}

/** A raw request, for callers (and tests) that need exact control of type, flags and range. */
export interface NbdRawRequest {
  type: number;
  flags?: number;
  offset?: number;
  length?: number;
  /** WRITE payload; `length` defaults to its size. */
  data?: Buffer;
}

/**
 * A small NBD client: fixed newstyle handshake with NBD_OPT_GO, pipelined requests matched to their
 * replies by cookie, simple and structured replies. Failed requests reject with NbdCommandError
 * (carrying the NBD error value); a broken connection rejects everything in flight with
 * NbdConnectionClosedError.
 */
export class NbdClient {
  private readonly replies: ReplyDispatcher;
  private readonly queue: (() => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private nextCookie = 1;
  private closedError?: Error;
  private readonly closedPromise: Promise<void>;
  private readonly maxInFlight: number;

  private constructor(
    private readonly socket: Socket,
    reader: ByteReader,
    private readonly session: ClientSession,
    options: NbdClientOptions,
  ) {
    this.maxInFlight = options.maxInFlight ?? 64;
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => this.fail(new NbdConnectionClosedError()));
    this.replies = new ReplyDispatcher(reader, session, () => this.onSettled());
    this.replies.run().catch((err: unknown) => {
      this.fail(err instanceof NbdError ? err : new NbdConnectionClosedError({ cause: err }));
      socket.destroy();
    });
  }

  /** Connect, negotiate and enter the transmission phase. */
  static async connect(target: NbdConnectTarget, options: NbdClientOptions = {}): Promise<NbdClient> {
    const socket = await openSocket(target, options.connectTimeoutMs ?? 10_000);
    const reader = readerForSocket(socket);
    const timer = setTimeout(() => socket.destroy(), options.connectTimeoutMs ?? 10_000);
    try {
      const handshake = new ClientHandshake(reader, (b) => socket.write(b));
      await handshake.open();
      const session = await handshake.go({
        exportName: options.exportName ?? '',
        structuredReplies: options.structuredReplies ?? true,
        blockStatus: options.blockStatus ?? false,
      });
      return new NbdClient(socket, reader, session, options);
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The exports a server offers (NBD_OPT_LIST), then a clean NBD_OPT_ABORT. */
  static async list(
    target: NbdConnectTarget,
    options: { connectTimeoutMs?: number } = {},
  ): Promise<{ name: string; description: string }[]> {
    const socket = await openSocket(target, options.connectTimeoutMs ?? 10_000);
    const reader = readerForSocket(socket);
    try {
      const handshake = new ClientHandshake(reader, (b) => socket.write(b));
      await handshake.open();
      const exports = await handshake.list();
      await handshake.abort();
      return exports;
    } finally {
      socket.destroy();
    }
  }

  get exportName(): string {
    return this.session.exportName;
  }
  get size(): number {
    return this.session.size;
  }
  get transmissionFlags(): number {
    return this.session.transmissionFlags;
  }
  get blockSize(): BlockSizeLimits | undefined {
    return this.session.blockSize;
  }
  get structuredReplies(): boolean {
    return this.session.structuredReplies;
  }
  get readOnly(): boolean {
    return (this.session.transmissionFlags & TransmissionFlag.ReadOnly) !== 0;
  }
  get canBlockStatus(): boolean {
    return this.session.baseAllocationId !== undefined;
  }
  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.replies.size;
  }

  read(offset: number, length: number, options: { df?: boolean } = {}): Promise<Buffer> {
    const flags = options.df ? CommandFlag.Df : 0;
    return this.request({ type: NbdCommand.Read, flags, offset, length }) as Promise<Buffer>;
  }

  async write(offset: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    await this.request({ type: NbdCommand.Write, flags: options.fua ? CommandFlag.Fua : 0, offset, data });
  }

  async flush(): Promise<void> {
    await this.request({ type: NbdCommand.Flush });
  }

  async trim(offset: number, length: number, options: { fua?: boolean } = {}): Promise<void> {
    await this.request({ type: NbdCommand.Trim, flags: options.fua ? CommandFlag.Fua : 0, offset, length });
  }

  async writeZeroes(
    offset: number,
    length: number,
    options: { noHole?: boolean; fua?: boolean; fastZero?: boolean } = {},
  ): Promise<void> {
    const flags =
      (options.fua ? CommandFlag.Fua : 0) |
      (options.noHole ? CommandFlag.NoHole : 0) |
      (options.fastZero ? CommandFlag.FastZero : 0);
    await this.request({ type: NbdCommand.WriteZeroes, flags, offset, length });
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.request({ type: NbdCommand.Cache, offset, length });
  }

  /** `base:allocation` extents from `offset` (needs `blockStatus: true` at connect). */
  blockStatus(offset: number, length: number, options: { reqOne?: boolean } = {}): Promise<BlockExtent[]> {
    const flags = options.reqOne ? CommandFlag.ReqOne : 0;
    return this.request({ type: NbdCommand.BlockStatus, flags, offset, length }) as Promise<BlockExtent[]>;
  }

  /**
   * Send any request as given, without client-side checks (the server judges it). Resolves with the
   * data of a READ, the extents of a BLOCK_STATUS, or undefined.
   */
  async request(req: NbdRawRequest): Promise<ReplyValue> {
    this.ensureOpen();
    if (req.type === NbdCommand.Disc) throw new NbdError(ErrorCode.InvalidRequest, 'use disconnect() to send DISC');
    while (this.replies.size >= this.maxInFlight) {
      await new Promise<void>((resolve) => this.queue.push(resolve));
      this.ensureOpen();
    }
    const cookie = this.allocateCookie();
    const offset = req.offset ?? 0;
    const length = req.length ?? req.data?.length ?? 0;
    const header = encodeRequestHeader({
      flags: req.flags ?? 0,
      type: req.type,
      cookie: BigInt(cookie),
      offset,
      length,
    });
    const result = this.replies.expect(cookie, { type: req.type, offset, length });
    if (req.data && req.data.length > 0) {
      this.socket.cork();
      this.socket.write(header);
      this.socket.write(req.data);
      this.socket.uncork();
    } else {
      this.socket.write(header);
    }
    return result;
  }

  /** Wait for requests in flight (and queued), send NBD_CMD_DISC and close. */
  async disconnect(): Promise<void> {
    while (!this.closedError && (this.replies.size > 0 || this.queue.length > 0)) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    if (this.closedError) return;
    this.closedError = new NbdClosedError('NBD client');
    this.socket.end(encodeRequestHeader({ flags: 0, type: NbdCommand.Disc, cookie: 0n, offset: 0, length: 0 }));
    const timer = setTimeout(() => this.socket.destroy(), 5000);
    await this.closedPromise;
    clearTimeout(timer);
  }

  /** Drop the connection at once; requests in flight reject. */
  destroy(error?: Error): void {
    this.fail(error ?? new NbdClosedError('NBD client'));
    this.socket.destroy();
  }

  /** Resolves when the socket has closed. */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  private ensureOpen(): void {
    if (this.closedError) throw this.closedError;
  }

  private allocateCookie(): number {
    while (this.replies.has(this.nextCookie)) this.nextCookie = (this.nextCookie % 0xffffffff) + 1;
    const cookie = this.nextCookie;
    this.nextCookie = (this.nextCookie % 0xffffffff) + 1;
    return cookie;
  }

  private wakeIdle(): void {
    for (const wake of this.idleWaiters.splice(0)) wake();
  }

  /** A reply settled a request: let a queued call go, or tell disconnect() the client is idle. */
  private onSettled(): void {
    const next = this.queue.shift();
    if (next) next();
    else if (this.replies.size === 0) this.wakeIdle();
  }

  private fail(err: Error): void {
    this.closedError ??= err;
    this.replies.failAll(err);
    for (const wake of this.queue.splice(0)) wake();
    this.wakeIdle();
  }
}

function openSocket(target: NbdConnectTarget, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      'path' in target
        ? netConnect({ path: target.path })
        : netConnect({ host: target.host ?? '127.0.0.1', port: target.port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new NbdConnectionClosedError({ cause: new Error(`connect timed out after ${timeoutMs} ms`) }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.on('error', () => undefined);
      resolve(socket);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(new NbdConnectionClosedError({ cause: err }));
    };
    socket.once('error', onError);
  });
}
