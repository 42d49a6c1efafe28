import { type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { DeliveryQueue } from './delivery.queue.js';
import { LinkScheduler, type QueueWatermarks, type WanLinkSettings, queueWatermarks } from './link.scheduler.js';

/** One TCP connection's traffic in this direction: bytes read from `src` are written to `dst`. */
interface Flow {
  src: Socket;
  dst: Socket;
  /** Why `src` is paused: the shared queue is full, or `dst` has not drained. Resumed when empty. */
  blockedBy: Set<'queue' | 'drain'>;
}

interface Entry {
  flow: Flow;
  /** Data to write, or undefined for the sender's FIN (end `dst` once everything before it was delivered). */
  chunk?: Buffer;
}

/** Timers fire in whole milliseconds; deliver what is due within this slack rather than sleep for it. */
const DELIVERY_SLACK_MS = 0.5;

/**
 * One direction of the emulated WAN, shared by every connection through it (a real link's bandwidth is shared
 * too). Chunks get a due time from the {@link LinkScheduler} on arrival and wait in one FIFO; a single timer,
 * re-armed for the head's due time, delivers every chunk due by then in one go. One timer per direction instead
 * of one per chunk keeps timer overhead and lateness from limiting throughput; lateness only batches deliveries,
 * it never shifts the schedule.
 */
export class WanDirectionChannel {
  /** Bytes accepted into this direction (counted on arrival: the bytes a sender put on the wire). */
  bytes = 0;
  private readonly scheduler: LinkScheduler;
  private readonly queue = new DeliveryQueue<Entry>();
  private queuedBytes = 0;
  private watermarks: QueueWatermarks;
  private readonly pausedForQueue = new Set<Flow>();
  private timer?: NodeJS.Timeout;
  private closed = false;

  constructor(
    settings: WanLinkSettings,
    private readonly marginBytes?: number,
  ) {
    this.scheduler = new LinkScheduler(settings);
    this.watermarks = queueWatermarks(settings, marginBytes);
  }

  get settings(): WanLinkSettings {
    return this.scheduler.settings;
  }

  /** Bytes waiting in this direction (serialisation backlog plus propagation). */
  get queued(): number {
    return this.queuedBytes;
  }

  update(settings: Partial<WanLinkSettings>): void {
    this.scheduler.update(settings);
    this.watermarks = queueWatermarks(this.scheduler.settings, this.marginBytes);
    this.releaseIfBelowLowWater();
  }

  /** Carries `src`'s bytes and FIN to `dst` through this direction. */
  attach(src: Socket, dst: Socket): void {
    const flow: Flow = { src, dst, blockedBy: new Set() };
    src.on('data', (chunk: Buffer) => this.accept(flow, chunk));
    src.on('end', () => this.enqueue({ flow }, 0));
  }

  /** Drops everything queued and forgets the link state (used when the link is cut). */
  clear(): void {
    this.queue.clear();
    this.queuedBytes = 0;
    this.scheduler.reset();
    for (const flow of this.pausedForQueue) unblock(flow, 'queue');
    this.pausedForQueue.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.closed = true;
    this.clear();
  }

  private accept(flow: Flow, chunk: Buffer): void {
    if (this.closed) return;
    this.bytes += chunk.length;
    this.queuedBytes += chunk.length;
    this.enqueue({ flow, chunk }, chunk.length);
    if (this.queuedBytes > this.watermarks.high) {
      // Backpressure: stop reading so the sender's TCP window closes instead of our buffer growing.
      block(flow, 'queue');
      this.pausedForQueue.add(flow);
    }
  }

  private enqueue(entry: Entry, bytes: number): void {
    if (this.closed) return;
    this.queue.push(this.scheduler.schedule(bytes, performance.now()), entry);
    this.pump();
  }

  /** Delivers what is due and arms the timer for the next head. */
  private pump(): void {
    if (this.timer !== undefined) return;
    for (;;) {
      const next = this.queue.nextDueAt;
      if (next === undefined) return;
      const wait = next - performance.now();
      if (wait > DELIVERY_SLACK_MS) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, Math.ceil(wait));
        return;
      }
      for (const entry of this.queue.takeDue(performance.now() + DELIVERY_SLACK_MS)) this.deliver(entry);
      this.releaseIfBelowLowWater();
    }
  }

  private deliver({ flow, chunk }: Entry): void {
    if (chunk) this.queuedBytes -= chunk.length;
    const { dst } = flow;
    if (dst.destroyed || dst.writableEnded) return;
    if (!chunk) {
      dst.end();
      return;
    }
    if (!dst.write(chunk) && !flow.blockedBy.has('drain')) {
      // The receiver is slower than the link: hold the sender until the receiver's socket drains.
      block(flow, 'drain');
      dst.once('drain', () => unblock(flow, 'drain'));
    }
  }

  private releaseIfBelowLowWater(): void {
    if (this.queuedBytes > this.watermarks.low || this.pausedForQueue.size === 0) return;
    for (const flow of this.pausedForQueue) unblock(flow, 'queue');
    this.pausedForQueue.clear();
  }
}

function block(flow: Flow, reason: 'queue' | 'drain'): void {
  if (flow.blockedBy.size === 0) flow.src.pause();
  flow.blockedBy.add(reason);
}

function unblock(flow: Flow, reason: 'queue' | 'drain'): void {
  if (!flow.blockedBy.delete(reason) || flow.blockedBy.size > 0 || flow.src.destroyed) return;
  flow.src.resume();
}
