import { ErrorCode } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { BLOCK_MAP_HEADER_BYTES } from './block-map.serializer.js';
import { BlockMap } from './block.map.js';
import { BlockGeometryError, BlockMapCorruptError } from './errors.js';
import { RoaringBitmap32 } from './roaring.js';

function sample(): BlockMap {
  const map = BlockMap.forSize(2 ** 40 + 512, 64 * 1024);
  map.setRange(0, 100_000).set(16_777_215).setRange(5_000_000, 3);
  return map;
}

describe('BlockMap serialisation', () => {
  it('round-trips geometry and bits', () => {
    const map = sample();
    const copy = BlockMap.deserialize(map.serialize());
    expect(copy.equals(map)).toBe(true);
    expect(copy.geometry).toEqual(map.geometry);
    expect(BlockMap.deserialize(BlockMap.forSize(0, 4096).serialize()).count).toBe(0);
  });

  it('stores the bitmap in Roaring portable format after the header', () => {
    const map = sample();
    const bytes = map.serialize();
    const bitmap = RoaringBitmap32.deserialize(bytes.subarray(BLOCK_MAP_HEADER_BYTES), 'portable');
    expect(bitmap.size).toBe(map.count);
  });

  it('refuses a map of another geometry when one is expected', () => {
    const bytes = sample().serialize();
    expect(() => BlockMap.deserialize(bytes, { blockSize: 4096, blockCount: 1, sizeBytes: 4096 })).toThrow(
      BlockGeometryError,
    );
    expect(BlockMap.deserialize(bytes, sample().geometry).count).toBe(sample().count);
  });

  it('rejects truncated, altered or foreign bytes', () => {
    const bytes = sample().serialize();
    const cases: Buffer[] = [
      bytes.subarray(0, 10),
      bytes.subarray(0, bytes.length - 1),
      Buffer.concat([bytes, Buffer.from([0])]),
      Buffer.from('not a block map at all, certainly not one'),
    ];
    for (const at of [0, 4, 9, 20, 40, bytes.length - 1]) {
      const bad = Buffer.from(bytes);
      bad[at] ^= 0x10;
      cases.push(bad);
    }
    for (const bad of cases) {
      try {
        BlockMap.deserialize(bad);
        expect.unreachable('deserialize accepted corrupt bytes');
      } catch (err) {
        expect(err).toBeInstanceOf(BlockMapCorruptError);
        expect((err as BlockMapCorruptError).code).toBe(ErrorCode.BitmapCorrupt);
      }
    }
  });
});
