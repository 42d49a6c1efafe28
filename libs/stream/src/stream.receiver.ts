import {
  AckType,
  decodeAck,
  decodeFrame,
  encodeAck,
  ErrorCode,
  FrameError,
  FrameFlag,
  Subjects,
  type Frame,
} from '@wanmig/protocol';
import type { Msg, Subscription } from '@nats-io/nats-core';
import { StreamError } from './errors.js';
import { isFinalApplyError, type FrameSink } from './frame.sink.js';
import {
  DEFAULT_ACK_BYTES,
  DEFAULT_ACK_INTERVAL_MS,
  DEFAULT_MAX_APPLY_FAILURES,
  type StreamAddress,
} from './stream.options.js';
import { MemoryWatermarkStore, type Watermark, type WatermarkStore } from './watermark.store.js';

export interface ReceiverOptions extends StreamAddress {
  sink: FrameSink;
  store?: WatermarkStore;
  /** Make data durable and acknowledge at least this often while frames arrive. */
  ackIntervalMs?: number;
  /** ... or after this many applied bytes, whichever comes first. */
  ackBytes?: number;
  /** A frame that fails to apply this many times in a row fails the stream. */
  maxApplyFailures?: number;
}

export interface ReceiverStats {
  framesApplied: number;
  bytesApplied: number;
  duplicates: number;
  outOfOrder: number;
  rejected: Partial<Record<string, number>>;
  naks: number;
  syncs: number;
}

/**
 * Receives one stream: verifies every frame, applies them in order through the sink, makes them
 * durable, persists the watermark, then acknowledges cumulatively. A bad or out-of-order frame is
 * dropped, counted and re-requested; nothing unverified reaches the sink.
 */
export class StreamReceiver {
  private readonly sink: FrameSink;
  private readonly store: WatermarkStore;
  private readonly ackIntervalMs: number;
  private readonly ackBytes: number;
  private readonly maxApplyFailures: number;
  /** Next sequence accepted into the apply queue. */
  private expectedSeq = 0;
  /** Next sequence not yet applied / not yet durable. */
  private appliedSeq = 0;
  private durable: Watermark = { nextSeq: 0, cursor: 0 };
  private cursor = 0;
  private queue: Frame[] = [];
  private applying = false;
  private unsyncedBytes = 0;
  private syncTimer?: NodeJS.Timeout;
  private syncing?: Promise<void>;
  private failures = 0;
  private lastNak = { seq: -1, at: 0 };
  private subs: Subscription[] = [];
  private ended = false;
  /** The End frame is durable (not only applied). */
  private endDurable = false;
  private endWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private failure?: Error;
  readonly stats: ReceiverStats = {
    framesApplied: 0,
    bytesApplied: 0,
    duplicates: 0,
    outOfOrder: 0,
    rejected: {},
    naks: 0,
    syncs: 0,
  };

  constructor(private readonly opts: ReceiverOptions) {
    this.sink = opts.sink;
    this.store = opts.store ?? new MemoryWatermarkStore();
    this.ackIntervalMs = opts.ackIntervalMs ?? DEFAULT_ACK_INTERVAL_MS;
    this.ackBytes = opts.ackBytes ?? DEFAULT_ACK_BYTES;
    this.maxApplyFailures = opts.maxApplyFailures ?? DEFAULT_MAX_APPLY_FAILURES;
  }

  /** Loads the persisted watermark (resume) and starts listening. */
  async start(): Promise<Watermark> {
    const mark = (await this.store.load()) ?? { nextSeq: 0, cursor: 0 };
    this.durable = { ...mark };
    this.expectedSeq = this.appliedSeq = mark.nextSeq;
    this.cursor = mark.cursor;
    const { nc, migrationId, streamId } = this.opts;
    this.subs.push(
      nc.subscribe(Subjects.data(migrationId, streamId), {
        callback: (err, msg) => {
          if (!err) this.onFrame(msg);
        },
      }),
      nc.subscribe(Subjects.streamStatus(migrationId, streamId), {
        callback: (err, msg) => {
          if (!err) this.onStatus(msg);
        },
      }),
    );
    await nc.flush();
    return mark;
  }

  /** The durable watermark. */
  get watermark(): Watermark {
    return { ...this.durable };
  }

