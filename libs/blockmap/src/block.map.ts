import {
  type BlockGeometry,
  type ByteRange,
  type Extent,
  blocksTouching,
  blocksWithin,
  checkBlockRange,
  checkGeometry,
  describeGeometry,
  extentToBytes,
  geometryForSize,
  sameGeometry,
} from './block.geometry.js';
import { deserializeBitmap, serializeBitmap } from './block-map.serializer.js';
import { BlockGeometryError } from './errors.js';
import { type ExtentOptions, iterateExtents } from './extent.iterator.js';
import { RoaringBitmap32 } from './roaring.js';

export interface ByteRangeOptions extends ExtentOptions {
  /** Split ranges longer than this many bytes (rounded down to whole blocks, at least one block). */
  maxBytes?: number;
}

/**
 * A set of blocks over a fixed geometry, backed by a Roaring bitmap: the dirty, synced and present
 * maps of disk-transfer and delta-apply, and the page maps of memory pre-copy (block = page).
 * Every index is checked against the geometry: a block outside the map is a BlockRangeError,
 * never a silently larger bitmap.
 */
export class BlockMap implements BlockGeometry {
  readonly blockSize: number;
  readonly blockCount: number;
  readonly sizeBytes: number;
  private bits: RoaringBitmap32;

  constructor(geometry: BlockGeometry, bits?: RoaringBitmap32) {
    const g = checkGeometry(geometry);
    this.blockSize = g.blockSize;
    this.blockCount = g.blockCount;
    this.sizeBytes = g.sizeBytes;
    this.bits = bits ?? new RoaringBitmap32();
  }

  /** A map over `sizeBytes` bytes in blocks of `blockSize`; the last block may be partial. */
  static forSize(sizeBytes: number, blockSize: number): BlockMap {
    return new BlockMap(geometryForSize(sizeBytes, blockSize));
  }

  /** A map with every block set (e.g. "everything still to send" at the start of a bulk copy). */
  static full(geometry: BlockGeometry): BlockMap {
    const map = new BlockMap(geometry);
    map.bits.addRange(0, map.blockCount);
    return map;
  }

  /** Reads what `serialize` wrote; with `expected`, refuses a map of another geometry. */
  static deserialize(data: Uint8Array, expected?: BlockGeometry): BlockMap {
    const { geometry, bitmap } = deserializeBitmap(data, expected);
    return new BlockMap(geometry, bitmap);
  }

  get geometry(): BlockGeometry {
    return { blockSize: this.blockSize, blockCount: this.blockCount, sizeBytes: this.sizeBytes };
  }

  /** Number of set blocks. */
  get count(): number {
    return this.bits.size;
  }

  get isEmpty(): boolean {
    return this.bits.isEmpty;
  }

  /** Bytes the set blocks cover (the partial last block counts for what it covers). */
  get byteCount(): number {
    const last = this.blockCount - 1;
    const lastShort = this.blockCount * this.blockSize - this.sizeBytes;
    return this.count * this.blockSize - (lastShort > 0 && this.bits.has(last) ? lastShort : 0);
  }

  has(block: number): boolean {
    checkBlockRange(this, block, 1);
    return this.bits.has(block);
  }

  /** True when every block of the range is set (an empty range is). */
  hasRange(start: number, count: number): boolean {
    checkBlockRange(this, start, count);
    return count === 0 || this.bits.hasRange(start, start + count);
  }

  /** Set blocks within the range. */
  countRange(start: number, count: number): number {
    checkBlockRange(this, start, count);
    return count === 0 ? 0 : this.bits.rangeCardinality(start, start + count);
  }

  set(block: number): this {
    checkBlockRange(this, block, 1);
    this.bits.add(block);
    return this;
  }

  clear(block: number): this {
    checkBlockRange(this, block, 1);
    this.bits.remove(block);
    return this;
  }

  setRange(start: number, count: number): this {
    checkBlockRange(this, start, count);
    if (count > 0) this.bits.addRange(start, start + count);
    return this;
  }

  clearRange(start: number, count: number): this {
    checkBlockRange(this, start, count);
    if (count > 0) this.bits.removeRange(start, start + count);
    return this;
  }

  /** Sets every block the byte range touches, partial blocks included (a write dirties its whole blocks). */
  markBytes(offset: number, length: number): this {
    const e = blocksTouching(this, offset, length);
    return this.setRange(e.start, e.count);
  }

