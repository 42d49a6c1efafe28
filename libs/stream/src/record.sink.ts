import { ChunkDecoder, type ChunkTarget } from '@wanmig/codec';
import { ErrorCode, FrameError, FrameFlag, type Frame } from '@wanmig/protocol';
import type { FrameSink } from './frame.sink.js';

export interface SyncableTarget extends ChunkTarget {
  readonly size: number;
  flushPending?(): void;
  sync(): Promise<void>;
}

/**
 * Applies frames to a target: a Records frame through the codec decoder (zero extents, references,
 * deltas, raw pages; every CRC checked), a plain frame as raw bytes at its offset.
 */
export class RecordSink implements FrameSink {
  private readonly decoder: ChunkDecoder;

  constructor(private readonly target: SyncableTarget) {
    this.decoder = new ChunkDecoder({ targetSize: target.size });
  }

  async apply(frame: Frame): Promise<void> {
    const { flags, offset, migrationId, seq } = frame.header;
    try {
      if (flags & FrameFlag.ZstdStream) {
        throw new FrameError(ErrorCode.FrameBadFlags, `frame ${seq}: this stream takes no zstd-stream frames`, {
          migrationId,
          seq,
        });
      }
      if (flags & FrameFlag.Records) {
        await this.decoder.apply(frame.payload, this.target, { zstd: (flags & FrameFlag.Zstd) !== 0 });
      } else {
        const body = await this.decoder.unpack(frame.payload, (flags & FrameFlag.Zstd) !== 0);
        if (offset + body.length > this.target.size) {
          throw new FrameError(ErrorCode.FrameOutOfRange, `frame ${seq} reaches past the end of the target`, {
            migrationId,
            seq,
          });
        }
        if (body.length > 0) await this.target.write(offset, body);
      }
    } finally {
      // Writes may hold views of the payload: they must reach the file before it is released.
      this.target.flushPending?.();
    }
  }

  sync(): Promise<void> {
    return this.target.sync();
  }
}
