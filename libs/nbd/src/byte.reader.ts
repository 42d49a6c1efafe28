import type { Socket } from 'node:net';
import { NbdConnectionClosedError } from './errors.js';

const EMPTY = Buffer.alloc(0);

/** Default amount of unread bytes a reader holds before it pauses its source. */
export const BYTE_READER_HIGH_WATER = 4 * 1024 * 1024;

/** How a reader stops and restarts its source (a socket) so that unread data stays bounded. */
export interface ReaderFlowControl {
  pause(): void;
  resume(): void;
}

interface Waiter {
  need: number;
  filled: number;
  /** Where the bytes go; absent when skipping. */
  target?: Buffer;
  resolve(buf: Buffer): void;
  reject(err: Error): void;
}

/**
 * Exact-length reads over a stream of chunks, for one sequential consumer.
 *
 * Chunks are queued, not concatenated: a read served by one chunk is a zero-copy view of it; a read
 * that spans chunks, or that must wait, is assembled in one buffer of exactly its length, into which
 * later chunks are copied directly as they arrive. The source is paused while more than `highWater`
 * unread bytes are queued, so a peer cannot make the reader hold unbounded memory: the consumer
 * decides how much it is willing to read (a payload length it has validated) before it asks for it.
 */
export class ByteReader {
  private readonly chunks: Buffer[] = [];
  private head = 0;
  private headOffset = 0;
  private queued = 0;
  private waiter?: Waiter;
  private ended = false;
  private endError?: Error;
  private paused = false;
  private readonly highWater: number;
  private flow?: ReaderFlowControl;

  constructor(options: { highWater?: number; flow?: ReaderFlowControl } = {}) {
    this.highWater = options.highWater ?? BYTE_READER_HIGH_WATER;
    this.flow = options.flow;
  }

  /** Unread bytes held. */
  get buffered(): number {
    return this.queued;
  }

  /** True once the source ended and every queued byte was consumed. */
  get exhausted(): boolean {
    return this.ended && this.queued === 0;
  }

  setFlowControl(flow: ReaderFlowControl): void {
    this.flow = flow;
  }

  /** Feed a chunk from the source. */
  push(chunk: Buffer): void {
    if (this.ended || chunk.length === 0) return;
    const w = this.waiter;
    if (w && this.queued === 0) {
      const take = Math.min(chunk.length, w.need - w.filled);
      if (w.target) chunk.copy(w.target, w.filled, 0, take);
      w.filled += take;
      if (take < chunk.length) this.enqueue(chunk.subarray(take));
      if (w.filled === w.need) this.settle(w);
    } else {
      this.enqueue(chunk);
      if (w) this.feedWaiter(w);
    }
    if (this.queued >= this.highWater && !this.paused && this.flow) {
      this.paused = true;
      this.flow.pause();
    }
  }

  /** The source ended (cleanly, or with `error`). Reads that cannot be served any more reject. */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.endError = error;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w.reject(this.closedError(w.need, w.filled));
    }
  }

  /** Drop everything queued and end. */
  destroy(error?: Error): void {
    this.chunks.length = 0;
    this.head = 0;
    this.headOffset = 0;
    this.queued = 0;
    this.end(error);
  }

  /** `n` bytes if they are already queued, without waiting; otherwise undefined. */
  tryRead(n: number): Buffer | undefined {
    if (this.waiter || this.queued < n) return undefined;
    return n === 0 ? EMPTY : this.take(n);
  }

  /** Exactly `n` bytes; rejects with NbdConnectionClosedError if the source ends first. */
  readExact(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('ByteReader: a read is already pending'));
    if (n === 0) return Promise.resolve(EMPTY);
    if (this.queued >= n) return Promise.resolve(this.take(n));
    if (this.ended) return Promise.reject(this.closedError(n, this.queued));
    const target = Buffer.allocUnsafe(n);
    const filled = this.queued;
    this.copyOut(target, filled);
    return this.wait(n, filled, target);
  }

  /** Discard exactly `n` bytes without holding them; rejects if the source ends first. */
  skip(n: number): Promise<void> {
    if (this.waiter) return Promise.reject(new Error('ByteReader: a read is already pending'));
    if (n === 0) return Promise.resolve();
    if (this.queued >= n) {
      this.discard(n);
      return Promise.resolve();
    }
    if (this.ended) return Promise.reject(this.closedError(n, this.queued));
    const filled = this.queued;
    this.discard(filled);
    return this.wait(n, filled, undefined).then(() => undefined);
  }

  private wait(need: number, filled: number, target: Buffer | undefined): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      this.waiter = { need, filled, target, resolve, reject };
      this.resumeSource();
    });
  }

  private settle(w: Waiter): void {
    this.waiter = undefined;
    w.resolve(w.target ?? EMPTY);
  }

  private feedWaiter(w: Waiter): void {
    const take = Math.min(this.queued, w.need - w.filled);
    if (w.target) this.copyOut(w.target.subarray(w.filled), take);
    else this.discard(take);
    w.filled += take;
    if (w.filled === w.need) this.settle(w);
  }

  private enqueue(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.queued += chunk.length;
  }

  private take(n: number): Buffer {
    const first = this.chunks[this.head];
    const avail = first.length - this.headOffset;
    let out: Buffer;
    if (avail >= n) {
      out = first.subarray(this.headOffset, this.headOffset + n);
      this.advance(n);
    } else {
      out = Buffer.allocUnsafe(n);
      this.copyOut(out, n);
    }
    if (this.paused && this.queued < this.highWater / 2) this.resumeSource();
    return out;
  }

  /** Move `n` queued bytes into `target` (from its start). */
  private copyOut(target: Buffer, n: number): void {
    let done = 0;
    while (done < n) {
      const chunk = this.chunks[this.head];
      const len = Math.min(chunk.length - this.headOffset, n - done);
      chunk.copy(target, done, this.headOffset, this.headOffset + len);
      done += len;
      this.advance(len);
    }
  }

  private discard(n: number): void {
    let left = n;
    while (left > 0) {
      const chunk = this.chunks[this.head];
      const len = Math.min(chunk.length - this.headOffset, left);
      left -= len;
      this.advance(len);
    }
  }

  /** Consume `n` bytes of the head chunk (n never exceeds what it has left). */
  private advance(n: number): void {
    this.queued -= n;
    this.headOffset += n;
    if (this.headOffset === this.chunks[this.head].length) {
      this.headOffset = 0;
      this.head++;
      if (this.head === this.chunks.length) {
        this.chunks.length = 0;
        this.head = 0;
      } else if (this.head >= 1024) {
        this.chunks.splice(0, this.head);
        this.head = 0;
      }
    }
  }

  private resumeSource(): void {
    if (this.paused && this.flow) {
      this.paused = false;
      this.flow.resume();
    }
  }

  private closedError(expected: number, received: number): Error {
    return new NbdConnectionClosedError({ expected, received, cause: this.endError });
  }
}

/** A reader fed by a socket, pausing it while the consumer lags. */
export function readerForSocket(socket: Socket, highWater?: number): ByteReader {
  const reader = new ByteReader({
    highWater,
    flow: { pause: () => socket.pause(), resume: () => socket.resume() },
  });
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  socket.on('end', () => reader.end());
  socket.on('error', (err) => reader.end(err));
  socket.on('close', () => reader.end());
  return reader;
}
