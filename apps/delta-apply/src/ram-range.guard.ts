import type { Frame } from '@wanmig/protocol';
import type { FrameSink } from '@wanmig/stream';
import { PageOutOfRangeError } from './errors.js';

/**
 * Refuses a memory frame whose header places it outside the RAM file before anything decodes it.
 * The records inside are checked again by the decoder (its target size is the RAM size), so a
 * frame whose header lies about its span is refused as a whole too; either way nothing is written,
 * and the receiver counts the error under its code (FRAME_OUT_OF_RANGE) and re-requests the frame.
 */
export class RamRangeGuard implements FrameSink {
  constructor(
    private readonly inner: FrameSink,
    private readonly ramBytes: number,
    private readonly migrationId: string,
  ) {}

  apply(frame: Frame): Promise<void> {
    const { offset, length, seq } = frame.header;
    if (offset + length > this.ramBytes) {
      const { migrationId, ramBytes } = this;
      return Promise.reject(new PageOutOfRangeError({ migrationId, seq, offset, length, ramBytes }));
    }
    return this.inner.apply(frame);
  }

  sync(): Promise<void> {
    return this.inner.sync();
  }
}
