import { createRng } from '@wanmig/codec';
import { describe, expect, it } from 'vitest';
import { SnapshotRng, streamSeed } from './snapshot.rng.js';

describe('snapshot RNG', () => {
  it('draws the same sequence as the codec RNG for a seed', () => {
    const a = new SnapshotRng(99);
    const b = createRng(99);
    for (let i = 0; i < 1000; i++) expect(a.u32()).toBe(b.u32());
    const x = Buffer.alloc(4099);
    const y = Buffer.alloc(4099);
    a.fill(x);
    b.fill(y);
    expect(x.equals(y)).toBe(true);
  });

  it('continues exactly from a restored state', () => {
    const a = new SnapshotRng(7);
    for (let i = 0; i < 123; i++) a.u32();
    const b = SnapshotRng.fromState(a.state());
    expect(Array.from({ length: 50 }, () => a.int(1000))).toEqual(Array.from({ length: 50 }, () => b.int(1000)));
  });

  it('gives each stream of a seed its own seed', () => {
    const seeds = new Set([1, 2, 3, 4, 5].map((s) => streamSeed(42, s)));
    expect(seeds.size).toBe(5);
    expect(streamSeed(42, 1)).not.toBe(streamSeed(43, 1));
  });
});
