import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  describeRamDifference,
  digestRegions,
  RegionDigester,
  ramDigest,
  ramFileDigest,
  ramFileDigests,
  shortRegionDigests,
} from './file.digest.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('digestRegions', () => {
  let dir: string;
  let path: string;
  let image: Buffer;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-digest-'));
    path = join(dir, 'image');
    // Zero runs before, between and after data, so regions are all zeros, zeros then data, data then zeros.
    image = Buffer.alloc(1_000_000);
    randomBytes(50_000).copy(image, 120_000);
    randomBytes(3_000).copy(image, 400_000);
    image[999_999] = 1;
    await writeFile(path, image);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const [regionBytes, readBytes] of [
    [100_000, 4096],
    [65_536, 1 << 20],
    [1_000_000, 7_000],
    [33_333, 65_536],
  ]) {
    it(`equals the plain sha256 of each region (region ${regionBytes}, reads of ${readBytes})`, async () => {
      const expected: string[] = [];
      for (let at = 0; at < image.length; at += regionBytes) {
        expected.push(sha256(image.subarray(at, Math.min(image.length, at + regionBytes))));
      }
      const digests = await digestRegions(path, { offset: 0, length: image.length, regionBytes }, readBytes);
      expect(digests).toEqual(expected);
    });
  }

  it('hashes a sub-range, and reads past the end of the file as zeros', async () => {
    const digests = await digestRegions(path, { offset: 900_000, length: 200_000, regionBytes: 150_000 });
    const tail = Buffer.concat([image.subarray(900_000), Buffer.alloc(100_000)]);
    expect(digests).toEqual([sha256(tail.subarray(0, 150_000)), sha256(tail.subarray(150_000))]);
  });

  it('digests memory fed in pieces exactly as the file digest does, and one RAM digest from them', async () => {
    const digester = new RegionDigester(65_536);
    for (let at = 0; at < image.length; at += 10_007)
      digester.update(image.subarray(at, Math.min(image.length, at + 10_007)));
    const fromPieces = digester.finish();
    expect(fromPieces).toEqual(await digestRegions(path, { offset: 0, length: image.length, regionBytes: 65_536 }));
    const other = Buffer.from(image);
    other[500_000] ^= 1;
    const changed = new RegionDigester(4 * 1024 * 1024);
    changed.update(other);
    expect(ramDigest(changed.finish())).not.toBe(await ramFileDigest(path, image.length));
    const same = new RegionDigester(4 * 1024 * 1024);
    same.update(image);
    expect(ramDigest(same.finish())).toBe(await ramFileDigest(path, image.length));
  });
});

describe('describeRamDifference', () => {
  it('names the regions that differ by their byte offsets, comparing full or short digests', () => {
    const ours = ['a'.repeat(64), 'b'.repeat(64), 'c'.repeat(64), 'd'.repeat(64)];
    const theirs = shortRegionDigests(ours);
    expect(describeRamDifference(ours, theirs)).toBe('');
    theirs[1] = '0'.repeat(16);
    theirs[3] = '1'.repeat(16);
    expect(describeRamDifference(ours, theirs)).toBe(' in 2 of 4 regions of 4 MiB (first at byte 0x400000, 0xc00000)');
    // Lists that cannot be compared say nothing rather than something wrong.
    expect(describeRamDifference(ours, undefined)).toBe('');
    expect(describeRamDifference(ours, theirs.slice(1))).toBe('');
  });

  it('ramFileDigests gives the same digest as ramFileDigest, with its regions', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wanmig-ramdigests-'));
    try {
      const path = join(dir, 'ram.img');
      const ram = Buffer.concat([Buffer.alloc(4 * 1024 * 1024), randomBytes(1024 * 1024)]);
      await writeFile(path, ram);
      const both = await ramFileDigests(path, ram.length);
      expect(both.sha256).toBe(await ramFileDigest(path, ram.length));
      expect(both.regions).toHaveLength(2);
      expect(ramDigest(both.regions)).toBe(both.sha256);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
