import { describe, expect, it } from 'vitest';
import { BlockMap } from './block.map.js';

/** Reference: runs computed from a plain boolean array. */
function naiveExtents(bits: boolean[], from = 0, to = bits.length): { start: number; count: number }[] {
  const out: { start: number; count: number }[] = [];
  for (let i = from; i < to; i++) {
    if (!bits[i]) continue;
    const start = i;
    while (i < to && bits[i]) i++;
    out.push({ start, count: i - start });
  }
  return out;
}

function seeded(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

describe('BlockMap extents', () => {
  it('yields nothing for an empty map', () => {
    expect([...BlockMap.forSize(4096 * 100, 4096).extents()]).toEqual([]);
  });

  it('matches a naive scan on random maps, across page boundaries and long runs', () => {
    const rand = seeded(42);
    for (let round = 0; round < 20; round++) {
      const n = 1 + Math.floor(rand() * 30000);
      const bits: boolean[] = new Array<boolean>(n).fill(false);
      const map = BlockMap.forSize(n * 512, 512);
      // Mix of isolated bits and long runs, so both the per-page grouping and galloping run.
      const runs = Math.floor(rand() * 200);
      for (let r = 0; r < runs; r++) {
        const start = Math.floor(rand() * n);
        const len = rand() < 0.5 ? 1 : Math.floor(rand() * 9000);
        const count = Math.min(len, n - start);
        map.setRange(start, count);
        for (let i = start; i < start + count; i++) bits[i] = true;
      }
      expect([...map.extents()]).toEqual(naiveExtents(bits));
      const from = Math.floor(rand() * n);
      const to = from + Math.floor(rand() * (n - from));
      expect([...map.extents({ from, to })]).toEqual(naiveExtents(bits, from, to));
    }
  });

  it('finds the end of a run far past one page quickly', () => {
    const map = BlockMap.full({ blockSize: 4096, blockCount: 2 ** 32, sizeBytes: 2 ** 44 });
    map.clear(2 ** 31 + 12345);
    const t0 = performance.now();
    expect([...map.extents()]).toEqual([
      { start: 0, count: 2 ** 31 + 12345 },
      { start: 2 ** 31 + 12346, count: 2 ** 31 - 12346 },
    ]);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('splits long runs at maxCount', () => {
    const map = BlockMap.forSize(4096 * 100, 4096).setRange(10, 25);
    expect([...map.extents({ maxCount: 10 })]).toEqual([
      { start: 10, count: 10 },
      { start: 20, count: 10 },
      { start: 30, count: 5 },
    ]);
    expect(() => [...map.extents({ maxCount: 0 })]).toThrow(RangeError);
  });

  it('tolerates clearing extents while iterating', () => {
    const map = BlockMap.forSize(4096 * 20000, 4096);
    for (let i = 0; i < 20000; i += 3) map.set(i);
    let seen = 0;
    for (const e of map.extents()) {
      map.clearRange(e.start, e.count);
      seen += e.count;
    }
    expect(seen).toBe(6667);
    expect(map.isEmpty).toBe(true);
  });
});
