import { AckType, decodeAck, encodeAck, encodeFrame, ErrorCode, Subjects, type AckMessage } from '@wanmig/protocol';
import type { Subscription } from '@nats-io/nats-core';
import { StreamClosedError, StreamError } from './errors.js';
import { DEFAULT_GIVE_UP_MS, DEFAULT_MIN_RTO_MS, DEFAULT_WINDOW_BYTES, type SenderOptions } from './stream.options.js';
import type { ReceiverPosition, Watermark } from './watermark.store.js';

const YIELD_EVERY_MS = 5;

interface InFlight {
  seq: number;
  wire: Buffer;
  sentAt: number;
  resent: boolean;
}

export interface SenderStats {
  framesSent: number;
  bytesSent: number;
  resentFrames: number;
  resentBytes: number;
  probes: number;
  srttMs: number;
}

/**
 * Sends frames of one stream with a window of unacknowledged bytes. Frames leave in sequence
 * order; the receiver acknowledges cumulatively once data is durable. Loss is repaired go-back-N
 * style, but never blindly: after a silence the sender first asks the receiver for its persisted
 * watermark and re-sends only from there, so a cut link costs at most the frames in flight.
 */
export class StreamSender {
  private readonly opts: Required<Omit<SenderOptions, 'limiter'>> & Pick<SenderOptions, 'limiter'>;
  private readonly inflight: InFlight[] = [];
  private inflightBytes = 0;
  private nextSeq = 0;
  private ackedSeq = 0;
  private lastProgress = performance.now();
  private srtt = 0;
  private roomWaiters: Array<() => void> = [];
  private ackSub?: Subscription;
  private timer?: NodeJS.Timeout;
  private probing = false;
  private pumping = false;
  private sendSeq = 0;
  private lastYield = performance.now();
  private failure?: Error;
  private closed = false;
  readonly stats: SenderStats = { framesSent: 0, bytesSent: 0, resentFrames: 0, resentBytes: 0, probes: 0, srttMs: 0 };

  constructor(options: SenderOptions) {
    this.opts = {
      windowBytes: DEFAULT_WINDOW_BYTES,
      minRtoMs: DEFAULT_MIN_RTO_MS,
      giveUpAfterMs: DEFAULT_GIVE_UP_MS,
      ...options,
    };
  }

  /**
   * Subscribes to acks and asks the receiver where it stands, waiting for it as long as the
   * give-up time allows. Returns the receiver's watermark: a resumed sender continues from
   * `cursor` (its source position) and numbers its next frame `nextSeq`.
   */
  async open(): Promise<Watermark> {
    const { nc, migrationId, streamId } = this.opts;
    this.ackSub = nc.subscribe(Subjects.ack(migrationId, streamId), {
      callback: (err, msg) => {
        if (err) return;
        let ack: AckMessage;
        try {
          ack = decodeAck(msg.data);
        } catch {
          return;
        }
        this.onAck(ack);
      },
    });
    let position = await this.queryWatermark(this.opts.giveUpAfterMs);
    // Frames of an earlier sender may have arrived without being durable yet: their numbers are
    // taken. Wait for that tail to settle, then number new frames after it, never inside it.
    for (let i = 0; i < 50 && position.received > position.nextSeq; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      position = await this.queryWatermark(this.opts.giveUpAfterMs);
    }
    const nextSeq = Math.max(position.nextSeq, position.received);
    const mark: Watermark = { nextSeq, cursor: position.cursor };
    this.nextSeq = mark.nextSeq;
    this.ackedSeq = mark.nextSeq;
    this.sendSeq = mark.nextSeq;
    this.timer = setInterval(() => this.tick(), 50);
    this.timer.unref();
    return mark;
  }

  get windowBytes(): number {
    return this.opts.windowBytes;
  }

  /** Bytes sent but not yet acknowledged. */
  get bytesInFlight(): number {
    return this.inflightBytes;
  }

