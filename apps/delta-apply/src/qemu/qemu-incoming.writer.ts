import { type Socket, connect } from 'node:net';
import { Zstd, ZstdStreamDecoder } from '@wanmig/codec';
import { ErrorCode, FrameFlag, type Frame } from '@wanmig/protocol';
import { STREAM_DIGEST_BYTES, StreamDigester, type FrameSink } from '@wanmig/stream';
import { QemuIncomingError } from './qemu-incoming.errors.js';
import { DEFAULT_QEMU_CONNECT_TIMEOUT_MS, MAX_QEMU_FRAME_BYTES } from './qemu-stream.constants.js';

const DIAL_RETRY_MS = 50;
/** Errors of a socket that is not there yet, or not listening yet. */
const NOT_YET = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);

export interface QemuIncomingWriterOptions {
  migrationId: string;
  /** The destination QEMU's `-incoming unix:<socketPath>`. */
  socketPath: string;
  /** How long to wait for the socket to appear and accept (DEFAULT_QEMU_CONNECT_TIMEOUT_MS). */
  connectTimeoutMs?: number;
  /** Default: `Zstd.load()` on the first compressed frame. */
  zstd?: Zstd;
  /** What the destination QEMU sends back on the connection (its return path); by default counted and dropped. */
  onReturnBytes?: (chunk: Buffer) => void;
}

export interface QemuIncomingStats {
  /** Bytes of QEMU's stream accepted by the kernel towards the destination QEMU. */
  bytesWritten: number;
  frames: number;
  /** Payload bytes of those frames as they arrived (compressed where the source compressed). */
  payloadBytes: number;
  connected: boolean;
  /** The End frame was written and the write side closed. */
  ended: boolean;
  /** Bytes the destination QEMU sent back: its return path (post-copy), else none expected. */
  bytesFromQemu: number;
  /** Stream bytes whose digest matched the relay's (every byte up to here is what the source QEMU wrote). */
  verifiedBytes: number;
  /** The End came with the last segment's digest and it matched: the whole stream is the source QEMU's. */
  endVerified: boolean;
}

/**
 * Feeds QEMU's migration stream, frame by frame in sequence order, to the destination QEMU
 * started with `-incoming unix:<socketPath>`: decompresses (FrameFlag.Zstd, FrameFlag.ZstdStream), checks the frame
 * continues the stream exactly where the last one ended, and writes it to one connection to that
 * socket. On FrameFlag.End it closes the write side; QEMU has by then read its end-of-stream marker.
 *
 * What "durable" means here: `apply` resolves only once the frame's bytes were accepted by the
 * kernel (the socket write completed), so a slow destination QEMU holds back acks and the sender's
 * window, and the source QEMU sees that pace. That is as durable as a live stream gets: bytes in the
 * socket buffer are lost if the destination QEMU dies, and so is the migration, since QEMU cannot
 * replay a stream into a new QEMU from the middle; nothing stronger than the kernel would help.
 * `sync` therefore has nothing left to do.
 */
export class QemuIncomingWriter implements FrameSink {
  readonly stats: QemuIncomingStats = {
    bytesWritten: 0,
    frames: 0,
    payloadBytes: 0,
    connected: false,
    ended: false,
    bytesFromQemu: 0,
    verifiedBytes: 0,
    endVerified: false,
  };
  /** What is handed to the destination QEMU, hashed in the relay's segments. */
  private readonly digester = new StreamDigester();
  /** A segment that differed: the stream is refused from then on, whatever comes. */
  private mismatch?: QemuIncomingError;
  private connection?: Promise<Socket>;
  private socket?: Socket;
  private broken?: Error;
  private writeFailed = false;
  private closed = false;
  private zstd?: Zstd;
  private stream?: Promise<ZstdStreamDecoder>;

  constructor(private readonly options: QemuIncomingWriterOptions) {
    this.zstd = options.zstd;
  }

