import { ChunkEncoding, RECORD_HEADER_BYTES } from '@wanmig/protocol';
import { RecordCorruptError, RecordOutOfRangeError } from './errors.js';
import { REF_BODY_BYTES, XBZRLE_BODY_BYTES } from './record.layout.js';
import { readU64 } from './u64.util.js';
import { XBZRLE_MAX_LENGTH, xbzrleCheck } from './xbzrle.codec.js';

interface RecordBase {
  index: number;
  offset: number;
  length: number;
}
export type ParsedRecord =
  | (RecordBase & { encoding: typeof ChunkEncoding.Raw; data: Buffer })
  | (RecordBase & { encoding: typeof ChunkEncoding.Zero })
  | (RecordBase & { encoding: typeof ChunkEncoding.Ref; source: number; crc: number })
  | (RecordBase & { encoding: typeof ChunkEncoding.Xbzrle; baseCrc: number; resultCrc: number; delta: Buffer });

/**
 * Parses and checks a whole record batch before anything is applied: every header complete,
 * reserved bytes zero, encoding known, length non-zero, every range (and every Ref source) inside
 * the target, every XBZRLE delta well formed for its length. A batch that fails any check is
 * rejected whole, so truncation or garbage never reaches the target. `data` and `delta` are views
 * into `batch`.
 */
export function parseRecords(batch: Buffer, targetSize: number): ParsedRecord[] {
  const out: ParsedRecord[] = [];
  let at = 0;
  while (at < batch.length) {
    const index = out.length;
    if (batch.length - at < RECORD_HEADER_BYTES) {
      throw new RecordCorruptError(`record ${index} is truncated (${batch.length - at} header bytes)`, {
        recordIndex: index,
      });
    }
    const encoding = batch[at];
    const length = batch.readUInt32BE(at + 4);
    const offset = readU64(batch, at + 8);
    const fields = { recordIndex: index, offset };
    if (batch[at + 1] !== 0 || batch.readUInt16BE(at + 2) !== 0) {
      throw new RecordCorruptError(`record ${index} has non-zero reserved bytes`, fields);
    }
    if (offset < 0) throw new RecordCorruptError(`record ${index} has an offset beyond 2^53`, fields);
    if (length === 0) throw new RecordCorruptError(`record ${index} covers no bytes`, fields);
    if (offset + length > targetSize) throw new RecordOutOfRangeError({ ...fields, length, targetSize });
    at += RECORD_HEADER_BYTES;
    const need = (bytes: number): void => {
      if (batch.length - at < bytes) throw new RecordCorruptError(`record ${index} body is truncated`, fields);
    };
    switch (encoding) {
      case ChunkEncoding.Raw:
        need(length);
        out.push({ index, encoding, offset, length, data: batch.subarray(at, at + length) });
        at += length;
        break;
      case ChunkEncoding.Zero:
        out.push({ index, encoding, offset, length });
        break;
      case ChunkEncoding.Ref: {
        need(REF_BODY_BYTES);
        const source = readU64(batch, at);
        if (source < 0) throw new RecordCorruptError(`record ${index} has a source beyond 2^53`, fields);
        if (source + length > targetSize) {
          throw new RecordOutOfRangeError({ recordIndex: index, offset: source, length, targetSize });
        }
        out.push({ index, encoding, offset, length, source, crc: batch.readUInt32BE(at + 8) });
        at += REF_BODY_BYTES;
        break;
      }
      case ChunkEncoding.Xbzrle: {
        need(XBZRLE_BODY_BYTES);
        const deltaLength = batch.readUInt32BE(at + 8);
        need(XBZRLE_BODY_BYTES + deltaLength);
        if (length > XBZRLE_MAX_LENGTH) throw new RecordCorruptError(`xbzrle record ${index} is too long`, fields);
        const delta = batch.subarray(at + XBZRLE_BODY_BYTES, at + XBZRLE_BODY_BYTES + deltaLength);
        const problem = xbzrleCheck(delta, length);
        if (problem !== undefined) throw new RecordCorruptError(`record ${index}: ${problem}`, fields);
        const baseCrc = batch.readUInt32BE(at);
        const resultCrc = batch.readUInt32BE(at + 4);
        out.push({ index, encoding, offset, length, baseCrc, resultCrc, delta });
        at += XBZRLE_BODY_BYTES + deltaLength;
        break;
      }
      default:
        throw new RecordCorruptError(`record ${index} has unknown encoding ${encoding}`, fields);
    }
  }
  return out;
}
