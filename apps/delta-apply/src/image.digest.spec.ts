import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, MAX_DIGEST_REGIONS } from '@wanmig/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestRegions, FileChunkTarget } from '@wanmig/stream';
import { digestRange, ImageDigests, maxDigestRegions } from './image.digest.js';

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const expected = (data: Buffer, regionBytes: number, offset: number, length: number): string[] => {
  const out: string[] = [];
  for (let at = offset; at < offset + length; at += regionBytes) {
    out.push(sha(data.subarray(at, Math.min(offset + length, at + regionBytes))));
  }
  return out;
};

describe('image digests', () => {
  let dir: string;
  let path: string;
  const data = randomBytes(3 * 1024 * 1024 + 777);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'digest-'));
    path = join(dir, 'disk.img');
    await writeFile(path, data);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes each region over the whole image, the last one short', async () => {
    const range = digestRange(data.length, { regionBytes: 1024 * 1024 });
    expect(range).toEqual({ offset: 0, length: data.length, regionBytes: 1024 * 1024 });
    expect(await digestRegions(path, range)).toEqual(expected(data, 1024 * 1024, 0, data.length));
  });

  it('handles regions that straddle reads, sub-ranges and small read sizes', async () => {
    for (const [regionBytes, offset, length, readBytes] of [
      [12_288, 5, 100_000, 8192],
      [4096, 4096 * 3, 4096 * 5 + 1, 3000],
      [1 << 20, 0, data.length, 1 << 16],
    ]) {
      const range = digestRange(data.length, { regionBytes, offset, length });
      expect(await digestRegions(path, range, readBytes)).toEqual(expected(data, regionBytes, offset, length));
    }
  });

  it('gives no digests for an empty range', async () => {
    expect(await digestRegions(path, digestRange(data.length, { regionBytes: 4096, offset: data.length }))).toEqual([]);
  });

  it('refuses ranges outside the image and too many regions', () => {
    const bad = (request: { offset?: number; length?: number; regionBytes: number }) => () =>
      digestRange(1 << 30, request);
    expect(bad({ regionBytes: 4096, offset: (1 << 30) + 1 })).toThrow(/offset/);
    expect(bad({ regionBytes: 4096, offset: 4096, length: 1 << 30 })).toThrow(/length/);
    expect(bad({ regionBytes: 4096 })).toThrow(new RegExp(`at most ${MAX_DIGEST_REGIONS}`));
    expect(bad({ regionBytes: 4096 })).toThrow(expect.objectContaining({ code: ErrorCode.InvalidRequest }));
    expect(digestRange(1 << 30, { regionBytes: (1 << 30) / MAX_DIGEST_REGIONS }).length).toBe(1 << 30);
  });

  it('keeps a reply within the server max_payload', () => {
    expect(maxDigestRegions(8 * 1024 * 1024)).toBe(MAX_DIGEST_REGIONS);
    const fit = maxDigestRegions(1024 * 1024);
    expect(fit).toBeLessThan(MAX_DIGEST_REGIONS);
    expect(fit * 67 + 1024).toBeLessThanOrEqual(1024 * 1024);
    expect(() => digestRange(1 << 30, { regionBytes: 4096 * 64 }, fit)).not.toThrow();
    expect(() => digestRange(1 << 30, { regionBytes: 4096 * 4 }, fit)).toThrow(/per reply/);
  });
});

describe('ImageDigests (the destination keeps its digests between asks)', () => {
  const MiB = 1024 * 1024;
  const REGION = MiB;
  const SIZE = 6 * REGION + 4096;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'image-digests-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function setup(name: string) {
    const image = new FileChunkTarget(join(dir, name), SIZE, { create: true });
    const mirror = Buffer.alloc(SIZE);
    const errors: unknown[] = [];
    const digests = new ImageDigests(image, (err) => errors.push(err));
    /** A frame applied as the present tracker does it: buffered by the image, then touched. */
    const apply = (offset: number, data: Buffer) => {
      image.write(offset, data);
      data.copy(mirror, offset);
      digests.touch(offset, data.length);
    };
    return { image, mirror, digests, apply, errors };
  }

  it('answers whole-image asks from what it keeps, writes buffered by the image included', async () => {
    const { image, mirror, digests, apply, errors } = setup('kept.img');
    try {
      apply(0, randomBytes(8192));
      const whole = { offset: 0, length: SIZE, regionBytes: REGION };
      expect(await digests.digest(whole)).toEqual(expected(mirror, REGION, 0, SIZE));
      // Still buffered in the image when asked: the digest flushes it into the file first.
      apply(3 * REGION + 5, randomBytes(100));
      expect(await digests.digest(whole)).toEqual(expected(mirror, REGION, 0, SIZE));
      // Regions from an offset that is a whole region, and the short last one, come from the same digests.
      expect(await digests.digest({ offset: 2 * REGION, length: SIZE - 2 * REGION, regionBytes: REGION })).toEqual(
        expected(mirror, REGION, 2 * REGION, SIZE - 2 * REGION),
      );
      // Any other range is hashed as asked.
      expect(await digests.digest({ offset: 5, length: 3 * REGION, regionBytes: REGION })).toEqual(
        expected(mirror, REGION, 5, 3 * REGION),
      );
      expect(errors).toEqual([]);
    } finally {
      digests.close();
      image.close();
    }
  });

  it('hashes touched regions again in the background, before the next ask', async () => {
    const { image, mirror, digests, apply, errors } = setup('background.img');
    try {
      const whole = { offset: 0, length: SIZE, regionBytes: REGION };
      await digests.digest(whole);
      apply(4 * REGION, randomBytes(4096));
      expect(digests.staleRegions).toBe(1);
      // No ask: the touched region is hashed again on its own; then an ask returns what it holds.
      await expect.poll(() => digests.staleRegions).toBe(0);
      expect(await digests.digest(whole)).toEqual(expected(mirror, REGION, 0, SIZE));
      expect(errors).toEqual([]);
    } finally {
      digests.close();
      image.close();
    }
  });

  it('finds bytes changed behind its back only when it starts over (a new region size, or a restart)', async () => {
    const { image, mirror, digests } = setup('behind.img');
    try {
      const whole = { offset: 0, length: SIZE, regionBytes: REGION };
      const before = await digests.digest(whole);
      const other = new FileChunkTarget(image.path, SIZE);
      other.write(REGION, Buffer.from('written by someone else'));
      other.close();
      Buffer.from('written by someone else').copy(mirror, REGION);
      // Not through the applied frames: not seen.
      expect(await digests.digest(whole)).toEqual(before);
      // A restart keeps nothing: the first ask hashes everything, and sees it.
      const restarted = new ImageDigests(image, () => undefined);
      expect(await restarted.digest(whole)).toEqual(expected(mirror, REGION, 0, SIZE));
      restarted.close();
    } finally {
      digests.close();
      image.close();
    }
  });
});
