import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { MAX_DIGEST_REGIONS, ValidationError } from '@wanmig/protocol';

/** Bytes per read: large and sequential, so a spinning disk streams and the syscall count stays low. */
export const DIGEST_READ_BYTES = 4 * 1024 * 1024;
/** Give other work (acks, frames, control requests) a turn at least this often. */
const YIELD_EVERY_MS = 10;

export interface DigestRange {
  offset: number;
  length: number;
  regionBytes: number;
}

/** Bytes one digest takes in the JSON reply: 64 hex digits, quotes, comma. */
const DIGEST_JSON_BYTES = 67;
/** The rest of the reply: Nest's envelope, field names, numbers. */
const DIGEST_REPLY_OVERHEAD = 1024;

/**
 * How many regions one reply may carry: MAX_DIGEST_REGIONS, or fewer when the server's
 * max_payload (1 MiB by default) could not carry that many; a reply too big to publish would
 * reach the caller as a timeout, not as an error it can act on.
 */
export function maxDigestRegions(maxPayload: number): number {
  return Math.max(
    1,
    Math.min(MAX_DIGEST_REGIONS, Math.floor((maxPayload - DIGEST_REPLY_OVERHEAD) / DIGEST_JSON_BYTES)),
  );
}

/**
 * Resolves a digest request against an image of `sizeBytes`: `offset` defaults to 0, `length` to the
 * rest of the image; the range must lie inside the image and hold at most `maxRegions` regions.
 */
export function digestRange(
  sizeBytes: number,
  request: { offset?: number; length?: number; regionBytes: number },
  maxRegions = MAX_DIGEST_REGIONS,
): DigestRange {
  const offset = request.offset ?? 0;
  const problems: string[] = [];
  if (offset > sizeBytes) problems.push(`offset: ${offset} is past the end of the ${sizeBytes}-byte image`);
  const length = request.length ?? Math.max(0, sizeBytes - offset);
  if (offset + length > sizeBytes) problems.push(`length: [${offset}, +${length}) reaches past ${sizeBytes} bytes`);
  const regions = Math.ceil(length / request.regionBytes);
  if (regions > maxRegions) {
    problems.push(`regionBytes: ${regions} regions asked, at most ${maxRegions} per reply (use larger regions)`);
  }
  if (problems.length > 0) throw new ValidationError(problems, 'DiskDigestRequest');
  return { offset, length, regionBytes: request.regionBytes };
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
