import { describe, expect, it } from 'vitest';
import { DrainEstimate, THROTTLE_SHARE } from './drain.estimate.js';

describe('DrainEstimate', () => {
  it('starts from the configured link rate and the bulk pass ratio', () => {
    const estimate = DrainEstimate.afterBulk({
      linkBytesPerSecond: 1_000_000,
      wireBytes: 123,
      bulkSeconds: 10,
      rawBytes: 4_000_000,
      encodedBytes: 2_000_000,
      rttMs: 20,
    });
    // 1 MB of dirty blocks at half a frame byte each over 1 MB/s: 500 ms, plus the round trip.
    expect(estimate.drainMs(1_000_000)).toBeCloseTo(520);
  });

  it('measures the rate over the bulk pass when no link rate is configured', () => {
    const estimate = DrainEstimate.afterBulk({
      linkBytesPerSecond: undefined,
      wireBytes: 8_000_000,
      bulkSeconds: 4,
      rawBytes: 8_000_000,
      encodedBytes: 8_000_000,
      rttMs: 1,
    });
    expect(estimate.drainMs(2_000_000)).toBeCloseTo(1001);
  });

  it('learns each round’s ratio, and the rate only from rounds long enough to measure', () => {
    const estimate = new DrainEstimate(1_000_000, 0.1, 0);
    estimate.learn({ rawBytes: 1_000_000, wireBytes: 1_000_000, seconds: 0.5 });
    expect(estimate.drainMs(1_000_000)).toBeCloseTo(1000);
    estimate.learn({ rawBytes: 1_000_000, wireBytes: 1_000_000, seconds: 2 });
    expect(estimate.drainMs(1_000_000)).toBeCloseTo(2000);
    // A faster round never raises the rate above the configured one.
    estimate.learn({ rawBytes: 4_000_000, wireBytes: 4_000_000, seconds: 1.5 });
    expect(estimate.drainMs(1_000_000)).toBeCloseTo(2000);
  });

  it('learns no rate from a long round that carried little: it waited, it did not fill the link', () => {
    const estimate = new DrainEstimate(5_000_000, 1, 0);
    // 8 KB that took 3 s behind another stream on the same link: 2.7 KB/s is not what the link carries.
    estimate.learn({ rawBytes: 8192, wireBytes: 8192, seconds: 3 });
    expect(estimate.drainMs(5_000_000)).toBeCloseTo(1000);
    expect(estimate.tighterLimit(null)).toBeCloseTo(THROTTLE_SHARE * 5_000_000);
  });

  it('learns from a long round of a few MB even when the rate believed is far above the link', () => {
    // A budget of 1 Gbit/s over a 40 Mbit/s link: 10 MB in 2 s is the link's rate.
    const estimate = new DrainEstimate(125_000_000, 1, 0);
    estimate.learn({ rawBytes: 10_000_000, wireBytes: 10_000_000, seconds: 2 });
    expect(estimate.drainMs(5_000_000)).toBeCloseTo(1000);
  });

  it('throttles to a share of the link first, then halves the limit', () => {
    const estimate = new DrainEstimate(1_000_000, 0.5, 0);
    const first = estimate.tighterLimit(null);
    expect(first).toBeCloseTo((THROTTLE_SHARE * 1_000_000) / 0.5);
    expect(estimate.tighterLimit(first)).toBeCloseTo(first / 2);
  });
});
