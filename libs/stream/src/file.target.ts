import { closeSync, fdatasync, fstatSync, ftruncateSync, openSync, readSync, writevSync } from 'node:fs';
import { promisify } from 'node:util';
import type { ChunkTarget } from '@wanmig/codec';

const fdatasyncAsync = promisify(fdatasync);
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(1024 * 1024);

/**
 * A raw image file as a codec target. Contiguous page writes are gathered and written with one
 * writev: a frame of 4 KiB records costs one syscall, not sixty-four. Zero ranges beyond the highest
 * byte ever written are left alone: the image was created sparse, so they read as zeros already.
 */
export class FileChunkTarget implements ChunkTarget {
  private readonly fd: number;
  readonly size: number;
  private pendingOffset = 0;
  private pendingLength = 0;
  private pending: Buffer[] = [];
  private highWater: number;

  /** Opens (or creates, sparse, at `size`) the image. A fresh image has nothing written yet. */
  constructor(
    readonly path: string,
    size: number,
    options: { create?: boolean } = {},
  ) {
    this.fd = openSync(path, options.create ? 'w+' : 'r+');
    if (options.create) ftruncateSync(this.fd, size);
    const actual = fstatSync(this.fd).size;
    if (actual < size) ftruncateSync(this.fd, size);
    this.size = size;
    this.highWater = options.create ? 0 : size;
  }

  read(offset: number, length: number): Buffer {
    this.flushPending();
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, offset + done);
      if (n === 0) {
        out.fill(0, done);
        break;
      }
      done += n;
    }
    return out;
  }

  /** Keeps a view of `data` until the next flush: callers flush before the batch buffer is reused. */
  write(offset: number, data: Buffer): void {
    if (this.pendingLength > 0 && offset === this.pendingOffset + this.pendingLength) {
      this.pending.push(data);
      this.pendingLength += data.length;
    } else {
      this.flushPending();
      this.pendingOffset = offset;
      this.pending = [data];
      this.pendingLength = data.length;
    }
    if (this.pendingLength >= MAX_PENDING_BYTES) this.flushPending();
  }

  zero(offset: number, length: number): void {
    const end = Math.min(offset + length, this.highWater, this.size);
    for (let at = offset; at < end; at += ZEROS.length)
      this.write(at, ZEROS.subarray(0, Math.min(ZEROS.length, end - at)));
  }

  flushPending(): void {
    if (this.pendingLength === 0) return;
    let position = this.pendingOffset;
    let chunks = this.pending;
    while (chunks.length > 0) {
      let n = writevSync(this.fd, chunks.slice(0, 1024), position);
      position += n;
      // Short writes are rare on regular files; skip what was written and go on.
      while (n > 0 && chunks.length > 0) {
        if (n >= chunks[0].length) {
          n -= chunks[0].length;
          chunks = chunks.slice(1);
        } else {
          chunks = [chunks[0].subarray(n), ...chunks.slice(1)];
          n = 0;
        }
      }
    }
    this.highWater = Math.max(this.highWater, position);
    this.pending = [];
    this.pendingLength = 0;
  }

  async sync(): Promise<void> {
    this.flushPending();
    await fdatasyncAsync(this.fd);
  }

  close(): void {
    this.flushPending();
    closeSync(this.fd);
  }
}
