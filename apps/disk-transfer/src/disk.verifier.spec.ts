import { randomBytes } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdClient } from '@wanmig/nbd';
import { RegionDigestCache } from '@wanmig/stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskExport } from './disk.export.js';
import { differingRegions, DiskVerifier, verifyRegionBytes } from './disk.verifier.js';
import { VerifyMismatchError } from './errors.js';

const MiB = 1024 * 1024;
const REGION = 4 * MiB; // verifyRegionBytes of a small disk
const SIZE = 8 * REGION;

function writeInto(path: string, offset: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}

describe('differingRegions', () => {
  it('names every region that differs, and a list of another length', () => {
    expect(differingRegions(['a', 'b', 'c'], ['a', 'b', 'c'])).toEqual([]);
    expect(differingRegions(['a', 'b', 'c'], ['x', 'b', 'y'])).toEqual([0, 2]);
    expect(differingRegions(['a', 'b', 'c'], ['a', 'b'])).toEqual([2]);
    expect(differingRegions(['a', 'b'], ['a', 'b', 'c'])).toEqual([2]);
  });

  it('cuts a disk into whole blocks, at most 4096 regions of at least 4 MiB', () => {
    expect(verifyRegionBytes(2 * 1024 * MiB, 65536)).toBe(4 * MiB);
    expect(verifyRegionBytes(64 * 1024 * MiB, 65536)).toBe(16 * MiB);
    expect(verifyRegionBytes(64 * 1024 * MiB + 1, 65536) % 65536).toBe(0);
  });
});

/**
 * The source is a real export (writes through NBD); the destination is a file with its own RegionDigestCache that
 * the test "applies" blocks to, touching what it applies, as delta-apply does.
 */
describe('DiskVerifier', () => {
  let dir: string;
  let disk: DiskExport;
  let client: NbdClient;
  let source: string;
  let destination: string;
  let theirs: RegionDigestCache;
  let logs: string[];
  let verifier: DiskVerifier;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-verifier-'));
    source = join(dir, 'source.img');
    destination = join(dir, 'dest.img');
    const fh = await open(source, 'w');
    await fh.truncate(SIZE);
    for (const region of [0, 3, 6]) await fh.write(randomBytes(MiB), 0, MiB, region * REGION + 4096);
    await fh.close();
    await copyFile(source, destination);
    disk = await DiskExport.open({ imagePath: source, blockSize: 65536, listen: { path: join(dir, 'nbd.sock') } });
    client = await NbdClient.connect({ path: join(dir, 'nbd.sock') });
    theirs = new RegionDigestCache({ path: destination, sizeBytes: SIZE, regionBytes: REGION });
    logs = [];
    verifier = new DiskVerifier({
      migrationId: 'm-1',
      imagePath: source,
      sizeBytes: SIZE,
      blockSize: 65536,
      remote: async (regionBytes) => {
        expect(regionBytes).toBe(REGION);
        return (await theirs.digests()).digests;
      },
      log: (line) => logs.push(line),
    });
  });

  afterEach(async () => {
    verifier.stop();
    await client.disconnect();
    await disk.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A guest write through the export, and the same bytes applied at the destination. */
  async function writeBoth(offset: number, data: Buffer): Promise<void> {
    await client.write(offset, data);
    writeInto(destination, offset, data);
    theirs.touch(offset, data.length);
  }

  const rehashed = (): string => logs.filter((line) => line.includes('verify compared')).pop() ?? '';

  it('hashes again at the end only the regions written since the background digests', async () => {
    verifier.track(disk);
    await verifier.verify(); // the background pass, then nothing more
    await writeBoth(2 * REGION + 100, randomBytes(8192));
    await writeBoth(5 * REGION - 10, randomBytes(20)); // across regions 4 and 5
    verifier.settleLocal();
    await verifier.verify();
    expect(rehashed()).toMatch(/compared 8 regions, 3 region\(s\) hashed, 12582912 bytes read/);
  });

  it('finds a destination block applied wrong, in a region written lately', async () => {
    verifier.track(disk);
    await verifier.verify();
    await client.write(REGION * 7, randomBytes(4096));
    // The destination applied other bytes there (a codec or apply error): its own tracking marks the region.
    writeInto(destination, REGION * 7, randomBytes(4096));
    theirs.touch(REGION * 7, 4096);
    const failure = await verifier.verify().catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(VerifyMismatchError);
    expect((failure as VerifyMismatchError).regions).toEqual([7]);
  });

  it('finds a difference in a region nobody wrote since its first digest: every region is compared', async () => {
    writeInto(destination, 6 * REGION + 4096, Buffer.from('a block the copy got wrong'));
    verifier.track(disk);
    await writeBoth(REGION, randomBytes(4096));
    const failure = await verifier.verify().catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(VerifyMismatchError);
    expect((failure as VerifyMismatchError).regions).toEqual([6]);
    expect((failure as Error).message).toMatch(/1 region\(s\) of 4194304 bytes \(first at 25165824\)/);
    // Nothing else changed: the next comparison hashes only the region written (and still fails on region 6).
    await writeBoth(REGION, randomBytes(4096));
    await expect(verifier.verify()).rejects.toMatchObject({ regions: [6] });
    expect(rehashed()).toMatch(/compared 8 regions, 1 region\(s\) hashed/);
  });

  it('does not see a write that bypassed the export after its region was hashed (what it trusts)', async () => {
    verifier.track(disk);
    await verifier.verify();
    // Written into the source file behind the export's back, so no region is marked: the digest stays the old one.
    writeInto(source, 3 * REGION + 4096, Buffer.from('not through the export'));
    await expect(verifier.verify()).resolves.toBeUndefined();
    expect(rehashed()).toMatch(/compared 8 regions, 0 region\(s\) hashed/);
  });

  it('stops following writes once stopped', async () => {
    verifier.track(disk);
    await verifier.verify();
    verifier.stop();
    await client.write(0, randomBytes(4096));
    await verifier.verify();
    expect(rehashed()).toMatch(/compared 8 regions, 0 region\(s\) hashed/);
  });
});