  /** Resolves when a frame flagged End is durable; rejects if the stream fails. */
  finished(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.endDurable) return Promise.resolve();
    return new Promise((resolve, reject) => this.endWaiters.push({ resolve, reject }));
  }

  async stop(): Promise<void> {
    for (const sub of this.subs) sub.unsubscribe();
    this.subs = [];
    if (this.syncTimer) clearTimeout(this.syncTimer);
    await this.syncing?.catch(() => undefined);
  }

  private onFrame(msg: Msg): void {
    let frame: Frame;
    try {
      frame = decodeFrame(msg.data);
      if (frame.header.migrationId !== this.opts.migrationId || frame.header.streamId !== this.opts.streamId) {
        throw new FrameError(ErrorCode.FrameBadKind, 'frame addressed to another stream');
      }
    } catch (err) {
      this.count(err);
      this.nak();
      return;
    }
    const seq = frame.header.seq;
    if (seq < this.expectedSeq) {
      this.stats.duplicates++;
      // The sender may have missed our ack: repeat it (cheap, cumulative).
      if (seq < this.durable.nextSeq) this.sendAck(AckType.Ack);
      return;
    }
    if (seq > this.expectedSeq) {
      this.stats.outOfOrder++;
      this.nak();
      return;
    }
    this.expectedSeq++;
    this.queue.push(frame);
    void this.applyQueued();
  }

  private async applyQueued(): Promise<void> {
    if (this.applying) return;
    this.applying = true;
    try {
      while (this.queue.length > 0) {
        const frame = this.queue.shift()!;
        try {
          await this.sink.apply(frame);
        } catch (err) {
          this.onApplyFailure(frame, err);
          return;
        }
        this.failures = 0;
        this.appliedSeq = frame.header.seq + 1;
        // An empty frame (End, Barrier) moves nothing: keep the cursor where the data left it.
        if (frame.header.length > 0) this.cursor = frame.header.offset + frame.header.length;
        this.stats.framesApplied++;
        this.stats.bytesApplied += frame.header.length;
        this.unsyncedBytes += frame.header.length;
        const flags = frame.header.flags;
        if (flags & FrameFlag.End) this.ended = true;
        if (flags & (FrameFlag.Barrier | FrameFlag.End) || this.unsyncedBytes >= this.ackBytes) this.syncSoon(0);
        else this.syncSoon(this.ackIntervalMs);
      }
    } finally {
      this.applying = false;
    }
  }

  /** The frame verified but could not be applied (e.g. a reference to data we do not hold). */
  private onApplyFailure(frame: Frame, err: unknown): void {
    this.count(err);
    this.queue = [];
    if (isFinalApplyError(err)) {
      this.fail(err);
      return;
    }
    this.expectedSeq = frame.header.seq;
    if (++this.failures >= this.maxApplyFailures) {
      const { migrationId, streamId } = this.opts;
      this.fail(
        new StreamError(ErrorCode.RecordCorrupt, `frame ${frame.header.seq} failed to apply ${this.failures} times`, {
          migrationId,
          streamId,
          cause: err,
        }),
      );
      return;
    }
    this.nak(true);
  }

  private syncSoon(delayMs: number): void {
    if (delayMs === 0) {
      if (this.syncTimer) clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
      void this.sync();
    } else if (!this.syncTimer) {
      this.syncTimer = setTimeout(() => {
        this.syncTimer = undefined;
        void this.sync();
      }, delayMs);
    }
  }

  /** fsync the sink, persist the watermark, then acknowledge: in that order, always. */
  private async sync(): Promise<void> {
    if (this.syncing) {
      // The sync in flight reports its own failure; this waiter only follows up.
      await this.syncing.catch(() => undefined);
      if (!this.failure && this.appliedSeq > this.durable.nextSeq) return this.sync();
      return;
    }
    if (this.appliedSeq <= this.durable.nextSeq) return;
    const mark = { nextSeq: this.appliedSeq, cursor: this.cursor };
    const ended = this.ended;
    this.unsyncedBytes = 0;
    this.syncing = (async () => {
      await this.sink.sync();
      await this.store.save(mark);
      this.durable = mark;
      this.stats.syncs++;
      this.sendAck(AckType.Ack);
      if (ended) {
        this.endDurable = true;
        for (const waiter of this.endWaiters.splice(0)) waiter.resolve();
      }
    })();
    try {
      await this.syncing;
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.syncing = undefined;
    }
  }

  private onStatus(msg: Msg): void {
    try {
      decodeAck(msg.data);
    } catch {
      return;
    }
    // nextSeq is only what is durable (the sender may discard below it); `received` tells the
    // sender which frames arrived, so after a silence it re-sends only what was really lost.
    const type = this.failure ? AckType.Failed : AckType.Status;
    msg.respond(encodeAck({ type, ...this.durable, received: this.expectedSeq }));
  }

  private nak(force = false): void {
    const now = performance.now();
    if (!force && this.lastNak.seq === this.expectedSeq && now - this.lastNak.at < 100) return;
    this.lastNak = { seq: this.expectedSeq, at: now };
    this.stats.naks++;
    this.opts.nc.publish(
      Subjects.ack(this.opts.migrationId, this.opts.streamId),
      encodeAck({ type: AckType.Nak, nextSeq: this.expectedSeq, cursor: this.durable.cursor }),
    );
  }

  private sendAck(type: AckType): void {
    this.opts.nc.publish(
      Subjects.ack(this.opts.migrationId, this.opts.streamId),
      encodeAck({ type, nextSeq: this.durable.nextSeq, cursor: this.durable.cursor }),
    );
  }

  private count(err: unknown): void {
    const code = err instanceof FrameError || err instanceof StreamError ? err.code : ErrorCode.Internal;
    const key = (err as { code?: string }).code ?? code;
    this.stats.rejected[key] = (this.stats.rejected[key] ?? 0) + 1;
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    // Tell the sender at once, or it would keep re-sending into a stream that no longer applies.
    this.sendAck(AckType.Failed);
    for (const waiter of this.endWaiters.splice(0)) waiter.reject(err);
  }
}
