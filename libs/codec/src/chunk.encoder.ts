import { crc32 } from 'node:zlib';
import { PAGE_SIZE, RECORD_HEADER_BYTES } from '@wanmig/protocol';
import { type BatchStats, addStats, countPage, emptyStats } from './batch.stats.js';
import { DEFAULT_DEDUP_ENTRIES, DedupIndex } from './dedup.index.js';
import { CodecUsageError } from './errors.js';
import { hashPage } from './page.hash.js';
import { MAX_MERGED_RECORD_LENGTH } from './record.layout.js';
import { RecordWriter } from './record.writer.js';
import { DEFAULT_XBZRLE_CACHE_BYTES, SentPageCache } from './sent-page.cache.js';
import { xbzrleEncode } from './xbzrle.codec.js';
import { isZero } from './zero.detect.js';
import roaring, { type RoaringBitmap32 } from 'roaring';
import { type BatchCompressor, type CompressedPayload } from './zstd/batch.compressor.js';

export interface ChunkEncoderOptions {
  /** Zero pages become Zero records (merged into extents). Default true. */
  zero?: boolean;
  /** Pages the receiver already holds become Ref records. Default true. */
  dedup?: boolean;
  /** Pages sent before become XBZRLE deltas against their last version. Default true. */
  xbzrle?: boolean;
  /** Dedup index size in pages. Default 262 144. */
  dedupEntries?: number;
  /** Byte budget of the last-sent-page cache behind XBZRLE. Default 64 MiB. */
  xbzrleCacheBytes?: number;
  /**
   * Cache a page for XBZRLE from its first send (true) or only from its second (false). A bulk
   * pass sends most pages once; caching them only churns the cache, so, as QEMU does after its
   * bulk stage, a page earns a cache slot once it has been sent again. Default true.
   */
  xbzrleCacheFirstSend?: boolean;
  /** Use a delta only when it is at most this fraction of the page. Default 0.7. */
  xbzrleMaxRatio?: number;
  /** Used by `maybeCompress`; without one, payloads go uncompressed. */
  compressor?: BatchCompressor;
}

/** Everything off: every page Raw. The baseline benchmarks compare against. */
export const CODEC_OFF: Readonly<ChunkEncoderOptions> = { zero: false, dedup: false, xbzrle: false };

export interface EncodedBatch {
  /** The record batch (layout in libs/protocol/src/record.ts). */
  records: Buffer;
  stats: BatchStats;
  /** Lowest offset and end of the highest range the batch covers; undefined when empty. */
  span?: { offset: number; end: number };
}

/**
 * Encodes chunks of a target space into record batches, choosing per page, in order of
 * preference: Zero, Ref (dedup), Xbzrle (delta), Raw.
 *
 * The encoder models what the receiver holds. It assumes every record it emits is applied, in
 * order — earlier batches before later ones — which the stream guarantees. Every record
 * invalidates the dedup entries and cached pages it overwrites, so a Ref never points at bytes a
 * later record changed. If that assumption breaks (a batch dropped, the receiver's target changed
 * by someone else), call `forget` for the range or `reset`.
 *
 * Chunks are cut at page boundaries of the target space: full, aligned pages use every feature; a
 * partial page (an unaligned write, the tail of a disk) is Zero or Raw.
 */
export class ChunkEncoder {
  readonly pageSize = PAGE_SIZE;
  readonly zeroOn: boolean;
  private readonly dedup?: DedupIndex;
  private readonly cache?: SentPageCache;
  /** Pages sent at least once, when caching starts at the second send. */
  private readonly sentOnce?: RoaringBitmap32;
  private readonly deltaLimit: number;
  private readonly compressor?: BatchCompressor;
  private readonly writer = new RecordWriter();
  private readonly delta = new Uint8Array(PAGE_SIZE);
  private readonly alignedPage = new Uint8Array(PAGE_SIZE);
  private stats = emptyStats();
  private spanStart = Infinity;
  private spanEnd = -Infinity;
  private readonly total = emptyStats();

  constructor(options: ChunkEncoderOptions = {}) {
    this.zeroOn = options.zero ?? true;
    if (options.dedup ?? true)
      this.dedup = new DedupIndex({ maxEntries: options.dedupEntries ?? DEFAULT_DEDUP_ENTRIES });
    if (options.xbzrle ?? true) {
      this.cache = new SentPageCache(options.xbzrleCacheBytes ?? DEFAULT_XBZRLE_CACHE_BYTES);
      if (options.xbzrleCacheFirstSend === false) this.sentOnce = new roaring.RoaringBitmap32();
    }
    const ratio = options.xbzrleMaxRatio ?? 0.7;
    if (!(ratio > 0 && ratio <= 1)) throw new CodecUsageError(`xbzrleMaxRatio must be in (0, 1], got ${ratio}`);
    this.deltaLimit = Math.floor(PAGE_SIZE * ratio);
    this.compressor = options.compressor;
  }

  /** Upper bound on the record bytes `encode` adds for `length` bytes (every page Raw, one header each). */
  static maxEncodedBytes(length: number): number {
    return length + RECORD_HEADER_BYTES * (Math.ceil(length / PAGE_SIZE) + 1);
  }

  /** Record bytes waiting in the current batch. */
  get pendingBytes(): number {
    return this.writer.byteLength;
  }

  get pendingRecords(): number {
    return this.writer.recordCount;
  }

  /** Totals over every batch taken so far. */
  get totals(): Readonly<BatchStats> {
    return this.total;
  }

