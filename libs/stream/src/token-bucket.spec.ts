import { describe, expect, it } from 'vitest';
import { TokenBucket } from './token-bucket.js';

describe('TokenBucket', () => {
  it('holds the long-run rate shared by several takers', async () => {
    const bucket = new TokenBucket(2_000_000, 100_000); // 2 MB/s
    const started = performance.now();
    let taken = 0;
    const taker = async () => {
      for (let i = 0; i < 10; i++) {
        await bucket.take(50_000);
        taken += 50_000;
      }
    };
    await Promise.all([taker(), taker()]);
    const seconds = (performance.now() - started) / 1000;
    // 1 MB minus the 100 kB burst at 2 MB/s takes at least 0.45 s.
    expect(taken).toBe(1_000_000);
    expect(seconds).toBeGreaterThan(0.4);
  });

  it('applies a new rate to takers already waiting', async () => {
    const bucket = new TokenBucket(1000, 1000);
    await bucket.take(1000);
    const pending = bucket.take(100_000);
    bucket.setRate(Number.POSITIVE_INFINITY);
    await expect(pending).resolves.toBeUndefined();
  });
});