  /**
   * Clears only the blocks the byte range covers entirely: a block the range covers in part keeps
   * its bit, because the rest of it has not been dealt with.
   */
  unmarkBytes(offset: number, length: number): this {
    const e = blocksWithin(this, offset, length);
    return this.clearRange(e.start, e.count);
  }

  /** Removes every block. */
  reset(): this {
    this.bits = new RoaringBitmap32();
    return this;
  }

  /**
   * Takes the set blocks and clears them in one step, as a dirty log is drained at the start of a
   * round: writes marked after the call land in this (now empty) map, never in the returned one.
   * With `limit`, takes only the lowest `limit` set blocks and leaves the rest.
   */
  drain(limit?: number): BlockMap {
    if (limit === undefined || limit >= this.count) {
      const taken = this.bits;
      this.bits = new RoaringBitmap32();
      return new BlockMap(this, taken);
    }
    if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`drain limit must be a whole number, got ${limit}`);
    if (limit === 0) return new BlockMap(this);
    const last = this.bits.select(limit - 1) as number;
    const taken = RoaringBitmap32.and(this.bits, RoaringBitmap32.fromRange(0, last + 1));
    this.bits.removeRange(0, last + 1);
    return new BlockMap(this, taken);
  }

  unionInPlace(other: BlockMap): this {
    this.bits.orInPlace(this.compatible(other).bits);
    return this;
  }

  differenceInPlace(other: BlockMap): this {
    this.bits.andNotInPlace(this.compatible(other).bits);
    return this;
  }

  intersectionInPlace(other: BlockMap): this {
    this.bits.andInPlace(this.compatible(other).bits);
    return this;
  }

  union(other: BlockMap): BlockMap {
    return new BlockMap(this, RoaringBitmap32.or(this.bits, this.compatible(other).bits));
  }

  difference(other: BlockMap): BlockMap {
    return new BlockMap(this, RoaringBitmap32.andNot(this.bits, this.compatible(other).bits));
  }

  intersection(other: BlockMap): BlockMap {
    return new BlockMap(this, RoaringBitmap32.and(this.bits, this.compatible(other).bits));
  }

  /** The blocks not set (e.g. the blocks not yet present at the destination). */
  complement(): BlockMap {
    return new BlockMap(this, RoaringBitmap32.andNot(RoaringBitmap32.fromRange(0, this.blockCount), this.bits));
  }

  clone(): BlockMap {
    return new BlockMap(this, new RoaringBitmap32(this.bits));
  }

  /** Same geometry and same blocks. */
  equals(other: BlockMap): boolean {
    return sameGeometry(this, other) && this.bits.isEqual(other.bits);
  }

  /** Runs of consecutive set blocks, ascending. See `iterateExtents` for behaviour under concurrent change. */
  extents(options?: ExtentOptions): Generator<Extent> {
    if (options?.maxCount !== undefined && !(options.maxCount >= 1)) {
      throw new RangeError(`maxCount must be at least 1, got ${options.maxCount}`);
    }
    return iterateExtents(this.bits, this.blockCount, options);
  }

  /** The set blocks as byte ranges, clipped to the size, optionally split at `maxBytes`. */
  *byteRanges(options: ByteRangeOptions = {}): Generator<ByteRange> {
    const { maxBytes, ...rest } = options;
    const byBytes = maxBytes === undefined ? undefined : Math.max(1, Math.floor(maxBytes / this.blockSize));
    const maxCount = byBytes === undefined ? rest.maxCount : Math.min(byBytes, rest.maxCount ?? Infinity);
    for (const extent of this.extents({ ...rest, maxCount })) yield this.toBytes(extent);
  }

  /** The bytes an extent covers, clipped to the size. */
  toBytes(extent: Extent): ByteRange {
    return extentToBytes(this, extent);
  }

  /** All set blocks, ascending. Meant for tests and small maps. */
  toArray(): number[] {
    return this.bits.toArray();
  }

  /** Header with the geometry, CRC, then Roaring's portable format (see block-map.serializer.ts). */
  serialize(): Buffer {
    return serializeBitmap(this, this.bits);
  }

  toString(): string {
    return `BlockMap(${this.count} of ${describeGeometry(this)})`;
  }

  private compatible(other: BlockMap): BlockMap {
    if (!sameGeometry(this, other)) {
      throw new BlockGeometryError(`maps differ: ${describeGeometry(this)} vs ${describeGeometry(other)}`, {
        mismatch: true,
      });
    }
    return other;
  }
}