  /** Appends records for `data` at `offset` to the current batch. */
  encode(offset: number, data: Uint8Array): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + data.length)) {
      throw new CodecUsageError(`chunk offset ${offset} is not a valid target offset`, { offset });
    }
    if (data.length === 0) throw new CodecUsageError('chunk is empty', { offset });
    const end = offset + data.length;
    this.spanStart = Math.min(this.spanStart, offset);
    this.spanEnd = Math.max(this.spanEnd, end);
    let pos = offset;
    while (pos < end) {
      const pageEnd = Math.min(end, (Math.floor(pos / PAGE_SIZE) + 1) * PAGE_SIZE);
      const page = data.subarray(pos - offset, pageEnd - offset);
      if (page.length === PAGE_SIZE) this.encodeFullPage(pos, page);
      else this.encodePartial(pos, page);
      pos = pageEnd;
    }
  }

  /**
   * Appends a Zero extent for [offset, +length) without looking at any bytes: for ranges known to read as zeroes
   * (an image's holes). With zero records off, the caller must send the bytes instead.
   */
  encodeZero(offset: number, length: number): void {
    if (!this.zeroOn) throw new CodecUsageError('zero records are off for this encoder', { offset });
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + length) || length <= 0) {
      throw new CodecUsageError(`zero range ${offset}+${length} is not a valid target range`, { offset });
    }
    this.spanStart = Math.min(this.spanStart, offset);
    this.spanEnd = Math.max(this.spanEnd, offset + length);
    for (let at = 0; at < length; at += MAX_MERGED_RECORD_LENGTH) {
      this.emitZero(offset + at, Math.min(MAX_MERGED_RECORD_LENGTH, length - at));
    }
  }

  /** The batch built so far, with its stats; the next `encode` starts a new one. */
  takeBatch(): EncodedBatch {
    this.stats.records = this.writer.recordCount;
    const batch: EncodedBatch = { records: this.writer.take(), stats: this.stats };
    if (this.spanEnd > this.spanStart) batch.span = { offset: this.spanStart, end: this.spanEnd };
    addStats(this.total, batch.stats);
    this.stats = emptyStats();
    this.spanStart = Infinity;
    this.spanEnd = -Infinity;
    return batch;
  }

  /** The frame payload for a batch: zstd when the configured compressor finds it worth it. */
  maybeCompress(batch: EncodedBatch | Buffer): CompressedPayload {
    const records = Buffer.isBuffer(batch) ? batch : batch.records;
    return this.compressor ? this.compressor.maybeCompress(records) : { payload: records, zstd: false };
  }

  /** The receiver's bytes in this range changed outside this encoder: stop referencing or diffing them. */
  forget(offset: number, length: number): void {
    this.dedup?.invalidate(offset, length);
    this.cache?.deleteRange(Math.floor(offset / PAGE_SIZE), Math.ceil((offset + length) / PAGE_SIZE));
  }

  /** Forgets everything assumed about the receiver and drops the unsent batch. */
  reset(): void {
    this.dedup?.clear();
    this.cache?.clear();
    this.sentOnce?.clear();
    this.writer.clear();
    this.stats = emptyStats();
    this.spanStart = Infinity;
    this.spanEnd = -Infinity;
  }

  private encodeFullPage(offset: number, page: Uint8Array): void {
    if (this.zeroOn && isZero(page)) return this.emitZero(offset, page.length);
    const slot = offset / PAGE_SIZE;
    let key: string | undefined;
    if (this.dedup) {
      key = hashPage(page);
      const source = this.dedup.lookup(key);
      if (source !== undefined) {
        const crc = crc32(page);
        countPage(this.stats, 'ref', PAGE_SIZE, this.writer.appendRef(offset, PAGE_SIZE, source, crc));
        return this.remember(offset, slot, page, key, crc);
      }
    }
    const cached = this.cache?.get(slot);
    if (cached) {
      const next = (page.byteOffset & 3) === 0 ? page : this.copyAligned(page);
      const n = xbzrleEncode(cached.bytes, next, this.delta, this.deltaLimit);
      if (n >= 0) {
        const baseCrc = cached.crc ?? crc32(cached.bytes);
        const crc = crc32(page);
        const added = this.writer.appendXbzrle(offset, PAGE_SIZE, baseCrc, crc, this.delta.subarray(0, n));
        countPage(this.stats, 'xbzrle', PAGE_SIZE, added);
        return this.remember(offset, slot, page, key, crc);
      }
    }
    countPage(this.stats, 'raw', PAGE_SIZE, this.writer.appendRaw(offset, page));
    this.remember(offset, slot, page, key, undefined);
  }

  private encodePartial(offset: number, piece: Uint8Array): void {
    if (this.zeroOn && isZero(piece)) return this.emitZero(offset, piece.length);
    this.forget(offset, piece.length);
    countPage(this.stats, 'raw', piece.length, this.writer.appendRaw(offset, piece));
  }

  private emitZero(offset: number, length: number): void {
    this.forget(offset, length);
    countPage(this.stats, 'zero', length, this.writer.appendZero(offset, length));
  }

  /** The receiver will hold `page` at `offset`: update the dedup index and the last-sent cache. */
  private remember(offset: number, slot: number, page: Uint8Array, key: string | undefined, crc?: number): void {
    if (this.dedup && key !== undefined) {
      this.dedup.invalidate(offset, PAGE_SIZE);
      this.dedup.record(key, offset);
    }
    if (this.sentOnce && !this.cache?.get(slot)) {
      // First send of this page: remember that it went, cache it the next time it goes.
      if (this.sentOnce.tryAdd(slot)) return;
    }
    this.cache?.put(slot, page, crc);
  }

  private copyAligned(page: Uint8Array): Uint8Array {
    this.alignedPage.set(page);
    return this.alignedPage;
  }
}
