import { ChunkEncoding, ErrorCode, RECORD_HEADER_BYTES } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { CodecError, RecordCorruptError, RecordOutOfRangeError } from './errors.js';
import { parseRecords } from './record.reader.js';
import { RecordWriter } from './record.writer.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CodecError);
    return (err as CodecError).code;
  }
  return undefined;
}

describe('record writer and reader', () => {
  it('round-trips every encoding with the documented layout', () => {
    const w = new RecordWriter();
    w.appendRaw(2 ** 40, Buffer.from('abc'));
    w.appendZero(0, 8192);
    w.appendRef(4096, 4096, 2 ** 33, 0xdeadbeef);
    w.appendXbzrle(8192, 4096, 1, 0xffffffff, Uint8Array.from([0, 1, 7]));
    const batch = w.take();
    expect(batch[0]).toBe(ChunkEncoding.Raw);
    expect(batch.readUInt32BE(4)).toBe(3);
    expect(batch.readUInt32BE(8) * 2 ** 32 + batch.readUInt32BE(12)).toBe(2 ** 40);
    expect(batch.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + 3).toString()).toBe('abc');
    const records = parseRecords(batch, 2 ** 41);
    expect(records.map((r) => [r.encoding, r.offset, r.length])).toEqual([
      [ChunkEncoding.Raw, 2 ** 40, 3],
      [ChunkEncoding.Zero, 0, 8192],
      [ChunkEncoding.Ref, 4096, 4096],
      [ChunkEncoding.Xbzrle, 8192, 4096],
    ]);
    expect(records[2]).toMatchObject({ source: 2 ** 33, crc: 0xdeadbeef });
    expect(records[3]).toMatchObject({ baseCrc: 1, resultCrc: 0xffffffff });
    expect(w.byteLength).toBe(0);
  });

  it('merges contiguous Zero and Raw records', () => {
    const w = new RecordWriter();
    expect(w.appendZero(0, 4096)).toBe(RECORD_HEADER_BYTES);
    expect(w.appendZero(4096, 4096)).toBe(0);
    expect(w.appendRaw(8192, Buffer.alloc(10, 1))).toBe(RECORD_HEADER_BYTES + 10);
    expect(w.appendRaw(8202, Buffer.alloc(5, 2))).toBe(5);
    expect(w.appendRaw(9000, Buffer.alloc(5, 3))).toBe(RECORD_HEADER_BYTES + 5);
    expect(w.recordCount).toBe(3);
    const records = parseRecords(w.take(), 10_000);
    expect(records.map((r) => [r.offset, r.length])).toEqual([
      [0, 8192],
      [8192, 15],
      [9000, 5],
    ]);
  });

  it('rejects truncated batches, unknown encodings, reserved bits and empty records', () => {
    const w = new RecordWriter();
    w.appendRaw(0, Buffer.alloc(100, 1));
    w.appendRef(4096, 4096, 0, 1);
    w.appendXbzrle(8192, 4096, 1, 2, Uint8Array.from([0, 2, 1, 1]));
    const good = w.take();
    expect(parseRecords(good, 16384)).toHaveLength(3);
    // A cut at a record boundary is a shorter valid batch (the frame's length and CRC catch that); any other cut is not.
    const boundaries = new Set([RECORD_HEADER_BYTES + 100, RECORD_HEADER_BYTES * 2 + 112]);
    for (let cut = 1; cut < good.length; cut++) {
      if (boundaries.has(cut)) continue;
      expect(
        codeOf(() => parseRecords(good.subarray(0, cut), 16384)),
        `cut at ${cut}`,
      ).toBe(ErrorCode.RecordCorrupt);
    }
    const unknown = Buffer.from(good);
    unknown[0] = 9;
    expect(codeOf(() => parseRecords(unknown, 16384))).toBe(ErrorCode.RecordCorrupt);
    const reserved = Buffer.from(good);
    reserved[2] = 1;
    expect(codeOf(() => parseRecords(reserved, 16384))).toBe(ErrorCode.RecordCorrupt);
    const empty = Buffer.from(good);
    empty.writeUInt32BE(0, 4);
    expect(() => parseRecords(empty, 16384)).toThrow(RecordCorruptError);
    const badDelta = Buffer.from(good);
    badDelta[badDelta.length - 3] = 0; // changed-run length 0
    expect(codeOf(() => parseRecords(badDelta, 16384))).toBe(ErrorCode.RecordCorrupt);
  });

  it('rejects records and Ref sources past the end of the target', () => {
    const w = new RecordWriter();
    w.appendZero(4096, 4096);
    const zero = w.take();
    expect(() => parseRecords(zero, 8191)).toThrow(RecordOutOfRangeError);
    expect(codeOf(() => parseRecords(zero, 8191))).toBe(ErrorCode.FrameOutOfRange);
    w.appendRef(0, 4096, 8192, 0);
    const ref = w.take();
    expect(parseRecords(ref, 12288)).toHaveLength(1);
    try {
      parseRecords(ref, 12287);
      expect.unreachable();
    } catch (err) {
      expect(err).toMatchObject({ name: 'RecordOutOfRangeError', offset: 8192, recordIndex: 0 });
    }
    const huge = Buffer.from(zero);
    huge.writeUInt32BE(0xffffffff, 8);
    expect(codeOf(() => parseRecords(huge, 2 ** 50))).toBe(ErrorCode.RecordCorrupt);
  });
});