  /** Bytes of QEMU's stream written so far: where the next frame must start. */
  get position(): number {
    return this.stats.bytesWritten;
  }

  /** Connects to the destination QEMU, waiting for its socket to appear; later calls share the attempt. */
  connect(): Promise<Socket> {
    this.connection ??= this.dial();
    return this.connection;
  }

  async apply(frame: Frame): Promise<void> {
    const { flags, offset, length, seq } = frame.header;
    if (this.mismatch) throw this.mismatch;
    if (this.stats.ended) throw this.error(ErrorCode.StreamClosed, `frame ${seq} arrived after the End frame`, seq);
    if (flags & FrameFlag.Digest) return this.check(frame);
    if (flags & FrameFlag.End) {
      throw this.error(ErrorCode.FrameBadFlags, `frame ${seq} ends the stream without the last segment's digest`, seq);
    }
    if (flags & FrameFlag.Records) {
      throw this.error(ErrorCode.FrameBadFlags, `frame ${seq} carries codec records, not QEMU's bytes`, seq);
    }
    if (offset !== this.position) {
      throw this.error(
        ErrorCode.FrameOutOfRange,
        `frame ${seq} starts at ${offset}, the stream is at ${this.position}`,
        seq,
      );
    }
    if (length > MAX_QEMU_FRAME_BYTES) {
      throw this.error(
        ErrorCode.FrameTooLarge,
        `frame ${seq} covers ${length} bytes, more than ${MAX_QEMU_FRAME_BYTES}`,
        seq,
      );
    }
    let body = frame.payload;
    if (flags & (FrameFlag.Zstd | FrameFlag.ZstdStream)) {
      try {
        if (flags & FrameFlag.ZstdStream) {
          // Frames arrive here in order, each once (the offset check above), as the stream's decoder needs.
          this.stream ??= ZstdStreamDecoder.create();
          body = (await this.stream).pull(frame.payload, length);
        } else {
          this.zstd ??= await Zstd.load();
          body = this.zstd.decompress(frame.payload, length);
        }
      } catch (cause) {
        throw this.error(ErrorCode.RecordCorrupt, `frame ${seq} does not decompress`, seq, cause);
      }
    }
    if (body.length !== length) {
      throw this.error(
        ErrorCode.RecordCorrupt,
        `frame ${seq} carries ${body.length} bytes, its header says ${length}`,
        seq,
      );
    }
    if (body.length > this.digester.room) {
      throw this.error(
        ErrorCode.FrameOutOfRange,
        `frame ${seq} crosses the digest segment that ends at ${this.digester.segmentStart + this.digester.segmentBytes}`,
        seq,
      );
    }
    const socket = await this.connect();
    // Hashed as handed on: the bytes are fresh buffers, never reused, so what is hashed is what QEMU reads.
    this.digester.update(body);
    if (body.length > 0) await this.write(socket, body, seq);
    this.stats.bytesWritten += length;
    this.stats.frames++;
    this.stats.payloadBytes += frame.payload.length;
  }

  /** The chain of the segment digests checked so far (the relay reports the same once it sent them). */
  get streamSha256(): string {
    return this.digester.streamSha256();
  }

