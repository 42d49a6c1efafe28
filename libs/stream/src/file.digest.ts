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
    let hash: Hash | undefined;
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
          hash = createHash('sha256');
          regionEnd = Math.min(end, position + at + regionBytes);
        }
        const take = Math.min(chunk.length - at, regionEnd - (position + at));
        hash.update(chunk.subarray(at, at + take));
        at += take;
        if (position + at === regionEnd) {
          digests.push(hash.digest('hex'));
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
