import { describe, expect, it } from 'vitest';
import { RangeLock } from './range.lock.js';

describe('RangeLock', () => {
  it('runs disjoint writers together and overlapping ones in arrival order', async () => {
    const lock = new RangeLock();
    const order: string[] = [];
    const a = await lock.acquire(0, 100, true);
    const b = await lock.acquire(100, 100, true);
    const c = lock.acquire(50, 100, true).then((release) => {
      order.push('c');
      return release;
    });
    const d = lock.acquire(60, 10, false).then((release) => {
      order.push('d');
      release();
    });
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual([]);
    a();
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual([]);
    b();
    (await c)();
    await d;
    expect(order).toEqual(['c', 'd']);
    expect(lock.size).toBe(0);
  });

  it('lets readers share a range', async () => {
    const lock = new RangeLock();
    const r1 = await lock.acquire(0, 10, false);
    const r2 = await lock.acquire(5, 10, false);
    r1();
    r2();
    expect(lock.size).toBe(0);
  });
});
