import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mapDataExtents, parseQemuImgMap } from './data.extents.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('parseQemuImgMap', () => {
  it('widens data to whole blocks, merges what then touches, and leaves the rest as holes', () => {
    const json = JSON.stringify([
      { start: 0, length: 4 * KiB, data: true, zero: false },
      { start: 4 * KiB, length: 200 * KiB, data: false, zero: true },
      { start: 204 * KiB, length: 8 * KiB, data: true, zero: false },
      { start: 212 * KiB, length: 20 * KiB, data: false, zero: true },
      { start: 232 * KiB, length: 4 * KiB, data: true, zero: false },
      { start: 236 * KiB, length: MiB - 236 * KiB, data: true, zero: true },
    ]);
    expect(parseQemuImgMap(json, MiB, 64 * KiB)).toEqual([
      { offset: 0, length: 64 * KiB, data: true },
      { offset: 64 * KiB, length: 128 * KiB, data: false },
      { offset: 192 * KiB, length: 64 * KiB, data: true },
      { offset: 256 * KiB, length: MiB - 256 * KiB, data: false },
    ]);
  });

  it('clips a map that runs to the end of the last 512-byte sector', () => {
    const json = JSON.stringify([
      { start: 0, length: 4096, data: false, zero: true },
      { start: 4096, length: 4096, data: true, zero: false },
    ]);
    expect(parseQemuImgMap(json, 6000, 1)).toEqual([
      { offset: 0, length: 4096, data: false },
      { offset: 4096, length: 6000 - 4096, data: true },
    ]);
  });

  it('gives up on output that does not cover the image in order', () => {
    expect(parseQemuImgMap('not json', MiB, 4096)).toBeUndefined();
    expect(parseQemuImgMap('{}', MiB, 4096)).toBeUndefined();
    const gap = JSON.stringify([{ start: 4096, length: MiB - 4096, data: true }]);
    expect(parseQemuImgMap(gap, MiB, 4096)).toBeUndefined();
    const short = JSON.stringify([{ start: 0, length: 4096, data: true }]);
    expect(parseQemuImgMap(short, MiB, 4096)).toBeUndefined();
  });
});

describe('mapDataExtents', () => {
  it('finds the written ranges of a sparse file with qemu-img, or says it cannot', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wanmig-extents-'));
    try {
      const path = join(dir, 'disk.img');
      const fh = await open(path, 'w');
      await fh.truncate(8 * MiB);
      await fh.write(Buffer.alloc(4096, 1), 0, 4096, 3 * MiB + 100);
      await fh.close();
      const extents = await mapDataExtents(path, 8 * MiB, 64 * KiB);
      // qemu-img comes with the bootstrap (where it is missing, the bulk pass reads everything).
      expect(extents).toBeDefined();
      const data = extents!.filter((e) => e.data);
      expect(data.length).toBe(1);
      expect(data[0].offset).toBeLessThanOrEqual(3 * MiB + 100);
      expect(data[0].offset + data[0].length).toBeGreaterThanOrEqual(3 * MiB + 4196);
      expect(data[0].length).toBeLessThanOrEqual(MiB);
      expect(await mapDataExtents(join(dir, 'missing.img'), MiB, 4096)).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
