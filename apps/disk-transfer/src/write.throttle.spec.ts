import { afterEach, describe, expect, it, vi } from 'vitest';
import { WriteThrottle } from './write.throttle.js';

describe('WriteThrottle', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('does nothing until engaged', async () => {
    vi.useFakeTimers(); // a reply that waited would wait on a timer
    const throttle = new WriteThrottle();
    const replies = Array.from({ length: 100 }, () => throttle.beforeReply(64 * 1024));
    expect(vi.getTimerCount()).toBe(0);
    await Promise.all(replies);
    expect(throttle.stats).toMatchObject({ engaged: false, writesDelayed: 0, totalDelayMs: 0, guestBytes: 6_553_600 });
  });

  it('paces replies to the engaged rate and counts the delay', async () => {
    const throttle = new WriteThrottle();
    throttle.engage(1024 * 1024); // 1 MiB/s
    const start = performance.now();
    for (let i = 0; i < 8; i++) await throttle.beforeReply(64 * 1024); // 512 KiB
    const seconds = (performance.now() - start) / 1000;
    expect(seconds).toBeGreaterThan(0.4);
    expect(throttle.stats.writesDelayed).toBeGreaterThan(0);
    expect(throttle.stats.totalDelayMs).toBeGreaterThan(300);
    throttle.release();
    const { writesDelayed, totalDelayMs } = throttle.stats;
    await throttle.beforeReply(64 * 1024);
    expect(throttle.stats).toMatchObject({ writesDelayed, totalDelayMs });
  });
});
