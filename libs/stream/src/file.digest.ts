import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

const READ_BYTES = 4 * 1024 * 1024;

/**
 * sha256 of each `regionBytes` region of a file over [offset, offset + length), hex, in order (the
 * last region may be short). Both ends of a migration compute it the same way to compare images.
 * Reads are large and sequential and the loop yields between them, so a big image does not stall
 * the event loop.
 */
export async function regionDigests(path: string, regionBytes: number, offset = 0, length?: number): Promise<string[]> {
  const fh = await open(path, 'r');
  try {
    const end = offset + (length ?? (await fh.stat()).size - offset);
    const digests: string[] = [];
    const buf = Buffer.allocUnsafe(Math.min(READ_BYTES, regionBytes));
    for (let region = offset; region < end; region += regionBytes) {
      const hash = createHash('sha256');
      const regionEnd = Math.min(end, region + regionBytes);
      for (let at = region; at < regionEnd;) {
        const want = Math.min(buf.length, regionEnd - at);
        const { bytesRead } = await fh.read(buf, 0, want, at);
        if (bytesRead === 0) {
          // Past the end of the file: the image reads as zeros there.
          hash.update(Buffer.alloc(regionEnd - at));
          break;
        }
        hash.update(buf.subarray(0, bytesRead));
        at += bytesRead;
      }
      digests.push(hash.digest('hex'));
    }
    return digests;
  } finally {
    await fh.close();
  }
}
