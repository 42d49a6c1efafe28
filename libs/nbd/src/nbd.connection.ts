import type { Socket } from 'node:net';
import { type ByteReader, readerForSocket } from './byte.reader.js';
import { type CommandFailure, executeCommand } from './command.executor.js';
import { NbdConnectionClosedError } from './errors.js';
import { type ExportEntry, type ExportRegistry } from './export.registry.js';
import { type BlockSizeLimits, HandshakeNegotiator, type NegotiatedSession } from './handshake.negotiator.js';
import { NbdCommand, NbdErrno, WireSize } from './nbd.constants.js';
import { ReplyWriter } from './reply.writer.js';
import { type NbdRequestHeader, decodeRequestHeader } from './request.codec.js';
import { validateRequest } from './request.validator.js';

/** Per-connection limits and callbacks the server hands to each connection. */
export interface ConnectionSettings {
  registry: ExportRegistry;
  limits: BlockSizeLimits;
  /** Requests executing at once on one connection before the server stops reading more. */
  maxInFlight: number;
  /** Payload bytes (WRITE data, READ lengths) in flight before the server stops reading more. */
  maxInFlightBytes: number;
  handshakeTimeoutMs: number;
  /** How long a closing connection waits for requests in flight. */
  drainTimeoutMs: number;
  onSession(conn: NbdConnection, session: NegotiatedSession<ExportEntry>): void;
  onProtocolError(conn: NbdConnection, err: Error): void;
  onCommandError(failure: CommandFailure): void;
}

type Phase = 'handshake' | 'transmission' | 'closing' | 'closed';

/** Option replies the client has not read before the server gives up on it. */
const HANDSHAKE_MAX_UNREAD = 1024 * 1024;

/**
 * One client: the handshake, then the transmission loop. Requests are read one after another
 * (header, then the WRITE payload once its length is validated), executed concurrently up to the
 * in-flight limits, and replied to as each completes. A request is applied only once it has fully
 * arrived; a peer that vanishes mid-request leaves nothing half-written.
 */
