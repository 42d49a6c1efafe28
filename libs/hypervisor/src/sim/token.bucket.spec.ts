import { describe, expect, it } from 'vitest';
import { DEFAULT_BURST_SECONDS, TokenBucket, clampThrottle, throttledRate, tickIntervalMs } from './token.bucket.js';

/** Runs the bucket with items of `cost` over `seconds` of ticks of `tickMs`; returns units spent. */
function pace(bucket: TokenBucket, cost: number, seconds: number, tickMs: number, jitter = 0): number {
  let spent = 0;
  let now = 0;
  bucket.refill(now);
  while (now < seconds * 1000) {
    now += tickMs + jitter * ((Math.floor(now) * 7919) % 3);
    bucket.refill(now);
    while (bucket.available) {
      bucket.spend(cost);
      spent += cost;
    }
  }
  return spent;
}

describe('token bucket pacing', () => {
  it('holds the rate whatever the item size and tick length', () => {
    for (const [cost, tick] of [
      [4096, 1],
      [65536, 1],
      [4096, 10],
      [1, 1.3],
    ]) {
      const rate = cost === 1 ? 200 : 8e6;
      const spent = pace(new TokenBucket(rate), cost, 5, tick);
      expect(spent / 5 / rate, `${cost} every ${tick} ms`).toBeGreaterThan(0.97);
      expect(spent / 5 / rate).toBeLessThan(1.03);
    }
  });

  it('keeps the rate with irregular ticks (late timers catch up within the burst)', () => {
    const spent = pace(new TokenBucket(48e6), 4096, 3, 1, 4);
    expect(spent / 3 / 48e6).toBeGreaterThan(0.97);
  });

  it('does not burst after a stall longer than the burst window', () => {
    const bucket = new TokenBucket(1e6);
    bucket.refill(0);
    bucket.refill(10_000);
    expect(bucket.tokens).toBeCloseTo(1e6 * DEFAULT_BURST_SECONDS);
  });

  it('earns nothing for time that passed while restarted (paused)', () => {
    const bucket = new TokenBucket(1e6);
    bucket.refill(0);
    bucket.restart(5000);
    bucket.refill(5001);
    expect(bucket.tokens).toBeCloseTo(1000);
  });

  it('does no work at rate 0', () => {
    expect(pace(new TokenBucket(0), 1, 1, 1)).toBe(0);
  });

  it('scales rates and the tick by the throttle', () => {
    expect(throttledRate(8e6, 0)).toBe(8e6);
    expect(throttledRate(8e6, 90)).toBeCloseTo(8e5);
    expect(throttledRate(8e6, 150)).toBeCloseTo(8e4);
    expect(tickIntervalMs(0)).toBe(1);
    expect(tickIntervalMs(90)).toBeCloseTo(10);
    expect(tickIntervalMs(99)).toBeCloseTo(100);
    expect(clampThrottle(-5)).toBe(0);
    expect(clampThrottle(99.6)).toBe(99);
  });
});
