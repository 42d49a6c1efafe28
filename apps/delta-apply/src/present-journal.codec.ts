import { crc32 } from 'node:zlib';
import type { BlockMap, Extent } from '@wanmig/blockmap';

/**
 * A present-map journal is a sequence of 12-byte records, one per extent of blocks that became
 * durable: u32 first block, u32 count − 1, u32 CRC-32 of those 8 bytes (big-endian). Records are
 * appended and fdatasync'd between a data sync and the watermark save, so the snapshot plus the
 * journals always cover every block below the persisted watermark. A torn or corrupt record (the
 * last append of a crashed process) ends the file: everything before it is good.
 */
export const JOURNAL_RECORD_BYTES = 12;
const MAX_COUNT = 2 ** 32;

export function encodeJournalRecords(batch: BlockMap): Buffer {
  const extents = [...batch.extents({ maxCount: MAX_COUNT })];
  const out = Buffer.allocUnsafe(extents.length * JOURNAL_RECORD_BYTES);
  extents.forEach((extent, i) => {
    const at = i * JOURNAL_RECORD_BYTES;
    out.writeUInt32BE(extent.start, at);
    out.writeUInt32BE(extent.count - 1, at + 4);
    out.writeUInt32BE(crc32(out.subarray(at, at + 8)), at + 8);
  });
  return out;
}

export interface DecodedJournal {
  extents: Extent[];
  /** Why reading stopped before the end of the data (a torn append, corruption), if it did. */
  problem?: string;
}

export function decodeJournalRecords(data: Buffer, blockCount: number): DecodedJournal {
  const extents: Extent[] = [];
  for (let at = 0; at < data.length; at += JOURNAL_RECORD_BYTES) {
    if (at + JOURNAL_RECORD_BYTES > data.length) {
      return { extents, problem: `torn record at byte ${at} (${data.length - at} of ${JOURNAL_RECORD_BYTES} bytes)` };
    }
    if (data.readUInt32BE(at + 8) !== crc32(data.subarray(at, at + 8))) {
      return { extents, problem: `record at byte ${at} fails its CRC` };
    }
    const start = data.readUInt32BE(at);
    const count = data.readUInt32BE(at + 4) + 1;
    if (start + count > blockCount) {
      return { extents, problem: `record at byte ${at} covers blocks beyond ${blockCount}` };
    }
    extents.push({ start, count });
  }
  return { extents };
}
