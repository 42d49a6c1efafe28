import { crc32 } from 'node:zlib';
import { ChunkEncoding, ErrorCode } from '@wanmig/protocol';
import { type ChunkTarget } from './chunk.target.js';
import { BaseMismatchError, CodecError, CodecUsageError, RecordCorruptError } from './errors.js';
import { type ParsedRecord, parseRecords } from './record.reader.js';
import { xbzrleApplyChecked } from './xbzrle.codec.js';
import { DEFAULT_ZSTD_MAX_OUTPUT, Zstd } from './zstd/zstd.facade.js';

export interface ChunkDecoderOptions {
  /** Size of the target in bytes: no record may reach past it. */
  targetSize: number;
  /** zstd instance for compressed payloads; loaded on first need (preferred backend) when absent. */
  zstd?: Zstd;
  /** Largest record batch a compressed payload may expand to. Default 16 MiB. */
  maxBatchBytes?: number;
}

export interface ApplyResult {
  records: number;
  /** Bytes of the target the batch covered. */
  bytes: number;
  /** Ref and Xbzrle records found already applied (a replayed batch) and skipped. */
  replayed: number;
}

const ZERO_CHUNK_BYTES = 1024 * 1024;
let zeroChunk: Buffer | undefined;

/**
 * Applies record batches to a target, in order, verifying as it goes. The whole batch is parsed and
 * checked first (see `parseRecords`), so a truncated or malformed batch writes nothing. Then each
 * record is applied only once its own checks pass: a Ref's source bytes must have the CRC the
 * sender saw, an Xbzrle record's base must have the base CRC and its result the result CRC. A
 * record that fails throws (BASE_MISMATCH, RECORD_CORRUPT) before writing anything; the records
 * before it in the batch are valid data and stay written.
 *
 * Replays are safe: applying a batch again, in full or after a crash part way through, gives the
 * same target. A Ref or Xbzrle record whose source or base no longer matches is skipped when its
 * range already holds its result (checked by CRC) or when later records of the batch overwrite its
 * whole range; otherwise the mismatch is real and throws.
 */
export class ChunkDecoder {
  readonly targetSize: number;
  private zstd?: Zstd;
  private readonly maxBatchBytes: number;

  constructor(options: ChunkDecoderOptions) {
    if (!Number.isSafeInteger(options.targetSize) || options.targetSize < 0) {
      throw new CodecUsageError(`targetSize must be a non-negative integer, got ${options.targetSize}`);
    }
    this.targetSize = options.targetSize;
    this.zstd = options.zstd;
    this.maxBatchBytes = options.maxBatchBytes ?? DEFAULT_ZSTD_MAX_OUTPUT;
  }

  /** The record batch a frame payload carries: decompressed when `zstd`, else the payload itself. */
  async unpack(payload: Buffer, zstd: boolean): Promise<Buffer> {
    if (!zstd) return payload;
    this.zstd ??= await Zstd.load();
    return this.zstd.decompress(payload, this.maxBatchBytes);
  }

  /** Parses and checks a batch without touching a target. */
  parse(records: Buffer): ParsedRecord[] {
    return parseRecords(records, this.targetSize);
  }

  /** Unpacks, checks and applies one frame payload. */
  async apply(payload: Buffer, target: ChunkTarget, options: { zstd?: boolean } = {}): Promise<ApplyResult> {
    const records = this.parse(await this.unpack(payload, options.zstd ?? false));
    const result: ApplyResult = { records: records.length, bytes: 0, replayed: 0 };
    for (const record of records) {
      try {
        await applyRecord(record, target);
      } catch (err) {
        if (!(err instanceof BaseMismatchError) || !(await alreadyApplied(record, target, records))) throw err;
        result.replayed++;
      }
      result.bytes += record.length;
    }
    return result;
  }
}

async function applyRecord(record: ParsedRecord, target: ChunkTarget): Promise<void> {
  const { offset, length, index } = record;
  switch (record.encoding) {
    case ChunkEncoding.Raw:
      return target.write(offset, record.data);
    case ChunkEncoding.Zero:
      return writeZeros(target, offset, length);
    case ChunkEncoding.Ref: {
      const source = await readExact(target, record.source, length, index);
      const crc = crc32(source);
      if (crc !== record.crc) {
        throw new BaseMismatchError(
          `record ${index}: bytes at source ${record.source} are not the referenced content`,
          {
            recordIndex: index,
            offset,
            expectedCrc: record.crc,
            actualCrc: crc,
          },
        );
      }
      if (record.source !== offset) await target.write(offset, source);
      return;
    }
    case ChunkEncoding.Xbzrle: {
      const base = await readExact(target, offset, length, index);
      const crc = crc32(base);
      if (crc !== record.baseCrc) {
        throw new BaseMismatchError(`record ${index}: bytes at ${offset} are not the delta's base`, {
          recordIndex: index,
          offset,
          expectedCrc: record.baseCrc,
          actualCrc: crc,
        });
      }
      // Decode into a copy: `base` may be the target's own storage, and a failed CRC must leave it intact.
      const page = Buffer.from(base);
      xbzrleApplyChecked(record.delta, page);
      if (crc32(page) !== record.resultCrc) {
        throw new RecordCorruptError(`record ${index}: xbzrle result fails its CRC`, { recordIndex: index, offset });
      }
      return target.write(offset, page);
    }
  }
}

/**
 * After a base or source mismatch: true when skipping the record leaves the target as applying it
 * would, because its range already holds its result or later records of the batch overwrite it all.
 */
async function alreadyApplied(record: ParsedRecord, target: ChunkTarget, batch: ParsedRecord[]): Promise<boolean> {
  const expected =
    record.encoding === ChunkEncoding.Ref
      ? record.crc
      : record.encoding === ChunkEncoding.Xbzrle
        ? record.resultCrc
        : undefined;
  if (expected === undefined) return false;
  if (crc32(await readExact(target, record.offset, record.length, record.index)) === expected) return true;
  return coveredLater(record, batch);
}

/** True when records after `record` in the batch write every byte of its range. */
function coveredLater(record: ParsedRecord, batch: ParsedRecord[]): boolean {
  const later = batch
    .slice(record.index + 1)
    .filter((r) => r.offset < record.offset + record.length && r.offset + r.length > record.offset)
    .sort((a, b) => a.offset - b.offset);
  let covered = record.offset;
  for (const r of later) {
    if (r.offset > covered) return false;
    covered = Math.max(covered, r.offset + r.length);
    if (covered >= record.offset + record.length) return true;
  }
  return false;
}

async function readExact(target: ChunkTarget, offset: number, length: number, index: number): Promise<Buffer> {
  const data = await target.read(offset, length);
  if (data.length !== length) {
    throw new CodecError(ErrorCode.Internal, `target returned ${data.length} of ${length} bytes at ${offset}`, {
      recordIndex: index,
      offset,
    });
  }
  return data;
}

async function writeZeros(target: ChunkTarget, offset: number, length: number): Promise<void> {
  if (target.zero) return target.zero(offset, length);
  zeroChunk ??= Buffer.alloc(ZERO_CHUNK_BYTES);
  for (let at = 0; at < length; at += ZERO_CHUNK_BYTES) {
    await target.write(offset + at, zeroChunk.subarray(0, Math.min(ZERO_CHUNK_BYTES, length - at)));
  }
}
