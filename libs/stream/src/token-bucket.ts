/** Bytes per second that means "no limit". */
export const UNLIMITED = Number.POSITIVE_INFINITY;

/**
 * One bandwidth budget shared by every stream of a migration. Takers may drive the bucket into
 * debt (a frame is sent whole); later takers wait until the debt is repaid, in FIFO order, so
 * several streams share the rate fairly and the long-run rate never exceeds the limit.
 */
export class TokenBucket {
  private tokens: number;
  private last = performance.now();
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private rate: number,
    private readonly burst = Math.max(256 * 1024, Number.isFinite(rate) ? rate / 20 : 0),
  ) {
    this.tokens = this.burst;
  }

  get bytesPerSecond(): number {
    return this.rate;
  }

  /** Change the rate at run time (dynamic rate limiting); waiting takers see it on their next check. */
  setRate(bytesPerSecond: number): void {
    this.refill();
    this.rate = bytesPerSecond;
  }

  /** Resolves once `bytes` may be sent. */
  take(bytes: number): Promise<void> {
    if (!Number.isFinite(this.rate)) return Promise.resolve();
    const turn = this.tail.then(() => this.waitFor(bytes));
    this.tail = turn;
    return turn;
  }

  private async waitFor(bytes: number): Promise<void> {
    for (;;) {
      this.refill();
      if (this.tokens >= 0 || !Number.isFinite(this.rate)) break;
      await sleep(Math.max(1, Math.ceil((-this.tokens / this.rate) * 1000)));
    }
    this.tokens -= bytes;
  }

  private refill(): void {
    const now = performance.now();
    if (Number.isFinite(this.rate)) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    }
    this.last = now;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
