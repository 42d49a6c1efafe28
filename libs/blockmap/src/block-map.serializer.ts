import { crc32 } from 'node:zlib';
import { type BlockGeometry, checkGeometry, describeGeometry, sameGeometry } from './block.geometry.js';
import { BlockGeometryError, BlockMapCorruptError } from './errors.js';
import { RoaringBitmap32 } from './roaring.js';

/**
 * Serialised block map (big-endian, 32-byte header, then the bitmap in Roaring's portable format,
 * which the Java, Go and C implementations read too):
 *
 *   0  u32 magic 'WMBM'               12 u32 CRC-32 of bytes 0..11 and 16..end
 *   4  u8  version (1)                16 u64 block count
 *   5  u8  reserved (0)               24 u64 size in bytes
 *   6  u16 header length (32)         32 ... Roaring portable bitmap
 *   8  u32 block size
 *
 * The geometry travels with the bits so a receiver can refuse a map of another disk, and the CRC
 * matters because these maps are persisted for resume and a torn write must not read as "synced".
 */
export const BLOCK_MAP_MAGIC = 0x574d424d;
export const BLOCK_MAP_VERSION = 1;
export const BLOCK_MAP_HEADER_BYTES = 32;

export function serializeBitmap(geometry: BlockGeometry, bitmap: RoaringBitmap32): Buffer {
  bitmap.runOptimize();
  const body = bitmap.serialize('portable');
  const out = Buffer.allocUnsafe(BLOCK_MAP_HEADER_BYTES + body.length);
  out.writeUInt32BE(BLOCK_MAP_MAGIC, 0);
  out.writeUInt8(BLOCK_MAP_VERSION, 4);
  out.writeUInt8(0, 5);
  out.writeUInt16BE(BLOCK_MAP_HEADER_BYTES, 6);
  out.writeUInt32BE(geometry.blockSize, 8);
  writeU64(out, 16, geometry.blockCount);
  writeU64(out, 24, geometry.sizeBytes);
  out.set(body, BLOCK_MAP_HEADER_BYTES);
  out.writeUInt32BE(checksum(out), 12);
  return out;
}

/**
 * Parses and verifies a serialised map. With `expected`, also refuses a map of another geometry
 * (BlockGeometryError, code CONFLICT); anything malformed is a BlockMapCorruptError.
 */
export function deserializeBitmap(
  data: Uint8Array,
  expected?: BlockGeometry,
): { geometry: BlockGeometry; bitmap: RoaringBitmap32 } {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < BLOCK_MAP_HEADER_BYTES) {
    throw new BlockMapCorruptError(`block map of ${buf.length} bytes is shorter than its header`);
  }
  if (buf.readUInt32BE(0) !== BLOCK_MAP_MAGIC) throw new BlockMapCorruptError('not a serialised block map');
  const version = buf.readUInt8(4);
  if (version !== BLOCK_MAP_VERSION) throw new BlockMapCorruptError(`block map version ${version} is not supported`);
  if (buf.readUInt16BE(6) !== BLOCK_MAP_HEADER_BYTES || buf.readUInt8(5) !== 0) {
    throw new BlockMapCorruptError('block map header is malformed');
  }
  if (buf.readUInt32BE(12) !== checksum(buf)) throw new BlockMapCorruptError('block map failed its checksum');
  let geometry: BlockGeometry;
  try {
    geometry = checkGeometry({
      blockSize: buf.readUInt32BE(8),
      blockCount: readU64(buf, 16),
      sizeBytes: readU64(buf, 24),
    });
  } catch (cause) {
    throw new BlockMapCorruptError('block map geometry is invalid', { cause });
  }
  if (expected && !sameGeometry(geometry, expected)) {
    throw new BlockGeometryError(
      `block map covers ${describeGeometry(geometry)}, expected ${describeGeometry(expected)}`,
      { mismatch: true },
    );
  }
  const body = buf.subarray(BLOCK_MAP_HEADER_BYTES);
  let bitmap: RoaringBitmap32;
  try {
    bitmap = RoaringBitmap32.deserialize(body, 'portable');
  } catch (cause) {
    throw new BlockMapCorruptError('block map bitmap does not parse', { cause });
  }
  if (bitmap.getSerializationSizeInBytes('portable') !== body.length) {
    throw new BlockMapCorruptError('block map has trailing bytes after its bitmap');
  }
  if (!bitmap.isEmpty && bitmap.maximum() >= geometry.blockCount) {
    throw new BlockMapCorruptError(
      `block map holds block ${bitmap.maximum()} beyond its ${geometry.blockCount} blocks`,
    );
  }
  return { geometry, bitmap };
}

function checksum(buf: Buffer): number {
  return crc32(buf.subarray(16), crc32(buf.subarray(0, 12)));
}

function writeU64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * 2 ** 32 + buf.readUInt32BE(at + 4);
}
