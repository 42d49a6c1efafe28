import { rm } from 'node:fs/promises';
import type { Server, Socket } from 'node:net';
import { BatchCompressor, Zstd, ZstdStreamEncoder } from '@wanmig/codec';
import type { NatsConnection } from '@nats-io/nats-core';
import { ErrorCode, FrameFlag, MAX_FRAME_PAYLOAD, QemuReturnPathStreamId, WanmigError } from '@wanmig/protocol';
import { BytePipeSink, MemoryWatermarkStore, StreamDigester, StreamReceiver } from '@wanmig/stream';
import { QemuStreamAbortedError, QemuStreamError } from './qemu-migration.errors.js';
import { DEFAULT_QEMU_FLUSH_IDLE_MS, DEFAULT_QEMU_FRAME_BYTES } from './qemu-stream.constants.js';
import { listenUnix } from './unix-socket.listener.js';

/** What the source needs of a `StreamSender` (one opened by `openQemuStreamSender`). */
export interface QemuFrameOutlet {
  send(frame: { offset: number; length: number; flags: number; payload: Uint8Array }): Promise<void>;
  drain(): Promise<void>;
  close(): void;
}

export interface QemuMigrationSourceOptions {
  migrationId: string;
  /** Where QEMU connects: its `migrate` command gets `uri: unix:<socketPath>`. */
  socketPath: string;
  /** Opened, and positioned at byte 0; the source owns it from now on and closes it when done or aborted. */
  sender: QemuFrameOutlet;
  /**
   * How frames are compressed (default `stream` where the native zstd loads, else `frame`): `stream` runs one zstd
   * stream with long-distance matching through all frames (FrameFlag.ZstdStream), so a page QEMU sends that
   * repeats one sent before (a freed buffer still holding what was copied from it, a page re-sent unchanged) costs
   * a reference; `frame` compresses each frame on its own (FrameFlag.Zstd, kept where it saves 3 %); `none`.
   */
  compression?: QemuStreamCompression;
  /** zstd for `frame` compression; default `Zstd.load()`; false: raw frames (as `compression: 'none'`). */
  zstd?: Zstd | false;
  /** Stream bytes per frame before compression (default DEFAULT_QEMU_FRAME_BYTES). */
  frameBytes?: number;
  /** A partial frame leaves after this long without more bytes (default DEFAULT_QEMU_FLUSH_IDLE_MS). */
  flushIdleMs?: number;
  /** Stream bytes per digest segment (default STREAM_DIGEST_SEGMENT_BYTES); frames never straddle two. */
  digestSegmentBytes?: number;
  /**
   * Receive the destination QEMU's return path (stream QemuReturnPathStreamId, sent by the sink) on this
   * connection and write it into QEMU's socket: post-copy needs it for page requests.
   */
  returnPath?: { nc: NatsConnection };
}

export const QemuStreamCompression = { Stream: 'stream', Frame: 'frame', None: 'none' } as const;
export type QemuStreamCompression = (typeof QemuStreamCompression)[keyof typeof QemuStreamCompression];

export interface QemuSourceProgress {
  /** The compression the relay settled on. */
  compression: QemuStreamCompression;
  /** Bytes read from QEMU's socket. */
  qemuBytes: number;
  /** Of those, the bytes sealed into frames and handed to the sender. */
  framedBytes: number;
  /** Payload bytes of those frames, after zstd where it paid (headers and re-sends not included). */
  frameBytes: number;
  frames: number;
  compressedFrames: number;
  /** Times the socket stopped being read because the sender's window was full, and for how long in all. */
  readStalls: number;
  readStalledMs: number;
  /** Bytes of the destination's return path written back to QEMU. */
  returnBytes: number;
  /** QEMU connected; QEMU closed its end (the stream is whole); the End frame is durable at the destination. */
  connected: boolean;
  qemuClosed: boolean;
  delivered: boolean;
  /** Digest segments sent so far, and the chain of their digests (StreamDigester), the last one's with the End. */
  digestSegments: number;
  streamSha256: string;
}

export interface QemuSourceReport extends QemuSourceProgress {
  /** From QEMU's connection to the End frame being durable at the destination. */
  streamMs: number;
  /** From QEMU closing the socket to the End frame being durable: the relay's share of the switchover. */
  tailMs: number;
}

