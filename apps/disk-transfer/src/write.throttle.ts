import type { ThrottleStats } from '@wanmig/protocol';
/**
 * Write throttling (Bradford et al.): when the guest dirties blocks faster than the link can carry
 * them, catch-up never converges. Engaged, the throttle paces write *replies* to a rate below the
 * link's, so a guest that waits for its writes (every real one does) slows to that rate.
 */
export class WriteThrottle {
  private limit: number | null = null;
  private nextFreeAt = 0;
  readonly stats: ThrottleStats = {
    engaged: false,
    limitBytesPerSecond: null,
    writesDelayed: 0,
    totalDelayMs: 0,
    guestBytes: 0,
    engagedAtMs: null,
  };

  /** Pace guest writes to `bytesPerSecond` from now on (lowering or raising an engaged limit). */
  engage(bytesPerSecond: number): void {
    this.limit = Math.max(1, bytesPerSecond);
    this.stats.engaged = true;
    this.stats.limitBytesPerSecond = this.limit;
    this.stats.engagedAtMs ??= Date.now();
  }

  release(): void {
    this.limit = null;
  }

  get limitBytesPerSecond(): number | null {
    return this.limit;
  }

  /** Awaited before a write's reply goes out. */
  async beforeReply(length: number): Promise<void> {
    this.stats.guestBytes += length;
    if (this.limit === null) return;
    const now = performance.now();
    const start = Math.max(now, this.nextFreeAt);
    this.nextFreeAt = start + (length / this.limit) * 1000;
    const delay = this.nextFreeAt - now;
    // Small debts are not worth a timer: pace only once a write would finish early by > 1 ms.
    if (delay < 1) return;
    this.stats.writesDelayed++;
    this.stats.totalDelayMs += delay;
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