  /**
   * A Digest frame: the relay's sha256 of the segment that ends here, against ours of what we handed the destination
   * QEMU. A difference is final (FinalApplyError): the connection to QEMU is dropped, so that a QEMU still loading
   * fails its incoming migration, and `mem.qemu.resume` refuses one that finished loading.
   */
  private async check(frame: Frame): Promise<void> {
    const { flags, offset, length, seq } = frame.header;
    if (length !== 0 || frame.payload.length !== STREAM_DIGEST_BYTES || offset !== this.position) {
      throw this.error(
        ErrorCode.FrameBadFlags,
        `digest frame ${seq} at ${offset} (${length} bytes, ${frame.payload.length}-byte payload) does not close ` +
          `the segment at ${this.position}`,
        seq,
      );
    }
    const ours = this.digester.seal();
    if (!ours.sha256.equals(frame.payload)) {
      this.mismatch = this.error(
        ErrorCode.DigestMismatch,
        `QEMU's migration stream differs in bytes [${ours.start}, ${ours.end}): sha256 ` +
          `${ours.sha256.toString('hex').slice(0, 16)}… handed to the destination QEMU, ` +
          `${frame.payload.toString('hex').slice(0, 16)}… read from the source QEMU`,
        seq,
        undefined,
        true,
      );
      this.close();
      throw this.mismatch;
    }
    this.stats.verifiedBytes = ours.end;
    if (flags & FrameFlag.End) {
      const socket = await this.connect();
      // QEMU may have closed already: it stops reading once it has the whole stream (a post-copy ends so,
      // while the relay's End frame is still on its way).
      if (!socket.destroyed) await new Promise<void>((resolve) => socket.end(resolve));
      this.stats.ended = true;
      this.stats.endVerified = true;
    }
  }

  /**
   * Every applied byte is already in the kernel: see the class comment. A connection QEMU closed is not a failure
   * by itself (it closes once it has read the whole stream); a write it refused is, and the next frame with bytes
   * finds the connection closed.
   */
  sync(): Promise<void> {
    if (this.writeFailed && !this.stats.ended) return Promise.reject(this.brokenError());
    return Promise.resolve();
  }

  /** Drops the connection (the destination QEMU then fails its incoming migration unless it had ended). */
  close(): void {
    this.closed = true;
    this.socket?.destroy();
  }

  private write(socket: Socket, body: Buffer, seq: number): Promise<void> {
    if (this.broken || socket.destroyed) {
      this.writeFailed = true;
      return Promise.reject(this.brokenError(seq));
    }
    return new Promise((resolve, reject) => {
      socket.write(body, (err) => {
        if (!err) return resolve();
        this.writeFailed = true;
        reject(this.brokenError(seq, err));
      });
    });
  }

  private async dial(): Promise<Socket> {
    const { socketPath } = this.options;
    const timeoutMs = this.options.connectTimeoutMs ?? DEFAULT_QEMU_CONNECT_TIMEOUT_MS;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.closed) throw this.error(ErrorCode.StreamClosed, 'the writer was closed before it connected');
      try {
        const socket = await connectOnce(socketPath);
        this.adopt(socket);
        return socket;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (!NOT_YET.has(code) || performance.now() + DIAL_RETRY_MS > deadline) {
          throw this.error(
            ErrorCode.Unavailable,
            `destination QEMU's incoming socket ${socketPath} did not accept within ${timeoutMs} ms (${code || String(err)})`,
            undefined,
            err,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, DIAL_RETRY_MS));
      }
    }
  }

  private adopt(socket: Socket): void {
    this.socket = socket;
    this.stats.connected = true;
    if (this.closed) socket.destroy();
    socket.on('error', (err) => (this.broken ??= err));
    socket.on('close', () => (this.broken ??= new Error('the destination QEMU closed the connection')));
    // Without a return path nothing is expected back: it is read and counted so that it never fills a buffer.
    socket.on('data', (chunk: Buffer) => {
      this.stats.bytesFromQemu += chunk.length;
      this.options.onReturnBytes?.(chunk);
    });
  }

  private brokenError(seq?: number, cause: unknown = this.broken): QemuIncomingError {
    const reason = cause instanceof Error ? cause.message : 'the connection is closed';
    return this.error(ErrorCode.Unavailable, `writing to the destination QEMU failed: ${reason}`, seq, cause);
  }

  private error(code: ErrorCode, message: string, seq?: number, cause?: unknown, final = false): QemuIncomingError {
    const { migrationId, socketPath } = this.options;
    return new QemuIncomingError(code, message, {
      migrationId,
      socketPath,
      position: this.position,
      seq,
      cause,
      final,
    });
  }
}

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const onError = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}
