/**
 * Where a decoder applies records: a disk image, a RAM file, a buffer. Calls come one at a time,
 * in record order, each awaited before the next, so a read sees every earlier write.
 *
 * `read` may return a view of the target's own storage; the decoder never modifies it and does not
 * keep it past its next call. `write` must copy `data` if it keeps it: it may be a view into the
 * batch. Without `zero`, zero ranges are written as zero-filled buffers.
 */
export interface ChunkTarget {
  read(offset: number, length: number): Buffer | Promise<Buffer>;
  write(offset: number, data: Buffer): void | Promise<void>;
  zero?(offset: number, length: number): void | Promise<void>;
}

/** A target held in memory (tests, benchmarks, small RAM images). */
export class BufferTarget implements ChunkTarget {
  constructor(readonly buffer: Buffer) {}

  static ofSize(size: number): BufferTarget {
    return new BufferTarget(Buffer.alloc(size));
  }

  get size(): number {
    return this.buffer.length;
  }

  read(offset: number, length: number): Buffer {
    return this.buffer.subarray(offset, offset + length);
  }

  write(offset: number, data: Buffer): void {
    this.buffer.set(data, offset);
  }

  zero(offset: number, length: number): void {
    this.buffer.fill(0, offset, offset + length);
  }
}