/**
 * Source end of QEMU's migration stream (issue 6). Listens on a unix socket, takes QEMU's one
 * migration connection (precopy without multifd opens exactly one; later ones are refused), and
 * relays the bytes through a stream sender as frames: kind Memory, stream QEMU_MIGRATION_STREAM_ID,
 * `offset` the byte position in QEMU's stream, `length` the bytes a frame covers once decoded,
 * the payload one segment of a zstd stream through all frames (FrameFlag.ZstdStream; see `compression`).
 *
 * End to end check: every byte QEMU wrote is hashed as it is framed, in segments (StreamDigester, at most
 * STREAM_DIGEST_SEGMENT_BYTES; frames are cut at segment ends). After a segment's last frame goes a FrameFlag.Digest
 * frame (no bytes, the segment's sha256); when QEMU closes the socket the last segment's digest goes with
 * FrameFlag.End. The destination's feed hashes what it hands its QEMU the same way and fails the stream on the first
 * segment that differs, so a destination never runs on a stream that is not the one QEMU wrote.
 *
 * Backpressure: while the sender's window is full the socket is not read, so QEMU's writes block
 * and QEMU measures the WAN's pace as its bandwidth, which is what its convergence (expected
 * downtime = remaining dirty bytes / bandwidth against `downtime-limit`) runs on. Read-ahead is
 * bounded to about two frames; what QEMU counts as sent but is not yet at the destination is that,
 * the kernel's socket buffer and the sender's window (keep the window near 2 × bandwidth × RTT).
 *
 * `done` resolves once QEMU's whole stream is durable at the destination: delivered, which is not
 * the same as migrated; QEMU's `query-migrate` (source) and the destination's state say whether the
 * migration succeeded. QEMU cancelling also closes the socket: the destination then sees a stream
 * that ends early and fails its incoming migration, as it would on a direct link. A relay that
 * fails (sender gave up, socket error) destroys QEMU's connection, so QEMU fails the migration and
 * the guest keeps running at the source.
 */
export class QemuMigrationSource {
  readonly done: Promise<QemuSourceReport>;
  private readonly counters: QemuSourceProgress = {
    compression: QemuStreamCompression.None,
    qemuBytes: 0,
    returnBytes: 0,
    framedBytes: 0,
    frameBytes: 0,
    frames: 0,
    compressedFrames: 0,
    readStalls: 0,
    readStalledMs: 0,
    connected: false,
    qemuClosed: false,
    delivered: false,
    digestSegments: 0,
    streamSha256: '',
  };
  private socket?: Socket;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private offset = 0;
  private pumping = false;
  private endSent = false;
  private stalledAt?: number;
  private idleTimer?: NodeJS.Timeout;
  private acceptedAt = 0;
  private closedAt = 0;
  private settled = false;
  private listening = true;
  private resolveDone!: (report: QemuSourceReport) => void;
  private rejectDone!: (err: Error) => void;
  private readonly frameSpan: number;
  private readonly flushIdleMs: number;
  /** What QEMU wrote, hashed as it is framed (before zstd): the destination's feed hashes what it hands on. */
  private readonly digester: StreamDigester;

  private constructor(
    private readonly options: QemuMigrationSourceOptions,
    private readonly server: Server,
    private readonly compressor: BatchCompressor | undefined,
    private readonly encoder: ZstdStreamEncoder | undefined,
  ) {
    this.counters.compression = encoder
      ? QemuStreamCompression.Stream
      : compressor
        ? QemuStreamCompression.Frame
        : QemuStreamCompression.None;
    this.frameSpan = options.frameBytes ?? DEFAULT_QEMU_FRAME_BYTES;
    this.flushIdleMs = options.flushIdleMs ?? DEFAULT_QEMU_FLUSH_IDLE_MS;
    this.digester = new StreamDigester(options.digestSegmentBytes);
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // Whoever aborts may not be awaiting `done`; an abort must not surface as an unhandled rejection.
    void this.done.catch(() => undefined);
    server.on('connection', (socket) => this.onConnection(socket));
  }

