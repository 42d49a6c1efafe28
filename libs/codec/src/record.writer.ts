import { ChunkEncoding, RECORD_HEADER_BYTES } from '@wanmig/protocol';
import { MAX_MERGED_RECORD_LENGTH, REF_BODY_BYTES, XBZRLE_BODY_BYTES } from './record.layout.js';
import { writeU64 } from './u64.util.js';

const INITIAL_CAPACITY = 64 * 1024;

/**
 * Appends records (layout in libs/protocol/src/record.ts) to a growing buffer. A Zero or Raw record
 * that continues the previous record of the same encoding is merged into it, so a zero extent of
 * a gigabyte is one 16-byte record and a run of raw pages carries one header.
 * Each append returns the bytes it added.
 */
export class RecordWriter {
  private buf = Buffer.allocUnsafe(INITIAL_CAPACITY);
  private length = 0;
  private records = 0;
  private lastStart = -1;
  private lastEncoding = -1;
  private lastEnd = -1;

  get byteLength(): number {
    return this.length;
  }

  get recordCount(): number {
    return this.records;
  }

  appendZero(offset: number, length: number): number {
    if (this.extendLast(ChunkEncoding.Zero, offset, length)) return 0;
    this.header(ChunkEncoding.Zero, offset, length, 0);
    return RECORD_HEADER_BYTES;
  }

  appendRaw(offset: number, data: Uint8Array): number {
    const merged = this.extendLast(ChunkEncoding.Raw, offset, data.length);
    if (!merged) this.header(ChunkEncoding.Raw, offset, data.length, data.length);
    else this.reserve(data.length);
    this.buf.set(data, this.length);
    this.length += data.length;
    return data.length + (merged ? 0 : RECORD_HEADER_BYTES);
  }

  appendRef(offset: number, length: number, source: number, crc: number): number {
    this.header(ChunkEncoding.Ref, offset, length, REF_BODY_BYTES);
    writeU64(this.buf, this.length, source);
    this.buf.writeUInt32BE(crc >>> 0, this.length + 8);
    this.length += REF_BODY_BYTES;
    return RECORD_HEADER_BYTES + REF_BODY_BYTES;
  }

  appendXbzrle(offset: number, length: number, baseCrc: number, resultCrc: number, delta: Uint8Array): number {
    this.header(ChunkEncoding.Xbzrle, offset, length, XBZRLE_BODY_BYTES + delta.length);
    this.buf.writeUInt32BE(baseCrc >>> 0, this.length);
    this.buf.writeUInt32BE(resultCrc >>> 0, this.length + 4);
    this.buf.writeUInt32BE(delta.length, this.length + 8);
    this.buf.set(delta, this.length + XBZRLE_BODY_BYTES);
    this.length += XBZRLE_BODY_BYTES + delta.length;
    return RECORD_HEADER_BYTES + XBZRLE_BODY_BYTES + delta.length;
  }

  /** The records so far, in a buffer of their exact size; the writer starts a new batch. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.length);
    this.buf.copy(out, 0, 0, this.length);
    this.clear();
    return out;
  }

  clear(): void {
    this.length = 0;
    this.records = 0;
    this.lastStart = -1;
    this.lastEncoding = -1;
    this.lastEnd = -1;
  }

  /** Grows the previous record when it has this encoding and ends where the new one starts. */
  private extendLast(encoding: ChunkEncoding, offset: number, length: number): boolean {
    if (this.lastEncoding !== encoding || this.lastEnd !== offset) return false;
    const merged = this.buf.readUInt32BE(this.lastStart + 4) + length;
    if (merged > MAX_MERGED_RECORD_LENGTH) return false;
    this.buf.writeUInt32BE(merged, this.lastStart + 4);
    this.lastEnd += length;
    return true;
  }

  private header(encoding: ChunkEncoding, offset: number, length: number, body: number): void {
    this.reserve(RECORD_HEADER_BYTES + body);
    const at = this.length;
    this.buf.writeUInt32BE(encoding << 24, at); // encoding, then three reserved zero bytes
    this.buf.writeUInt32BE(length, at + 4);
    writeU64(this.buf, at + 8, offset);
    this.length += RECORD_HEADER_BYTES;
    this.records++;
    this.lastStart = at;
    this.lastEncoding = encoding;
    this.lastEnd = offset + length;
  }

  private reserve(bytes: number): void {
    const need = this.length + bytes;
    if (need <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
    this.buf.copy(grown, 0, 0, this.length);
    this.buf = grown;
  }
}
