import { ErrorCode } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { BlockMap } from './block.map.js';
import { BlockGeometryError, BlockRangeError } from './errors.js';

const KiB = 1024;

describe('BlockMap', () => {
  it('derives the geometry from a size, the last block partial', () => {
    const map = BlockMap.forSize(10 * 64 * KiB + 512, 64 * KiB);
    expect(map.geometry).toEqual({ blockSize: 64 * KiB, blockCount: 11, sizeBytes: 10 * 64 * KiB + 512 });
    expect(BlockMap.forSize(0, 4096).blockCount).toBe(0);
  });

  it('sets, clears and tests single blocks and ranges', () => {
    const map = BlockMap.forSize(100 * 4096, 4096);
    map.set(3).setRange(10, 5).set(99);
    expect(map.has(3)).toBe(true);
    expect(map.has(4)).toBe(false);
    expect(map.hasRange(10, 5)).toBe(true);
    expect(map.hasRange(10, 6)).toBe(false);
    expect(map.countRange(0, 12)).toBe(3);
    expect(map.count).toBe(7);
    map.clear(3).clearRange(11, 2);
    expect(map.toArray()).toEqual([10, 13, 14, 99]);
    expect(map.isEmpty).toBe(false);
    map.reset();
    expect(map.isEmpty).toBe(true);
  });

  it('refuses blocks outside the map with a typed error', () => {
    const map = BlockMap.forSize(10 * 4096, 4096);
    expect(() => map.set(10)).toThrow(BlockRangeError);
    expect(() => map.setRange(8, 3)).toThrow(BlockRangeError);
    expect(() => map.has(-1)).toThrow(BlockRangeError);
    expect(() => map.set(1.5)).toThrow(BlockRangeError);
    expect(() => map.markBytes(10 * 4096 - 1, 2)).toThrow(BlockRangeError);
    try {
      map.clear(42);
    } catch (err) {
      expect(err).toMatchObject({ name: 'BlockRangeError', code: ErrorCode.InvalidRequest, start: 42, blockCount: 10 });
    }
  });

  it('rejects invalid geometry', () => {
    expect(() => BlockMap.forSize(100, 0)).toThrow(BlockGeometryError);
    expect(() => new BlockMap({ blockSize: 4096, blockCount: 2, sizeBytes: 4096 })).toThrow(BlockGeometryError);
    expect(() => new BlockMap({ blockSize: 4096, blockCount: 2 ** 32 + 1, sizeBytes: 2 ** 44 + 4096 })).toThrow(
      BlockGeometryError,
    );
  });

  it('marks every block a byte range touches and unmarks only the ones it covers', () => {
    const map = BlockMap.forSize(10 * 4096 + 100, 4096);
    map.markBytes(4095, 2);
    expect(map.toArray()).toEqual([0, 1]);
    map.markBytes(8192, 0);
    expect(map.count).toBe(2);
    map.unmarkBytes(100, 8000);
    expect(map.toArray()).toEqual([0, 1]);
    map.unmarkBytes(0, 8192);
    expect(map.isEmpty).toBe(true);
    map.markBytes(10 * 4096, 100);
    expect(map.toArray()).toEqual([10]);
    expect(map.byteCount).toBe(100);
    map.unmarkBytes(10 * 4096, 100);
    expect(map.isEmpty).toBe(true);
  });

  it('combines maps in place and into new maps', () => {
    const a = BlockMap.forSize(64 * 512, 512).setRange(0, 10);
    const b = BlockMap.forSize(64 * 512, 512).setRange(5, 10);
    expect(a.union(b).toArray()).toEqual([...Array(15).keys()]);
    expect(a.intersection(b).toArray()).toEqual([5, 6, 7, 8, 9]);
    expect(a.difference(b).toArray()).toEqual([0, 1, 2, 3, 4]);
    expect(a.count).toBe(10);
    a.clone().unionInPlace(b);
    const c = a.clone().differenceInPlace(b);
    expect(c.toArray()).toEqual([0, 1, 2, 3, 4]);
    expect(a.clone().intersectionInPlace(b).count).toBe(5);
    expect(a.complement().count).toBe(54);
    expect(() => a.union(BlockMap.forSize(64 * 512, 4096))).toThrow(BlockGeometryError);
  });

  it('drains atomically: later marks land in the emptied map', () => {
    const dirty = BlockMap.forSize(1000 * 4096, 4096).setRange(100, 50);
    const round = dirty.drain();
    dirty.set(7);
    expect(round.count).toBe(50);
    expect(round.has(7)).toBe(false);
    expect(dirty.toArray()).toEqual([7]);
  });

  it('drains a bounded number of the lowest blocks', () => {
    const dirty = BlockMap.forSize(1000 * 4096, 4096)
      .setRange(10, 5)
      .setRange(500, 5);
    const first = dirty.drain(7);
    expect(first.toArray()).toEqual([10, 11, 12, 13, 14, 500, 501]);
    expect(dirty.toArray()).toEqual([502, 503, 504]);
    expect(dirty.drain(0).isEmpty).toBe(true);
    expect(dirty.drain(100).count).toBe(3);
    expect(dirty.isEmpty).toBe(true);
  });

  it('compares by geometry and content', () => {
    const a = BlockMap.forSize(4096 * 8, 4096).set(1);
    expect(a.equals(a.clone())).toBe(true);
    expect(a.equals(a.clone().set(2))).toBe(false);
    expect(a.equals(BlockMap.forSize(4096 * 9, 4096).set(1))).toBe(false);
  });

  it('turns set blocks into byte ranges clipped to the size and split at a maximum', () => {
    const map = BlockMap.full({ blockSize: 4096, blockCount: 10, sizeBytes: 9 * 4096 + 10 });
    expect([...map.byteRanges()]).toEqual([{ offset: 0, length: 9 * 4096 + 10 }]);
    expect([...map.byteRanges({ maxBytes: 16384 })]).toEqual([
      { offset: 0, length: 16384 },
      { offset: 16384, length: 16384 },
      { offset: 32768, length: 4096 + 10 },
    ]);
    expect(map.byteCount).toBe(9 * 4096 + 10);
  });
});
