import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { DIGEST_READ_BYTES, hashRegions, RegionHash, type DigestRange } from './region.hasher.js';

export { DIGEST_READ_BYTES, type DataRange, type DigestRange } from './region.hasher.js';

/**
 * Hex sha256 of each region of the file over [offset, offset + length); the last region may be
 * short. Reads DIGEST_READ_BYTES at a time through its own read-only descriptor, one read ahead of
 * the hashing, and yields to the event loop between chunks, so digesting a large image never
 * stalls the receivers. Bytes past the end of the file (it should not be shorter) read as zeros.
 */
export async function digestRegions(
  path: string,
  range: DigestRange,
  readBytes = DIGEST_READ_BYTES,
): Promise<string[]> {
  const fh = await open(path, 'r');
  try {
    return (await hashRegions(fh, range, { readBytes })).digests;
  } finally {
    await fh.close();
  }
}

/** RAM is digested in regions of this size, then the list of region digests is hashed (see {@link ramDigest}). */
export const RAM_DIGEST_REGION_BYTES = 4 * 1024 * 1024;

/**
 * Region digests of data fed in order, in pieces of any size: the in-memory twin of {@link digestRegions}, for
 * memory read through a driver rather than from a file. Same zero-region shortcut, same digests.
 */
export class RegionDigester {
  private readonly digests: string[] = [];
  private hash = new RegionHash();
  private filled = 0;

  constructor(private readonly regionBytes: number) {}

  update(data: Buffer): void {
    for (let at = 0; at < data.length;) {
      const take = Math.min(data.length - at, this.regionBytes - this.filled);
      this.hash.update(data.subarray(at, at + take));
      at += take;
      this.filled += take;
      if (this.filled === this.regionBytes) {
        this.digests.push(this.hash.digest());
        this.hash = new RegionHash();
        this.filled = 0;
      }
    }
  }

  finish(): string[] {
    if (this.filled > 0) this.digests.push(this.hash.digest());
    this.filled = 0;
    return this.digests;
  }
}

/**
 * One digest for a whole RAM: sha256 over its regions' hex sha256 digests, in order. Equal RAMs give equal digests
 * on both ends, and a RAM that is mostly zero pages costs little more than a memcmp to digest.
 */
export function ramDigest(regionDigests: string[]): string {
  return createHash('sha256').update(regionDigests.join('\n')).digest('hex');
}

/** {@link ramDigest} of a RAM file. */
export async function ramFileDigest(path: string, ramBytes: number): Promise<string> {
  return ramDigest(await digestRegions(path, { offset: 0, length: ramBytes, regionBytes: RAM_DIGEST_REGION_BYTES }));
}

/** A RAM's digest with its regions' (each RAM_DIGEST_REGION_BYTES): what a mismatch is named by. */
export interface RamDigest {
  sha256: string;
  regions: string[];
}

/** {@link ramDigest} of a RAM file, with its region digests. */
export async function ramFileDigests(path: string, ramBytes: number): Promise<RamDigest> {
  const regions = await digestRegions(path, { offset: 0, length: ramBytes, regionBytes: RAM_DIGEST_REGION_BYTES });
  return { sha256: ramDigest(regions), regions };
}

/**
 * Region digests as they cross the wire next to a RAM digest: the first 16 hex digits of each (64 bits), enough to
 * name the regions that differ once the full digest has said that something does.
 */
export function shortRegionDigests(regions: string[]): string[] {
  return regions.map((digest) => digest.slice(0, 16));
}

/**
 * Where two RAMs differ, in words: "in 2 of 64 regions of 4 MiB (first at byte 0x8400000, 0xc000000)", from their
 * region digests (full or short); empty when the lists do not say (absent, or of other lengths).
 */
export function describeRamDifference(ours: string[] | undefined, theirs: string[] | undefined): string {
  if (!ours?.length || !theirs?.length || ours.length !== theirs.length) return '';
  const differing: number[] = [];
  ours.forEach((digest, i) => {
    const other = theirs[i];
    const width = Math.min(digest.length, other.length);
    if (digest.slice(0, width) !== other.slice(0, width)) differing.push(i);
  });
  if (differing.length === 0) return '';
  const first = differing.slice(0, 4).map((i) => `0x${(i * RAM_DIGEST_REGION_BYTES).toString(16)}`);
  return ` in ${differing.length} of ${ours.length} regions of ${RAM_DIGEST_REGION_BYTES / 2 ** 20} MiB (first at byte ${first.join(', ')})`;
}
