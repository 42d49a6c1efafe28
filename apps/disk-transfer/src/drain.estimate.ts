/** Engaged throttle lets the guest write at this fraction of what the link drains. */
export const THROTTLE_SHARE = 0.5;
/** A round that does not shrink the dirty set by this fraction is "not converging". */
export const SHRINK_NEEDED = 0.9;
/**
 * A long round measures the link's rate only when it carried enough for the link to be what held it: this long's
 * worth at the rate believed, or this many bytes (a rate believed far too high is corrected all the same).
 */
const RATE_SAMPLE_SECONDS = 1;
const RATE_SAMPLE_BYTES = 1024 * 1024;

/**
 * What the disk's dirty blocks cost to send: the link's rate in frame bytes per second, the frame
 * bytes each disk byte costs (the guest's recent writes may compress far worse than the bulk did),
 * and one round trip. Catch-up and holding both learn it from their rounds and use it to decide
 * when to stop and how hard to throttle the guest.
 */
export class DrainEstimate {
  constructor(
    private wireRate: number,
    private wirePerRaw: number,
    readonly rttMs: number,
  ) {}

  /** From the bulk pass: the configured link rate or the rate measured, and the bulk's ratio. */
  static afterBulk(o: {
    linkBytesPerSecond: number | undefined;
    wireBytes: number;
    bulkSeconds: number;
    rawBytes: number;
    encodedBytes: number;
    rttMs: number;
  }): DrainEstimate {
    const rate = o.linkBytesPerSecond ?? o.wireBytes / Math.max(o.bulkSeconds, 0.001);
    const perRaw = o.rawBytes > 0 ? Math.max(0.05, o.encodedBytes / o.rawBytes) : 1;
    return new DrainEstimate(rate, perRaw, o.rttMs);
  }

  /** The budget changed (the memory took most of it): estimates follow at once. */
  setWireRate(bytesPerSecond: number): void {
    this.wireRate = bytesPerSecond;
  }

  /** Milliseconds to send `dirtyBytes` and hear that they arrived. */
  drainMs(dirtyBytes: number): number {
    return (dirtyBytes * this.wirePerRaw * 1000) / this.wireRate + this.rttMs;
  }

  /** A finished round's figures: its own ratio, and its rate when it lasted long enough to measure. */
  learn(round: { rawBytes: number; wireBytes: number; seconds: number }): void {
    if (round.rawBytes > 0) this.wirePerRaw = Math.max(0.05, round.wireBytes / round.rawBytes);
    // The budget may be more than the link really carries: a long round with enough to carry tells. A long round
    // that carried little only waited (behind the memory's stream on the same link, say): its bytes over its
    // seconds is no rate, and taken for one it would throttle the guest to a crawl.
    if (round.seconds > 1 && round.wireBytes >= Math.min(this.wireRate * RATE_SAMPLE_SECONDS, RATE_SAMPLE_BYTES))
      this.wireRate = Math.min(this.wireRate, round.wireBytes / round.seconds) || this.wireRate;
  }

  /** The guest write rate to allow next: a share of what the link drains, then half the current limit. */
  tighterLimit(current: number | null): number {
    return current === null ? (THROTTLE_SHARE * this.wireRate) / this.wirePerRaw : current / 2;
  }
}
