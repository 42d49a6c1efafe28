import { BlockMap, geometryForSize } from '@wanmig/blockmap';
import { describe, expect, it } from 'vitest';
import { decodeJournalRecords, encodeJournalRecords, JOURNAL_RECORD_BYTES } from './present-journal.codec.js';

describe('present journal records', () => {
  const geometry = geometryForSize(1000 * 4096, 4096);

  it('encodes one record per extent and decodes them back', () => {
    const map = new BlockMap(geometry).setRange(0, 10).set(500).setRange(990, 10);
    const bytes = encodeJournalRecords(map);
    expect(bytes.length).toBe(3 * JOURNAL_RECORD_BYTES);
    expect(decodeJournalRecords(bytes, geometry.blockCount)).toEqual({
      extents: [
        { start: 0, count: 10 },
        { start: 500, count: 1 },
        { start: 990, count: 10 },
      ],
    });
  });

  it('stops at a torn, corrupt or out-of-range record and keeps what came before', () => {
    const good = encodeJournalRecords(new BlockMap(geometry).setRange(4, 2));
    expect(decodeJournalRecords(Buffer.concat([good, good.subarray(0, 5)]), 1000).problem).toMatch(/torn/);
    const flipped = Buffer.concat([good, good]);
    flipped[JOURNAL_RECORD_BYTES + 2] ^= 1;
    const corrupt = decodeJournalRecords(flipped, 1000);
    expect(corrupt.extents).toEqual([{ start: 4, count: 2 }]);
    expect(corrupt.problem).toMatch(/CRC/);
    expect(decodeJournalRecords(good, 5).problem).toMatch(/beyond/);
  });
});