  /** Sequence number the next frame will carry. */
  get sequence(): number {
    return this.nextSeq;
  }

  /**
   * Queues one frame once the window has room; it leaves as soon as the bandwidth budget allows.
   * `length` is what the frame covers once decoded, `offset` where it lands. Call it from one
   * producer at a time: frames are numbered in call order.
   */
  async send(frame: { offset: number; length: number; flags: number; payload: Uint8Array }): Promise<void> {
    this.check();
    const { migrationId, streamId, kind } = this.opts;
    const seq = this.nextSeq++;
    const { offset, length, flags, payload } = frame;
    const wire = encodeFrame({ kind, flags, migrationId, streamId, seq, offset, length }, payload);
    while (this.inflightBytes > 0 && this.inflightBytes + wire.length > this.opts.windowBytes) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
      this.check();
    }
    if (this.inflight.length === 0) this.lastProgress = performance.now();
    this.inflight.push({ seq, wire, sentAt: 0, resent: false });
    this.inflightBytes += wire.length;
    this.pump();
    // A producer whose sends never wait (window open) would starve the event loop: acks and
    // socket writes would sit unprocessed and a healthy link would look silent. Let I/O run.
    if (performance.now() - this.lastYield > YIELD_EVERY_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.lastYield = performance.now();
    }
  }

  /** Resolves once every frame sent so far is acknowledged as durable. */
  async drain(): Promise<void> {
    while (this.inflight.length > 0) {
      this.check();
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
    this.check();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.ackSub?.unsubscribe();
    this.wakeAll();
  }

  /**
   * The one place frames leave, strictly in sequence order, each paying the bandwidth budget
   * (re-sends too: recovery never exceeds the migration's limit).
   */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    void (async () => {
      try {
        for (;;) {
          if (this.closed) break;
          const base = this.inflight.length > 0 ? this.inflight[0].seq : this.sendSeq;
          if (this.sendSeq < base) this.sendSeq = base;
          const entry = this.inflight[this.sendSeq - base];
          if (!entry) break;
          await this.opts.limiter?.take(entry.wire.length);
          // An ack or a rewind may have moved things while we waited for tokens.
          if (this.inflight[this.sendSeq - (this.inflight[0]?.seq ?? this.sendSeq)] !== entry) continue;
          this.transmit(entry);
          this.sendSeq = entry.seq + 1;
        }
      } catch (err) {
        this.fail(err);
      } finally {
        this.pumping = false;
      }
    })();
  }

  private transmit(entry: InFlight): void {
    const { nc, migrationId, streamId } = this.opts;
    nc.publish(Subjects.data(migrationId, streamId), entry.wire);
    this.stats.framesSent++;
    this.stats.bytesSent += entry.wire.length;
    if (entry.sentAt > 0) {
      entry.resent = true;
      this.stats.resentFrames++;
      this.stats.resentBytes += entry.wire.length;
    }
    entry.sentAt = performance.now();
  }

  private onAck(ack: AckMessage): void {
    // A Nak's nextSeq is where the receiver wants data from, not what it holds durably.
    if (ack.type === AckType.Ack) this.release(ack.nextSeq);
    else if (ack.type === AckType.Nak) this.onNak(ack.nextSeq);
    else if (ack.type === AckType.Failed) this.fail(this.receiverFailed());
  }

  /** Drops every frame below `nextSeq`: the receiver holds it durably. */
  private release(nextSeq: number): void {
    if (nextSeq <= this.ackedSeq) return;
    const now = performance.now();
    while (this.inflight.length > 0 && this.inflight[0].seq < nextSeq) {
      const done = this.inflight.shift()!;
      this.inflightBytes -= done.wire.length;
      // Karn: only frames sent once give an honest round-trip sample.
      if (!done.resent && done.sentAt > 0 && done.seq === nextSeq - 1) {
        const sample = now - done.sentAt;
        this.srtt = this.srtt === 0 ? sample : this.srtt * 0.875 + sample * 0.125;
        this.stats.srttMs = Math.round(this.srtt);
      }
    }
    this.ackedSeq = nextSeq;
    this.lastProgress = now;
    this.wakeAll();
  }

  /** The receiver saw a gap or a bad frame: re-send from where it stands. */
  private onNak(fromSeq: number): void {
    // The nak left the receiver about half a round trip ago.
    this.resendFrom(fromSeq, performance.now() - this.srtt / 2);
  }

  /**
   * Rewinds the pump to `fromSeq`: every frame from there on leaves again, in order. `evidenceAt`
   * is when the receiver was known to lack the frame; if the frame has been sent again since, that
   * copy is still on its way (naks behind one gap and a probe's answer often ask for the same
   * frames), and rewinding again would send everything twice.
   */
  private resendFrom(fromSeq: number, evidenceAt: number): void {
    if (fromSeq >= this.sendSeq) return;
    const entry = this.inflight[fromSeq - (this.inflight[0]?.seq ?? fromSeq)];
    if (!entry || entry.sentAt > evidenceAt) return;
    this.sendSeq = fromSeq;
    this.pump();
  }

  private tick(): void {
    if (this.closed || this.probing || this.inflight.length === 0) return;
    const rto = Math.max(this.opts.minRtoMs, this.srtt * 4);
    if (performance.now() - this.lastProgress < rto) return;
    this.probing = true;
    this.stats.probes++;
    this.queryWatermark(this.opts.giveUpAfterMs)
      .then((position) => {
        this.release(position.nextSeq);
        // The probe travelled behind every frame sent before it, on the same ordered path: what the
        // receiver has not received by then was lost, and go-back-N resends from there.
        // Frames (re-)sent after the answered request left are not judged by its answer.
        this.resendFrom(Math.max(position.received, this.ackedSeq), position.askedAt);
        this.lastProgress = performance.now();
      })
      .catch((err: unknown) => this.fail(err))
      .finally(() => {
        this.probing = false;
      });
  }

  /** Asks the receiver for its watermark, retrying with backoff while the link is down. */
  private async queryWatermark(giveUpMs: number): Promise<ReceiverPosition & { askedAt: number }> {
    const { nc, migrationId, streamId } = this.opts;
    const deadline = performance.now() + giveUpMs;
    let wait = Math.max(250, this.srtt * 2);
    for (;;) {
      if (this.closed) throw new StreamClosedError({ migrationId, streamId });
      const askedAt = performance.now();
      let ack: AckMessage;
      try {
        const reply = await nc.request(
          Subjects.streamStatus(migrationId, streamId),
          encodeAck({ type: AckType.Status, nextSeq: 0, cursor: 0 }),
          { timeout: Math.max(1000, this.srtt * 4) },
        );
        ack = decodeAck(reply.data);
      } catch (err) {
        if (performance.now() > deadline) {
          throw new StreamError(ErrorCode.StreamTimeout, `receiver of ${migrationId}/${streamId} did not answer`, {
            migrationId,
            streamId,
            cause: err,
          });
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
        wait = Math.min(wait * 2, 2000);
        continue;
      }
      // An answer that the stream failed is final: retrying cannot change it.
      if (ack.type === AckType.Failed) throw this.receiverFailed();
      return { nextSeq: ack.nextSeq, cursor: ack.cursor, received: ack.received ?? ack.nextSeq, askedAt };
    }
  }

  private receiverFailed(): StreamError {
    const { migrationId, streamId } = this.opts;
    return new StreamError(
      ErrorCode.RecordCorrupt,
      `the receiver of ${migrationId}/${streamId} gave up on the stream`,
      {
        migrationId,
        streamId,
      },
    );
  }

  private fail(err: unknown): void {
    this.failure = err instanceof Error ? err : new Error(String(err));
    this.close();
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new StreamClosedError({ migrationId: this.opts.migrationId, streamId: this.opts.streamId });
  }

  private wakeAll(): void {
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const wake of waiters) wake();
  }
}
