import type { ChunkEncoder } from '@wanmig/codec';
import { FrameFlag, MAX_FRAME_PAYLOAD } from '@wanmig/protocol';
import type { StreamSender } from './stream.sender.js';

/** Raw bytes gathered into one frame before it is sealed (a few hundred KiB keeps framing cost low). */
export const DEFAULT_FRAME_SPAN_BYTES = 256 * 1024;

export interface RecordWriterStats {
  rawBytes: number;
  frames: number;
  payloadBytes: number;
}

/**
 * Encodes chunks through the codec and ships them as Records frames: the sender side of
 * `RecordSink`. A frame is sealed once it covers `frameSpanBytes` or when flushed.
 */
export class RecordStreamWriter {
  readonly stats: RecordWriterStats = { rawBytes: 0, frames: 0, payloadBytes: 0 };
  private covered = 0;

  constructor(
    private readonly sender: StreamSender,
    private readonly encoder: ChunkEncoder,
    private readonly frameSpanBytes = DEFAULT_FRAME_SPAN_BYTES,
  ) {}

  async write(offset: number, data: Uint8Array): Promise<void> {
    for (let at = 0; at < data.length;) {
      const take = Math.min(data.length - at, this.frameSpanBytes - this.covered);
      this.encoder.encode(offset + at, data.subarray(at, at + take));
      this.covered += take;
      at += take;
      this.stats.rawBytes += take;
      if (this.covered >= this.frameSpanBytes || this.encoder.pendingBytes > MAX_FRAME_PAYLOAD / 2) {
        await this.flush();
      }
    }
  }

  /**
   * A range that reads as zeroes, as one Zero extent, without bytes: it costs a record header, so it does not count
   * towards the frame's span (a 2 GiB hole does not seal thousands of frames).
   */
  writeZero(offset: number, length: number): void {
    this.encoder.encodeZero(offset, length);
    this.stats.rawBytes += length;
  }

  /** Seals the current frame; `end` marks the last frame of the stream. */
  async flush(extraFlags = 0): Promise<void> {
    if (this.encoder.pendingRecords === 0 && extraFlags === 0) return;
    const batch = this.encoder.takeBatch();
    const { payload, zstd } = this.encoder.maybeCompress(batch);
    const span = batch.span ?? { offset: 0, end: 0 };
    const flags = FrameFlag.Records | (zstd ? FrameFlag.Zstd : 0) | extraFlags;
    this.covered = 0;
    this.stats.frames++;
    this.stats.payloadBytes += payload.length;
    await this.sender.send({ offset: span.offset, length: span.end - span.offset, flags, payload });
  }

  /** Seals the last frame with End and waits until the receiver holds everything durably. */
  async finish(): Promise<void> {
    await this.flush(FrameFlag.End);
    await this.sender.drain();
  }
}
