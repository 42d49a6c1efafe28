import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
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

/** Bytes of a file that may hold data; what lies outside such ranges reads as zeros (holes). */
export interface DataRange {
  offset: number;
  length: number;
}

export interface HashRegionsOptions {
  readBytes?: number;
  /** Where the file holds data, ascending: holes are hashed as zeros without being read. Absent: read everything. */
  data?: readonly DataRange[];
}

/**
 * Hex sha256 of each region of the open file over the range (the last region may be short), with how many bytes it
 * read. Reads one chunk ahead of the hashing and yields to the event loop between chunks, so a large image never
 * stalls the receivers. Bytes past the end of the file read as zeros. A hole and written zeros give the same digest:
 * the digest is of the bytes, whatever the layout.
 */
export async function hashRegions(
  fh: FileHandle,
  range: DigestRange,
  options: HashRegionsOptions = {},
): Promise<{ digests: string[]; bytesRead: number }> {
  const { offset, length, regionBytes } = range;
  const end = offset + length;
  const readBytes = options.readBytes ?? DIGEST_READ_BYTES;
  const pieces = [...piecesOf(offset, end, readBytes, options.data)];
  const buffers = [Buffer.allocUnsafe(Math.min(readBytes, length)), Buffer.allocUnsafe(Math.min(readBytes, length))];
  let reads = 0;
  let bytesRead = 0;
  // Read k goes to buffer k % 2: the chunk being hashed is never the one being read into.
  const readFrom = (from: number): { index: number; chunk: Promise<Buffer> } | undefined => {
    for (let index = from; index < pieces.length; index++) {
      const piece = pieces[index];
      if (!piece.read) continue;
      const chunk = readInto(fh, buffers[reads++ % 2], piece.at, piece.length);
      // Awaited one piece later: mark it handled now so a failed read is not an unhandled rejection meanwhile.
      chunk.catch(() => undefined);
      bytesRead += piece.length;
      return { index, chunk };
    }
    return undefined;
  };

  const digests: string[] = [];
  let hash: RegionHash | undefined;
  let regionEnd = offset;
  let lastYield = performance.now();
  let next = readFrom(0);
  for (let index = 0; index < pieces.length; index++) {
    const piece = pieces[index];
    let chunk: Buffer | undefined;
    if (piece.read) {
      chunk = await next!.chunk;
      next = readFrom(index + 1);
    }
    for (let at = 0; at < piece.length;) {
      const position = piece.at + at;
      if (!hash) {
        hash = new RegionHash();
        regionEnd = Math.min(end, position + regionBytes);
      }
      const take = Math.min(piece.length - at, regionEnd - position);
      if (chunk) hash.update(chunk.subarray(at, at + take));
      else hash.skipZeros(take);
      at += take;
      if (position + take === regionEnd) {
        digests.push(hash.digest());
        hash = undefined;
      }
    }
    if (performance.now() - lastYield > YIELD_EVERY_MS) {
      await yieldToLoop();
      lastYield = performance.now();
    }
  }
  return { digests, bytesRead };
}

/** [offset, end) as pieces to read (at most readBytes each) and holes to count, in order. */
function* piecesOf(
  offset: number,
  end: number,
  readBytes: number,
  data: readonly DataRange[] | undefined,
): Generator<{ at: number; length: number; read: boolean }> {
  const reads = function* (from: number, to: number) {
    for (let at = from; at < to; at += readBytes) yield { at, length: Math.min(readBytes, to - at), read: true };
  };
  if (!data) {
    yield* reads(offset, end);
    return;
  }
  let at = offset;
  for (const d of data) {
    if (d.offset >= end) break;
    const from = Math.max(d.offset, at);
    const to = Math.min(d.offset + d.length, end);
    if (to <= from) continue;
    if (from > at) yield { at, length: from - at, read: false };
    yield* reads(from, to);
    at = to;
  }
  if (at < end) yield { at, length: end - at, read: false };
}

async function readInto(fh: FileHandle, buffer: Buffer, position: number, want: number): Promise<Buffer> {
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
}

const ZEROS = Buffer.alloc(DIGEST_READ_BYTES);
const zeroDigests = new Map<number, string>();

/**
 * sha256 of one region fed in pieces. Pieces of zeros are only counted, and hashed only once non-zero data follows
 * them: a region that is all zeros (a hole, most of a fresh disk) costs a memcmp or nothing, and its digest, the same
 * for every region of that length, comes from a cache. The digest is the plain sha256 of the bytes either way.
 */
export class RegionHash {
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

  /** `length` bytes known to be zeros (a hole), never read. */
  skipZeros(length: number): void {
    this.zeros += length;
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
