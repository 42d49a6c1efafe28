import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';

/** Bytes per read: large and sequential, so a spinning disk streams and the syscall count stays low. */
export const DIGEST_READ_BYTES = 4 * 1024 * 1024;
/** Give other work (acks, frames, control requests) a turn at least this often. */
const YIELD_EVERY_MS = 10;

/** A range of an image cut into regions; both ends of a migration digest the same way to compare. */
export interface DigestRange {
  offset: number;
  length: number;
  regionBytes: number;
}

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
  const { offset, length, regionBytes } = range;
  const end = offset + length;
  const fh = await open(path, 'r');
  try {
    const buffers = [Buffer.allocUnsafe(readBytes), Buffer.allocUnsafe(readBytes)];
    const readInto = async (position: number, buffer: Buffer): Promise<Buffer> => {
      const want = Math.min(readBytes, end - position);
      let done = 0;
      while (done < want) {
        const { bytesRead } = await fh.read(buffer, done, want - done, position + done);
        if (bytesRead === 0) {
          buffer.fill(0, done, want);
          break;
        }
        done += bytesRead;
      }
      return buffer.subarray(0, want);
    };
    const readAt = (position: number, buffer: Buffer): Promise<Buffer> => {
      const reading = readInto(position, buffer);
      // Awaited one chunk later: mark it handled now so a failed read is not an unhandled rejection meanwhile.
      reading.catch(() => undefined);
      return reading;
    };
    const digests: string[] = [];
    let hash: RegionHash | undefined;
    let regionEnd = offset;
    let lastYield = performance.now();
    let turn = 0;
    let next = offset < end ? readAt(offset, buffers[turn]) : undefined;
    for (let position = offset; next;) {
      const chunk = await next;
      const following = position + chunk.length;
      turn ^= 1;
      next = following < end ? readAt(following, buffers[turn]) : undefined;
      for (let at = 0; at < chunk.length;) {
        if (!hash) {
          hash = new RegionHash();
          regionEnd = Math.min(end, position + at + regionBytes);
        }
        const take = Math.min(chunk.length - at, regionEnd - (position + at));
        hash.update(chunk.subarray(at, at + take));
        at += take;
        if (position + at === regionEnd) {
          digests.push(hash.digest());
          hash = undefined;
        }
      }
      position = following;
      if (performance.now() - lastYield > YIELD_EVERY_MS) {
        await yieldToLoop();
        lastYield = performance.now();
      }
    }
    return digests;
  } finally {
    await fh.close();
  }
}

const ZEROS = Buffer.alloc(DIGEST_READ_BYTES);
const zeroDigests = new Map<number, string>();

/**
 * sha256 of one region fed in pieces. Pieces of zeros are only counted, and hashed only once non-zero data follows
 * them: a region that is all zeros (a hole, most of a fresh disk) costs a memcmp, and its digest, the same for every
 * region of that length, comes from a cache. The digest is the plain sha256 of the bytes either way.
 */
class RegionHash {
  private hash?: Hash;
  private zeros = 0;

  update(piece: Buffer): void {
    if (isAllZero(piece)) {
      this.zeros += piece.length;
      return;
    }
    this.hash ??= createHash('sha256');
    this.feedZeros(this.hash);
    this.hash.update(piece);
  }

  digest(): string {
    if (!this.hash) return zeroDigest(this.zeros);
    this.feedZeros(this.hash);
    return this.hash.digest('hex');
  }

  private feedZeros(hash: Hash): void {
    for (; this.zeros > 0; this.zeros -= Math.min(this.zeros, ZEROS.length)) {
      hash.update(ZEROS.subarray(0, Math.min(this.zeros, ZEROS.length)));
    }
  }
}

function isAllZero(piece: Buffer): boolean {
  for (let at = 0; at < piece.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, piece.length - at);
    if (!piece.subarray(at, at + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}

function zeroDigest(length: number): string {
  let digest = zeroDigests.get(length);
  if (digest === undefined) {
    const hash = createHash('sha256');
    for (let left = length; left > 0; left -= Math.min(left, ZEROS.length)) {
      hash.update(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
    }
    digest = hash.digest('hex');
    if (zeroDigests.size < 64) zeroDigests.set(length, digest);
  }
  return digest;
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
