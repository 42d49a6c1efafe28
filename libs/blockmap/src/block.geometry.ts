import { BlockGeometryError, BlockRangeError } from './errors.js';

/** Roaring32 holds values 0..2^32-1, so a map covers at most 2^32 blocks. */
export const MAX_BLOCK_COUNT = 2 ** 32;

/**
 * The shape of the space a map covers: `blockCount` blocks of `blockSize` bytes over `sizeBytes`
 * bytes. The last block may be partial when the size is not a multiple of the block size (a disk
 * of 10 GB + 512 bytes), which is why the byte size is kept alongside the block count.
 */
export interface BlockGeometry {
  readonly blockSize: number;
  readonly blockCount: number;
  readonly sizeBytes: number;
}

/** A run of consecutive blocks. */
export interface Extent {
  start: number;
  count: number;
}

/** A run of consecutive bytes. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** The geometry for `sizeBytes` bytes cut into blocks of `blockSize` (the last one possibly partial). */
export function geometryForSize(sizeBytes: number, blockSize: number): BlockGeometry {
  checkInteger('blockSize', blockSize, 1, 2 ** 32 - 1);
  checkInteger('sizeBytes', sizeBytes, 0, Number.MAX_SAFE_INTEGER);
  return checkGeometry({ blockSize, blockCount: Math.ceil(sizeBytes / blockSize), sizeBytes });
}

/** Validates a geometry: positive block size, block count within Roaring32, byte size consistent with both. */
export function checkGeometry(g: BlockGeometry): BlockGeometry {
  checkInteger('blockSize', g.blockSize, 1, 2 ** 32 - 1);
  checkInteger('blockCount', g.blockCount, 0, MAX_BLOCK_COUNT);
  checkInteger('sizeBytes', g.sizeBytes, 0, Number.MAX_SAFE_INTEGER);
  const full = g.blockCount * g.blockSize;
  if (g.sizeBytes > full || (g.blockCount > 0 && g.sizeBytes <= full - g.blockSize)) {
    throw new BlockGeometryError(
      `${g.sizeBytes} bytes do not fit ${g.blockCount} blocks of ${g.blockSize} bytes (last block must be non-empty)`,
    );
  }
  return { blockSize: g.blockSize, blockCount: g.blockCount, sizeBytes: g.sizeBytes };
}

export function sameGeometry(a: BlockGeometry, b: BlockGeometry): boolean {
  return a.blockSize === b.blockSize && a.blockCount === b.blockCount && a.sizeBytes === b.sizeBytes;
}

export function describeGeometry(g: BlockGeometry): string {
  return `${g.blockCount} blocks of ${g.blockSize} bytes (${g.sizeBytes} bytes)`;
}

/** Every block the byte range touches, partial blocks at either end included. */
export function blocksTouching(g: BlockGeometry, offset: number, length: number): Extent {
  checkByteRange(g, offset, length);
  if (length === 0) return { start: Math.floor(offset / g.blockSize), count: 0 };
  const start = Math.floor(offset / g.blockSize);
  const end = Math.ceil((offset + length) / g.blockSize);
  return { start, count: end - start };
}

/**
 * Only the blocks the byte range covers entirely. The last block counts as covered when the range
 * reaches the end of the space, even though the block is partial.
 */
export function blocksWithin(g: BlockGeometry, offset: number, length: number): Extent {
  checkByteRange(g, offset, length);
  const start = Math.ceil(offset / g.blockSize);
  const endByte = offset + length;
  const end = endByte === g.sizeBytes ? g.blockCount : Math.floor(endByte / g.blockSize);
  return { start, count: Math.max(0, end - start) };
}

/** The bytes an extent of blocks covers, clipped to the end of the space. */
export function extentToBytes(g: BlockGeometry, extent: Extent): ByteRange {
  const offset = extent.start * g.blockSize;
  const end = Math.min((extent.start + extent.count) * g.blockSize, g.sizeBytes);
  return { offset, length: Math.max(0, end - offset) };
}

export function checkBlockRange(g: BlockGeometry, start: number, count: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > g.blockCount) {
    throw new BlockRangeError({ start, count, blockCount: g.blockCount });
  }
}

function checkByteRange(g: BlockGeometry, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > g.sizeBytes
  ) {
    throw new BlockRangeError({ start: offset, count: length, blockCount: g.blockCount, unit: 'byte' });
  }
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new BlockGeometryError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
}
