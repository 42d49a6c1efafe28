import { ErrorCode, FrameFlag, type Frame } from '@wanmig/protocol';
import { StreamClosedError, StreamError } from './errors.js';
import type { FrameSink } from './frame.sink.js';
import type { SenderOptions } from './stream.options.js';
import { StreamSender } from './stream.sender.js';

/** Bytes gathered into one frame at most: a return path carries small messages, so frames stay small. */
const PIPE_FRAME_BYTES = 64 * 1024;

export interface BytePipeStats {
  bytes: number;
  frames: number;
}

/**
 * A byte stream pushed as it comes (a socket's `data` events) and carried in order as raw frames: the sending end
 * of a BytePipeSink. The stream sender is opened at the first byte, so its receiver may start later than this
 * object. Frames go one at a time; bytes pushed meanwhile wait and leave together.
 */
export class BytePipeSender {
  readonly stats: BytePipeStats = { bytes: 0, frames: 0 };
  /** Why the pipe broke (the sender gave up, or was closed); undefined while it works. */
  error?: Error;
  private readonly sender: StreamSender;
  private opened?: Promise<unknown>;
  private queue: Buffer[] = [];
  private queued = 0;
  private offset = 0;
  private pumping = false;
  private ending?: () => void;
  private ended = false;
  private closed = false;

  constructor(
    private readonly options: SenderOptions,
    private readonly onError?: (err: Error) => void,
  ) {
    this.sender = new StreamSender(options);
  }

  push(chunk: Buffer): void {
    if (this.error || this.ended || chunk.length === 0) return;
    this.queue.push(chunk);
    this.queued += chunk.length;
    void this.pump();
  }

  /** Sends what is queued, then an End frame, and waits until the receiver holds all of it. */
  async end(): Promise<void> {
    if (this.error) throw this.error;
    if (this.ended)
      throw new StreamClosedError({ migrationId: this.options.migrationId, streamId: this.options.streamId });
    await new Promise<void>((resolve) => {
      this.ending = resolve;
      void this.pump();
    });
    // The pump may have failed meanwhile (TypeScript keeps the narrowing from before the await).
    const failed = this.error as Error | undefined;
    if (failed) throw failed;
  }

  /** Stops the pipe: what is queued or pushed later is dropped (`error` stays as it was: closing is no failure). */
  close(): void {
    this.closed = true;
    this.ended = true;
    this.queue = [];
    this.queued = 0;
    this.sender.close();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      this.opened ??= this.sender.open();
      await this.opened;
      while (!this.error && this.queued > 0) {
        const payload = this.take(Math.min(PIPE_FRAME_BYTES, this.queued));
        const frame = { offset: this.offset, length: payload.length, flags: 0, payload };
        this.offset += payload.length;
        await this.sender.send(frame);
        this.stats.bytes += payload.length;
        this.stats.frames++;
      }
      if (this.ending && !this.ended && !this.error) {
        this.ended = true;
        await this.sender.send({ offset: this.offset, length: 0, flags: FrameFlag.End, payload: Buffer.alloc(0) });
        await this.sender.drain();
        this.sender.close();
      }
    } catch (err) {
      // A pipe closed on purpose fails its pending send: that is no error to report.
      if (!this.closed) {
        this.error ??= err instanceof Error ? err : new Error(String(err));
        this.sender.close();
        this.onError?.(this.error);
      }
    } finally {
      this.pumping = false;
    }
    if (this.ending && (this.ended || this.error)) this.ending();
    else if (this.queued > 0 && !this.error && !this.closed) void this.pump();
  }

  private take(bytes: number): Buffer {
    const all = this.queue.length === 1 ? this.queue[0] : Buffer.concat(this.queue, this.queued);
    const out = all.subarray(0, bytes);
    const rest = all.subarray(bytes);
    this.queue = rest.length > 0 ? [rest] : [];
    this.queued = rest.length;
    return out;
  }
}

/**
 * The receiving end of a BytePipeSender: hands each frame's bytes, in order and once, to `write`, and says when
 * the End frame came. Frames of any codec are refused: a pipe carries raw bytes.
 */
export class BytePipeSink implements FrameSink {
  readonly stats: BytePipeStats = { bytes: 0, frames: 0 };
  private position = 0;

  constructor(
    private readonly write: (data: Buffer) => Promise<void>,
    private readonly onEnd?: () => void,
  ) {}

  async apply(frame: Frame): Promise<void> {
    const { flags, offset, length, seq, migrationId, streamId } = frame.header;
    if (flags & (FrameFlag.Records | FrameFlag.Zstd | FrameFlag.ZstdStream)) {
      throw new StreamError(ErrorCode.FrameBadFlags, `frame ${seq}: a byte pipe carries raw bytes only`, {
        migrationId,
        streamId,
      });
    }
    if (offset !== this.position || frame.payload.length !== length) {
      throw new StreamError(
        ErrorCode.FrameOutOfRange,
        `frame ${seq} covers ${offset}+${length} (${frame.payload.length} bytes), the pipe is at ${this.position}`,
        { migrationId, streamId },
      );
    }
    if (length > 0) await this.write(Buffer.from(frame.payload));
    this.position += length;
    this.stats.bytes += length;
    this.stats.frames++;
    if (flags & FrameFlag.End) this.onEnd?.();
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }
}