export class NbdConnection {
  readonly id: number;
  readonly remote: string;
  private readonly reader: ByteReader;
  private phase: Phase = 'handshake';
  private session?: NegotiatedSession<ExportEntry>;
  private inFlight = 0;
  private inFlightBytes = 0;
  private readonly idle = new Set<() => void>();
  private stopReading = false;
  private readonly closedPromise: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly settings: ConnectionSettings,
    id: number,
  ) {
    this.id = id;
    this.remote = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    if (socket.remoteAddress) socket.setNoDelay(true);
    this.reader = readerForSocket(socket);
    socket.on('drain', () => this.wake());
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => {
      this.phase = 'closed';
      this.wake();
    });
  }

  get exportName(): string | undefined {
    return this.session?.export.name;
  }

  /** Resolves when the socket has closed. */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  /** Run the connection until it ends; never rejects. */
  async run(): Promise<void> {
    try {
      const session = await this.handshake();
      if (!session) {
        this.socket.end();
        return;
      }
      this.session = session;
      this.phase = 'transmission';
      this.settings.onSession(this, session);
      await this.transmission(session);
    } catch (err) {
      // A shutdown we started closes the socket itself once requests in flight have replied.
      if (this.stopReading && err instanceof NbdConnectionClosedError) return;
      if (!(err instanceof NbdConnectionClosedError)) this.settings.onProtocolError(this, err as Error);
      this.socket.destroy();
    }
  }

  /**
   * Stop taking requests, let those in flight finish and reply (up to the drain timeout), then close.
   * A connection still in the handshake is dropped at once.
   */
  async shutdown(): Promise<void> {
    if (this.phase === 'closed') return;
    if (this.phase === 'handshake') {
      this.socket.destroy();
      return this.closedPromise;
    }
    this.stopReading = true;
    this.reader.destroy();
    this.wake();
    if (this.phase === 'transmission') await this.drainThenEnd();
    return this.closedPromise;
  }

  private async handshake(): Promise<NegotiatedSession<ExportEntry> | undefined> {
    const timer = setTimeout(() => this.socket.destroy(), this.settings.handshakeTimeoutMs);
    try {
      const negotiator = new HandshakeNegotiator(
        this.reader,
        (buf) => {
          this.socket.write(buf);
          // A client that keeps sending options without reading the replies gets hung up on.
          if (this.socket.writableLength > HANDSHAKE_MAX_UNREAD) this.socket.destroy();
        },
        this.settings.registry,
        this.settings.limits,
      );
      return await negotiator.run();
    } finally {
      clearTimeout(timer);
    }
  }

  private async transmission(session: NegotiatedSession<ExportEntry>): Promise<void> {
    const entry = session.export;
    const replies = new ReplyWriter(this.socket, session.structuredReplies);
    const ctx = {
      size: entry.size,
      readOnly: entry.readOnly,
      structuredReplies: session.structuredReplies,
      baseAllocation: session.baseAllocation,
      minBlock: this.settings.limits.minimum,
      maxPayload: this.settings.limits.maximum,
    };
    while (!this.stopReading) {
      await this.capacity(replies);
      if (this.stopReading || this.phase === 'closed') break;
      const raw = this.reader.tryRead(WireSize.RequestHeader) ?? (await this.reader.readExact(WireSize.RequestHeader));
      const req = decodeRequestHeader(raw);
      if (req.type === NbdCommand.Disc) {
        await this.drainThenEnd();
        return;
      }
      let payload: Buffer | undefined;
      if (req.type === NbdCommand.Write) {
        if (req.length > ctx.maxPayload) {
          // Cannot skip what we will not buffer: refuse, finish the others, and hang up.
          replies.error(req.cookie, NbdErrno.EINVAL, `WRITE of ${req.length} bytes exceeds ${ctx.maxPayload}`);
          this.stopReading = true;
          this.settings.onProtocolError(this, new Error(`oversized WRITE payload of ${req.length} bytes`));
          await this.drainThenEnd();
          return;
        }
        payload = this.reader.tryRead(req.length) ?? (await this.reader.readExact(req.length));
      }
      const rejection = validateRequest(req, ctx);
      if (rejection) {
        replies.error(req.cookie, rejection.errno, rejection.message);
        continue;
      }
      this.dispatch(entry, req, payload, replies);
    }
  }

  private dispatch(entry: ExportEntry, req: NbdRequestHeader, payload: Buffer | undefined, replies: ReplyWriter) {
    const bytes = req.type === NbdCommand.Read || req.type === NbdCommand.Write ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    void executeCommand(entry, req, payload, replies, (f) => this.settings.onCommandError(f)).finally(() => {
      this.inFlight--;
      this.inFlightBytes -= bytes;
      this.wake();
    });
  }

  /** Wait until another request may be read: below the in-flight limits and the socket not backed up. */
  private async capacity(replies: ReplyWriter): Promise<void> {
    while (
      this.phase !== 'closed' &&
      !this.stopReading &&
      this.inFlight > 0 &&
      (this.inFlight >= this.settings.maxInFlight ||
        this.inFlightBytes >= this.settings.maxInFlightBytes ||
        replies.needsDrain)
    ) {
      await new Promise<void>((resolve) => this.idle.add(resolve));
    }
  }

  private wake(): void {
    if (this.idle.size === 0) return;
    const waiters = [...this.idle];
    this.idle.clear();
    for (const w of waiters) w();
  }

  /** Wait for requests in flight (bounded), then end the socket once its replies are flushed. */
  private async drainThenEnd(): Promise<void> {
    if (this.phase === 'closed' || this.phase === 'closing') return;
    this.phase = 'closing';
    const deadline = Date.now() + this.settings.drainTimeoutMs;
    while (this.inFlight > 0 && !this.socket.destroyed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.idle.add(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const socket = this.socket;
    if (socket.destroyed) return;
    // Keep reading (and discarding) what the peer still sends, so that closing does not reset the
    // connection before the peer has read our last replies; destroy it if it lingers.
    socket.removeAllListeners('data');
    socket.on('data', () => undefined);
    socket.resume();
    socket.end();
    const timer = setTimeout(() => socket.destroy(), this.settings.drainTimeoutMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }
}
