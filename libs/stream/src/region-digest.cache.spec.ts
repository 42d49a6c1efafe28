import { createHash, randomBytes } from 'node:crypto';
import { openSync, closeSync, writeSync } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestRegions } from './file.digest.js';
import { RegionDigestCache } from './region-digest.cache.js';

const KiB = 1024;
const REGION = 64 * KiB;
const SIZE = 10 * REGION + 1000; // the last region is short
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const regionsOf = (image: Buffer): string[] => {
  const out: string[] = [];
  for (let at = 0; at < image.length; at += REGION)
    out.push(sha256(image.subarray(at, Math.min(image.length, at + REGION))));
  return out;
};

/** Writes into the file the way a writer outside the cache does: synchronously, then (if asked) touches. */
function writeInto(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

describe('RegionDigestCache', () => {
  let dir: string;
  let n = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-region-cache-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A file of SIZE bytes holding `image` (random data in a few regions, zeros elsewhere). */
  async function imageFile(): Promise<{ path: string; image: Buffer }> {
    const path = join(dir, `image-${n++}`);
    const image = Buffer.alloc(SIZE);
    randomBytes(REGION).copy(image, REGION);
    randomBytes(3000).copy(image, 4 * REGION + 100);
    randomBytes(1000).copy(image, 10 * REGION);
    await writeFile(path, image);
    return { path, image };
  }

  it('hashes every region once, then only what a touch marked since', async () => {
    const { path, image } = await imageFile();
    const cache = new RegionDigestCache({ path, sizeBytes: SIZE, regionBytes: REGION });
    expect(cache.regionCount).toBe(11);
    const first = await cache.digests();
    expect(first.digests).toEqual(regionsOf(image));
    expect(first.digests).toEqual(await digestRegions(path, { offset: 0, length: SIZE, regionBytes: REGION }));
    expect(first.refresh.regions).toBe(11);

    // Nothing written: nothing read.
    expect((await cache.digests()).refresh).toMatchObject({ regions: 0, bytesRead: 0 });

    // A write across the boundary of regions 6 and 7, after they were hashed: both are marked, only they are read.
    const patch = randomBytes(5000);
    writeInto(path, 7 * REGION - 2000, patch);
    patch.copy(image, 7 * REGION - 2000);
    cache.touch(7 * REGION - 2000, patch.length);
    expect(cache.staleRegions).toBe(2);
    const second = await cache.digests();
    expect(second.refresh).toMatchObject({ regions: 2, bytesRead: 2 * REGION });
    expect(second.digests).toEqual(regionsOf(image));
  });

  it('re-reads only marked regions: a write nobody touched keeps its region’s old digest (what it trusts)', async () => {
    const { path, image } = await imageFile();
    const cache = new RegionDigestCache({ path, sizeBytes: SIZE, regionBytes: REGION });
    const before = (await cache.digests()).digests;
    writeInto(path, 3 * REGION + 10, Buffer.from('not touched'));
    writeInto(path, 5 * REGION + 10, Buffer.from('touched'));
    cache.touch(5 * REGION + 10, 7);
    const after = await cache.digests();
    expect(after.refresh.regions).toBe(1);
    expect(after.digests[5]).not.toBe(before[5]);
    // Region 3 was not read again: its digest is the one of the bytes before the untracked write.
    expect(after.digests[3]).toBe(before[3]);
    expect(after.digests[3]).toBe(regionsOf(image)[3]);
  });

  it('hashes again a region written while it was being read', async () => {
    const { path, image } = await imageFile();
    let writeDuringRead = true;
    const cache = new RegionDigestCache({
      path,
      sizeBytes: SIZE,
      regionBytes: REGION,
      // The marks are already taken when this runs: a write now is one the refresh may or may not see.
      beforeRead: () => {
        if (!writeDuringRead) return;
        writeDuringRead = false;
        writeInto(path, 2 * REGION, Buffer.alloc(100, 9));
        Buffer.alloc(100, 9).copy(image, 2 * REGION);
        cache.touch(2 * REGION, 100);
      },
    });
    await cache.refresh();
    expect(cache.staleRegions).toBe(1);
    const { digests, refresh } = await cache.digests();
    expect(refresh.regions).toBe(1);
    expect(digests).toEqual(regionsOf(image));
  });

  it('gives the same digests for holes and written zeros, and does not read the holes it is told of', async () => {
    const { path: written, image } = await imageFile();
    // The same bytes with its zero regions left as holes of a sparse file.
    const sparse = join(dir, `sparse-${n++}`);
    const fh = await open(sparse, 'w');
    try {
      await fh.truncate(SIZE);
      for (const [at, length] of [
        [REGION, REGION],
        [4 * REGION + 100, 3000],
        [10 * REGION, 1000],
      ])
        await fh.write(image, at, length, at);
    } finally {
      await fh.close();
    }
    const plain = await new RegionDigestCache({ path: written, sizeBytes: SIZE, regionBytes: REGION }).digests();
    const mapped = await new RegionDigestCache({
      path: sparse,
      sizeBytes: SIZE,
      regionBytes: REGION,
      mapHolesFromBytes: 0,
    }).digests();
    expect(mapped.digests).toEqual(plain.digests);
    // qemu-img found the holes: far less was read than the image.
    expect(mapped.refresh.bytesRead).toBeLessThan(SIZE / 2);

    // A map is trusted: what it calls a hole hashes as zeros without being read (here, wrongly, region 1).
    const lied = await new RegionDigestCache({
      path: written,
      sizeBytes: SIZE,
      regionBytes: REGION,
      mapHolesFromBytes: 0,
      mapData: () => Promise.resolve([{ offset: 2 * REGION, length: SIZE - 2 * REGION }]),
    }).digests();
    expect(lied.refresh.bytesRead).toBe(SIZE - 2 * REGION);
    expect(lied.digests[1]).toBe(sha256(Buffer.alloc(REGION)));
    expect(lied.digests.slice(2)).toEqual(plain.digests.slice(2));
  });

  it('finds a difference in a region neither side touched since its first digest', async () => {
    const { path: source, image } = await imageFile();
    const destination = join(dir, `dest-${n++}`);
    const corrupt = Buffer.from(image);
    corrupt[8 * REGION + 5] ^= 0xff;
    await writeFile(destination, corrupt);
    const ours = new RegionDigestCache({ path: source, sizeBytes: SIZE, regionBytes: REGION });
    const theirs = new RegionDigestCache({ path: destination, sizeBytes: SIZE, regionBytes: REGION });
    await Promise.all([ours.refresh(), theirs.refresh()]);
    // The same write on both sides, in region 1: only it is hashed again; the comparison still covers every region.
    for (const path of [source, destination]) writeInto(path, REGION, Buffer.alloc(10, 1));
    ours.touch(REGION, 10);
    theirs.touch(REGION, 10);
    const [a, b] = await Promise.all([ours.digests(), theirs.digests()]);
    expect([a.refresh.regions, b.refresh.regions]).toEqual([1, 1]);
    const differing = a.digests.flatMap((digest, i) => (b.digests[i] === digest ? [] : [i]));
    expect(differing).toEqual([8]);
  });

  it('lets background refreshes rest in proportion to the last pass', async () => {
    const { path } = await imageFile();
    const cache = new RegionDigestCache({ path, sizeBytes: SIZE, regionBytes: REGION });
    expect(cache.backgroundDueAt).toBe(-Infinity);
    const before = performance.now();
    const pass = await cache.refresh();
    expect(cache.backgroundDueAt).toBeGreaterThanOrEqual(before + 4 * pass.ms);
  });

  it('keeps the regions of a failed refresh stale', async () => {
    const { path, image } = await imageFile();
    let fail = true;
    const cache = new RegionDigestCache({
      path,
      sizeBytes: SIZE,
      regionBytes: REGION,
      mapHolesFromBytes: 0,
      mapData: () => (fail ? Promise.reject(new Error('no map')) : Promise.resolve(undefined)),
    });
    await expect(cache.refresh()).rejects.toThrow('no map');
    expect(cache.staleRegions).toBe(11);
    fail = false;
    expect((await cache.digests()).digests).toEqual(regionsOf(image));
  });
});