  /** Listens on `socketPath`; then run QMP `migrate` with `uri: unix:<socketPath>`. */
  static async listen(options: QemuMigrationSourceOptions): Promise<QemuMigrationSource> {
    const frameBytes = options.frameBytes ?? DEFAULT_QEMU_FRAME_BYTES;
    if (!Number.isSafeInteger(frameBytes) || frameBytes < 4096 || frameBytes > MAX_FRAME_PAYLOAD) {
      throw new QemuStreamError(
        ErrorCode.InvalidRequest,
        `frameBytes must be an integer in [4096, ${MAX_FRAME_PAYLOAD}], got ${frameBytes}`,
        { migrationId: options.migrationId },
      );
    }
    const wanted = options.compression ?? (options.zstd === false ? QemuStreamCompression.None : undefined);
    let encoder: ZstdStreamEncoder | undefined;
    if (wanted === QemuStreamCompression.Stream || wanted === undefined) {
      // Asked for explicitly, a missing native zstd is an error; by default the relay falls back to frames.
      encoder = await ZstdStreamEncoder.create().catch((err: unknown) => {
        if (wanted === QemuStreamCompression.Stream) throw err;
        return undefined;
      });
    }
    let compressor: BatchCompressor | undefined;
    if (!encoder && wanted !== QemuStreamCompression.None && options.zstd !== false) {
      compressor = new BatchCompressor({ zstd: options.zstd || (await Zstd.load()) });
    }
    const server = await listenUnix(options.socketPath, options.migrationId);
    const source = new QemuMigrationSource(options, server, compressor, encoder);
    if (options.returnPath) {
      try {
        await source.listenForReturnPath(options.returnPath.nc);
      } catch (err) {
        await source.close();
        throw err;
      }
    }
    return source;
  }

  private returnReceiver?: StreamReceiver;

  private async listenForReturnPath(nc: NatsConnection): Promise<void> {
    const sink = new BytePipeSink((data) => this.writeBack(data));
    this.returnReceiver = new StreamReceiver({
      nc,
      migrationId: this.options.migrationId,
      streamId: QemuReturnPathStreamId,
      sink,
      store: new MemoryWatermarkStore(),
      ackIntervalMs: 5,
    });
    await this.returnReceiver.start();
  }

  /** The destination's return-path bytes into QEMU's socket (QEMU has connected before the destination speaks). */
  private writeBack(data: Buffer): Promise<void> {
    const socket = this.socket;
    if (!socket || socket.destroyed) {
      return Promise.reject(
        new QemuStreamError(ErrorCode.Unavailable, 'return-path bytes arrived, but QEMU is not connected', {
          migrationId: this.options.migrationId,
          qemuBytes: this.counters.qemuBytes,
        }),
      );
    }
    return new Promise((resolve, reject) => {
      socket.write(data, (err) => {
        if (err) return reject(err);
        this.counters.returnBytes += data.length;
        resolve();
      });
    });
  }

  private stopReturnPath(): void {
    void this.returnReceiver?.stop().catch(() => undefined);
    this.returnReceiver = undefined;
  }

  get progress(): QemuSourceProgress {
    const stalled = this.stalledAt === undefined ? 0 : performance.now() - this.stalledAt;
    return {
      ...this.counters,
      readStalledMs: Math.round(this.counters.readStalledMs + stalled),
      digestSegments: this.digester.segments,
      streamSha256: this.digester.streamSha256(),
    };
  }

  /**
   * Stops relaying: QEMU's connection is destroyed (QEMU fails the migration, the guest runs on),
   * the sender closed, the socket file removed; `done` rejects with QemuStreamAbortedError unless it
   * had settled. Idempotent.
   */
  async close(): Promise<void> {
    this.fail(
      new QemuStreamAbortedError({ migrationId: this.options.migrationId, qemuBytes: this.counters.qemuBytes }),
    );
    await this.stopListening();
  }

