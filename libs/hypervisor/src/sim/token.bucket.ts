import { BASE_TICK_MS, MAX_THROTTLE_PERCENT } from './sim.constants.js';

/** Tokens never pile up beyond this many seconds of rate: a late tick catches up, a long stall does not burst. */
export const DEFAULT_BURST_SECONDS = 0.2;

/**
 * Paces one kind of work (bytes of RAM, key-value updates, disk bytes) per tick. Each tick adds
 * rate × elapsed time; work is done while the bucket is positive and its cost taken afterwards,
 * so it may dip below zero by one item and pays that back from later ticks: the long-run rate is
 * exact whatever the item size, and no item is ever split.
 */
export class TokenBucket {
  private last: number | undefined;

  constructor(
    private rate: number,
    public tokens = 0,
    private readonly burstSeconds = DEFAULT_BURST_SECONDS,
  ) {}

  get ratePerSecond(): number {
    return this.rate;
  }

  setRate(rate: number): void {
    this.rate = Math.max(0, rate);
    this.tokens = Math.min(this.tokens, this.burst);
  }

  get burst(): number {
    return this.rate * this.burstSeconds;
  }

  /** Adds what the time since the last refill earned (nothing on the first call). */
  refill(nowMs: number): void {
    if (this.last !== undefined && nowMs > this.last) {
      this.tokens = Math.min(this.tokens + (this.rate * (nowMs - this.last)) / 1000, this.burst);
    }
    this.last = nowMs;
  }

  /** Forgets the time that passed (paused guest, migration): the next refill counts from `nowMs`. */
  restart(nowMs: number): void {
    this.last = nowMs;
  }

  /** True when there is credit for one more item; call `spend` with its cost after doing it. */
  get available(): boolean {
    return this.rate > 0 && this.tokens > 0;
  }

  spend(cost: number): void {
    this.tokens -= cost;
  }
}

/** A rate slowed by auto-converge: the guest keeps (100 - percent) % of it. */
export function throttledRate(rate: number, percent: number): number {
  return (rate * (100 - clampThrottle(percent))) / 100;
}

/** The main loop's tick interval under a throttle: 1 ms at 0 %, 10 ms at 90 %, 100 ms at 99 %. */
export function tickIntervalMs(percent: number): number {
  return (BASE_TICK_MS * 100) / (100 - clampThrottle(percent));
}

export function clampThrottle(percent: number): number {
  return Math.min(MAX_THROTTLE_PERCENT, Math.max(0, Math.round(percent)));
}
