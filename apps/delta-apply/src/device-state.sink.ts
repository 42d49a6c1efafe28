import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ChunkDecoder } from '@wanmig/codec';
import { ErrorCode, FrameFlag, type Frame } from '@wanmig/protocol';
import type { FrameSink } from '@wanmig/stream';
import { writeFileAtomic } from './atomic-file.writer.js';
import { DeviceStateFrameError } from './errors.js';

/** The device state as held: the blob and its sha256 (hex). */
export interface HeldDeviceState {
  blob: Buffer;
  sha256: string;
}

export interface DeviceStateSinkOptions {
  migrationId: string;
  /** Where the durable copy lives (`device-state.bin`). */
  path: string;
  /** Largest blob accepted. */
  maxBytes: number;
}

const EMPTY = Buffer.alloc(0);

/**
 * Keeps the device state the source sends at stop-and-copy: raw bytes (zstd allowed, never codec
 * records), normally one frame at offset 0. A frame at offset `o` keeps the first `o` bytes held
 * and puts its own after them, so a state too large for one frame arrives as consecutive frames, a
 * state sent again (offset 0) replaces the old one, and frames replayed after a restart give the
 * same blob. A frame starting past the end of what is held is a gap and is refused; an empty frame
 * (End, Barrier) changes nothing.
 *
 * `sync` writes the blob to `device-state.bin` atomically and durably (the receiver saves its
 * watermark only after that); `durable` is the state as of the last sync, the only one a resume
 * may use. Opening reads that file back, so a restarted service holds what it had acknowledged.
 */
export class DeviceStateSink implements FrameSink {
  private blob: Buffer;
  private changed = false;
  private held?: HeldDeviceState;
  private readonly decoder: ChunkDecoder;

  private constructor(
    private readonly options: DeviceStateSinkOptions,
    held: HeldDeviceState | undefined,
  ) {
    this.held = held;
    this.blob = held?.blob ?? EMPTY;
    this.decoder = new ChunkDecoder({ targetSize: options.maxBytes, maxBatchBytes: options.maxBytes });
  }

  static async open(options: DeviceStateSinkOptions): Promise<DeviceStateSink> {
    let held: HeldDeviceState | undefined;
    try {
      const blob = await readFile(options.path);
      held = { blob, sha256: sha256(blob) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    return new DeviceStateSink(options, held);
  }

  /** The device state as of the last successful sync (undefined until one held any). */
  get durable(): HeldDeviceState | undefined {
    return this.held;
  }

  async apply(frame: Frame): Promise<void> {
    const { flags, offset, length, seq } = frame.header;
    const { migrationId, maxBytes } = this.options;
    const refuse = (code: ErrorCode, message: string, cause?: unknown): DeviceStateFrameError =>
      new DeviceStateFrameError(code, `device-state frame ${seq}: ${message}`, { migrationId, seq, cause });
    if (flags & FrameFlag.Records) throw refuse(ErrorCode.FrameBadFlags, 'carries codec records, not raw bytes');
    if (flags & FrameFlag.ZstdStream) throw refuse(ErrorCode.FrameBadFlags, 'takes no zstd-stream frames');
    if (length === 0 && frame.payload.length === 0) return;
    if (offset > this.blob.length) {
      throw refuse(ErrorCode.FrameOutOfRange, `starts at ${offset}, but only ${this.blob.length} bytes are held`);
    }
    if (offset + length > maxBytes) {
      throw refuse(ErrorCode.FrameOutOfRange, `reaches ${offset + length} bytes, more than ${maxBytes}`);
    }
    let body: Buffer;
    try {
      body = await this.decoder.unpack(frame.payload, (flags & FrameFlag.Zstd) !== 0);
    } catch (cause) {
      throw refuse(ErrorCode.RecordCorrupt, 'payload does not decompress', cause);
    }
    if (body.length !== length) {
      throw refuse(ErrorCode.RecordCorrupt, `carries ${body.length} bytes, its header says ${length}`);
    }
    // A copy: the payload is a view of the NATS message.
    this.blob = Buffer.concat([this.blob.subarray(0, offset), body]);
    this.changed = true;
  }

  async sync(): Promise<void> {
    if (!this.changed) return;
    const blob = this.blob;
    this.changed = false;
    try {
      await writeFileAtomic(this.options.path, blob);
    } catch (err) {
      this.changed = true;
      throw err;
    }
    this.held = { blob, sha256: sha256(blob) };
  }
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
