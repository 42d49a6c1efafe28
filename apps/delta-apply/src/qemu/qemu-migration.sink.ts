import type { NatsConnection } from '@nats-io/nats-core';
import type { Zstd } from '@wanmig/codec';
import { QemuReturnPathStreamId, StreamKind } from '@wanmig/protocol';
import { BytePipeSender, MemoryWatermarkStore, StreamReceiver, type ReceiverStats } from '@wanmig/stream';
import { QemuIncomingWriter, type QemuIncomingStats } from './qemu-incoming.writer.js';
import { QEMU_MIGRATION_STREAM_ID } from './qemu-stream.constants.js';

export interface QemuMigrationSinkOptions {
  nc: NatsConnection;
  migrationId: string;
  /** The destination QEMU's `-incoming unix:<socketPath>`; it may appear after `start`. */
  socketPath: string;
  /** How long to wait for that socket (DEFAULT_QEMU_CONNECT_TIMEOUT_MS). */
  connectTimeoutMs?: number;
  zstd?: Zstd;
  /** The receiver acknowledges at least this often while frames arrive (the stream layer's default otherwise). */
  ackIntervalMs?: number;
  /**
   * Relay what the destination QEMU sends back (its return path: post-copy page requests) to the source's relay,
   * which must listen for it (QemuMigrationSource `returnPath`).
   */
  returnPath?: boolean;
}

export interface QemuSinkProgress extends QemuIncomingStats {
  receiver: ReceiverStats;
  /** The chain of the segment digests checked so far (equal to the relay's once the stream is whole). */
  streamSha256: string;
  /** Return-path bytes sent back to the source, and why that broke if it did. */
  returnBytes: number;
  returnPathError?: string;
}

export interface QemuSinkReport extends QemuSinkProgress {
  /** From `start` to the End frame being written and acknowledged. */
  streamMs: number;
}

/**
 * Destination end of QEMU's migration stream (issue 6): a StreamReceiver on stream
 * QEMU_MIGRATION_STREAM_ID whose in-order applier is a QemuIncomingWriter, feeding the
 * destination QEMU's `-incoming` socket. Frames are acknowledged only once their bytes are in the
 * kernel's socket buffer towards that QEMU (see QemuIncomingWriter for why that is the durable point).
 *
 * The watermark lives in memory: a restarted sink could not continue a QEMU stream anyway (the
 * destination QEMU's connection, and QEMU's parser state with it, are gone), so a new attempt is a
 * new stream from byte 0, which the source insists on.
 *
 * `done` resolves once the End frame is written, the write side closed and that acknowledged; it
 * rejects if the stream fails (e.g. the destination QEMU went away and frames could not be written).
 * Whether the destination QEMU loaded the stream is QEMU's to say (`query-status`, MIGRATION event).
 */
export class QemuMigrationSink {
  readonly done: Promise<QemuSinkReport>;

  private constructor(
    private readonly writer: QemuIncomingWriter,
    private readonly receiver: StreamReceiver,
    startedAt: number,
    private readonly returnPipe?: BytePipeSender,
  ) {
    this.done = receiver.finished().then(() => ({
      ...this.progress,
      streamMs: Math.round(performance.now() - startedAt),
    }));
    void this.done.catch(() => undefined);
  }

  /** Starts receiving and begins connecting to the destination QEMU's socket. */
  static async start(options: QemuMigrationSinkOptions): Promise<QemuMigrationSink> {
    const startedAt = performance.now();
    const { nc, migrationId, socketPath, connectTimeoutMs, zstd, ackIntervalMs } = options;
    // A page request must not wait for a window of bulk: the return path has its own small stream, sent at once.
    const returnPipe = options.returnPath
      ? new BytePipeSender({ nc, migrationId, streamId: QemuReturnPathStreamId, kind: StreamKind.Memory })
      : undefined;
    const writer = new QemuIncomingWriter({
      migrationId,
      socketPath,
      connectTimeoutMs,
      zstd,
      onReturnBytes: returnPipe && ((chunk) => returnPipe.push(chunk)),
    });
    const receiver = new StreamReceiver({
      nc,
      migrationId,
      streamId: QEMU_MIGRATION_STREAM_ID,
      sink: writer,
      store: new MemoryWatermarkStore(),
      ackIntervalMs,
    });
    await receiver.start();
    // Connect ahead of the first frame; a failure here shows again (and fails the stream) when a frame needs it.
    void writer.connect().catch(() => undefined);
    return new QemuMigrationSink(writer, receiver, startedAt, returnPipe);
  }

  get progress(): QemuSinkProgress {
    return {
      ...this.writer.stats,
      streamSha256: this.writer.streamSha256,
      receiver: { ...this.receiver.stats, rejected: { ...this.receiver.stats.rejected } },
      returnBytes: this.returnPipe?.stats.bytes ?? 0,
      returnPathError: this.returnPipe?.error?.message,
    };
  }

  /** Stops receiving and drops the connection to the destination QEMU (it was closed already after End). */
  async stop(): Promise<void> {
    await this.receiver.stop();
    this.returnPipe?.close();
    this.writer.close();
  }
}
