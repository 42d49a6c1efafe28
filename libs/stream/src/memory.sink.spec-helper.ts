import type { Frame } from '@wanmig/protocol';
import type { FrameSink } from './frame.sink.js';

/** Concatenates raw frame payloads at their offsets; durable on sync (for specs). */
export class MemorySink implements FrameSink {
  applied = new Map<number, Buffer>();
  durableBytes = 0;
  failNext = 0;

  apply(frame: Frame): Promise<void> {
    if (this.failNext > 0) {
      this.failNext--;
      return Promise.reject(new Error('injected apply failure'));
    }
    this.applied.set(frame.header.offset, Buffer.from(frame.payload));
    return Promise.resolve();
  }

  sync(): Promise<void> {
    this.durableBytes = [...this.applied.values()].reduce((n, b) => n + b.length, 0);
    return Promise.resolve();
  }

  contents(): Buffer {
    const offsets = [...this.applied.keys()].sort((a, b) => a - b);
    return Buffer.concat(offsets.map((o) => this.applied.get(o)!));
  }
}
