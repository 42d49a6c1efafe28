import { describe, expect, it } from 'vitest';
import { AllocationMap } from './allocation.map.js';

/** Reference model: one value per byte. */
function model(size: number, initial: number) {
  const bytes = new Uint8Array(size).fill(initial);
  return {
    set: (o: number, l: number, v: number) => bytes.fill(v, o, Math.min(o + l, size)),
    query(o: number, l: number) {
      const out: { length: number; flags: number }[] = [];
      for (let i = o; i < Math.min(o + l, size); i++) {
        const last = out[out.length - 1];
        if (last && last.flags === bytes[i]) last.length++;
        else out.push({ length: 1, flags: bytes[i] });
      }
      return out;
    },
  };
}

describe('AllocationMap', () => {
  it('splits and merges runs', () => {
    const map = new AllocationMap(1000, 3);
    map.set(100, 100, 0);
    map.set(300, 100, 0);
    expect(map.runCount).toBe(5);
    expect(map.query(0, 1000)).toEqual([
      { length: 100, flags: 3 },
      { length: 100, flags: 0 },
      { length: 100, flags: 3 },
      { length: 100, flags: 0 },
      { length: 600, flags: 3 },
    ]);
    map.set(150, 200, 0);
    expect(map.query(0, 1000)).toEqual([
      { length: 100, flags: 3 },
      { length: 300, flags: 0 },
      { length: 600, flags: 3 },
    ]);
    map.set(0, 1000, 3);
    expect(map.runCount).toBe(1);
    expect(map.every(0, 1000, 2)).toBe(true);
    map.set(999, 5, 0);
    expect(map.every(0, 999, 3)).toBe(true);
    expect(map.every(0, 1000, 3)).toBe(false);
    expect(map.query(990, 100, 1)).toEqual([{ length: 9, flags: 3 }]);
  });

  it('agrees with a byte-per-byte model under random updates', () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const size = 4096;
    const map = new AllocationMap(size, 3);
    const ref = model(size, 3);
    for (let i = 0; i < 2000; i++) {
      const o = rnd(size);
      const l = 1 + rnd(300);
      const v = [0, 2, 3][rnd(3)];
      map.set(o, l, v);
      ref.set(o, l, v);
      if (i % 50 === 0) {
        const qo = rnd(size);
        const ql = 1 + rnd(size);
        expect(map.query(qo, ql)).toEqual(ref.query(qo, ql));
      }
    }
    expect(map.query(0, size)).toEqual(ref.query(0, size));
  });
});