  private onConnection(socket: Socket): void {
    if (this.socket || this.settled) {
      socket.destroy();
      return;
    }
    this.socket = socket;
    this.counters.connected = true;
    this.acceptedAt = performance.now();
    void this.stopListening();
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.counters.qemuClosed = true;
      this.closedAt = performance.now();
      this.unstall();
      this.kick();
    });
    socket.on('error', (err) => {
      if (!this.counters.qemuClosed) this.fail(err);
    });
    socket.resume();
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.counters.qemuBytes += chunk.length;
    if (this.buffered >= 2 * this.frameSpan && this.stalledAt === undefined) {
      this.socket?.pause();
      this.stalledAt = performance.now();
      this.counters.readStalls++;
    }
    this.kick();
  }

  private unstall(): void {
    if (this.stalledAt === undefined) return;
    this.counters.readStalledMs += performance.now() - this.stalledAt;
    this.stalledAt = undefined;
    if (!this.counters.qemuClosed) this.socket?.resume();
  }

  /** Starts the pump when a frame is full or the stream ended; otherwise lets a partial frame wait a moment. */
  private kick(): void {
    if (this.pumping || this.endSent || this.settled) return;
    if (this.counters.qemuClosed || this.buffered >= this.frameSpan) {
      void this.pump(false);
    } else if (this.buffered > 0 && !this.idleTimer) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = undefined;
        if (!this.pumping) void this.pump(true);
      }, this.flushIdleMs);
    }
  }

  /** The one producer of frames: seals, compresses and sends them in stream order. */
  private async pump(flushPartial: boolean): Promise<void> {
    this.pumping = true;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    try {
      let partial = flushPartial;
      while (!this.settled) {
        const eof = this.counters.qemuClosed;
        if (!(this.buffered >= this.frameSpan || (this.buffered > 0 && (partial || eof)))) break;
        partial = false;
        // A frame ends where a digest segment does, so that the segment's digest can follow it.
        const body = this.take(Math.min(this.frameSpan, this.buffered, this.digester.room));
        this.digester.update(body);
        await this.sendFrame(body, 0);
        if (this.digester.room === 0) await this.sendDigest(0);
        if (this.buffered <= this.frameSpan) this.unstall();
      }
      if (!this.settled && this.counters.qemuClosed && this.buffered === 0 && !this.endSent) {
        // The stream is whole: the last segment's digest travels with the End.
        await this.sendDigest(FrameFlag.End);
        this.endSent = true;
      }
      if (this.endSent && !this.settled) await this.finish();
    } catch (err) {
      this.fail(err);
    } finally {
      this.pumping = false;
    }
    this.kick();
  }

  /** Seals the current digest segment and sends its digest: a frame that covers no bytes. */
  private async sendDigest(flags: number): Promise<void> {
    const { sha256 } = this.digester.seal();
    await this.options.sender.send({
      offset: this.offset,
      length: 0,
      flags: flags | FrameFlag.Digest,
      payload: sha256,
    });
  }

  private async sendFrame(body: Buffer, flags: number): Promise<void> {
    let payload = body;
    let codecFlag = 0;
    if (this.encoder && body.length > 0) {
      payload = this.encoder.push(body);
      codecFlag = FrameFlag.ZstdStream;
    } else if (this.compressor && body.length > 0) {
      const packed = this.compressor.maybeCompress(body);
      payload = packed.payload;
      if (packed.zstd) codecFlag = FrameFlag.Zstd;
    }
    const frame = { offset: this.offset, length: body.length, flags: flags | codecFlag };
    this.offset += body.length;
    this.counters.framedBytes += body.length;
    this.counters.frameBytes += payload.length;
    this.counters.frames++;
    if (codecFlag !== 0) this.counters.compressedFrames++;
    await this.options.sender.send({ ...frame, payload });
  }

  private take(bytes: number): Buffer {
    const parts: Buffer[] = [];
    let need = bytes;
    while (need > 0) {
      const head = this.chunks[0];
      if (head.length <= need) {
        parts.push(head);
        this.chunks.shift();
        need -= head.length;
      } else {
        parts.push(head.subarray(0, need));
        this.chunks[0] = head.subarray(need);
        need = 0;
      }
    }
    this.buffered -= bytes;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, bytes);
  }

  private async finish(): Promise<void> {
    await this.options.sender.drain();
    if (this.settled) return;
    this.settled = true;
    this.counters.delivered = true;
    const now = performance.now();
    this.options.sender.close();
    this.stopReturnPath();
    this.resolveDone({
      ...this.progress,
      streamMs: Math.round(now - this.acceptedAt),
      tailMs: Math.round(now - this.closedAt),
    });
  }

  private fail(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.idleTimer);
    this.unstall();
    this.socket?.destroy();
    this.options.sender.close();
    this.stopReturnPath();
    void this.stopListening();
    const { migrationId } = this.options;
    const qemuBytes = this.counters.qemuBytes;
    if (err instanceof QemuStreamError) {
      this.rejectDone(err);
      return;
    }
    const code = err instanceof WanmigError ? err.code : ErrorCode.Unavailable;
    const message = err instanceof Error ? err.message : String(err);
    this.rejectDone(
      new QemuStreamError(code, `relay of QEMU's migration stream ${migrationId} failed: ${message}`, {
        migrationId,
        qemuBytes,
        cause: err,
      }),
    );
  }

  /** No more connections; the socket file goes (a connection already taken is not affected). */
  private async stopListening(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    this.server.close();
    await rm(this.options.socketPath, { force: true });
  }
}
