export * from './errors.js';
export {
  MAX_BLOCK_COUNT,
  blocksTouching,
  blocksWithin,
  checkGeometry,
  extentToBytes,
  geometryForSize,
  sameGeometry,
  type BlockGeometry,
  type ByteRange,
  type Extent,
} from './block.geometry.js';
export { type ExtentOptions } from './extent.iterator.js';
export { BLOCK_MAP_HEADER_BYTES, BLOCK_MAP_MAGIC, BLOCK_MAP_VERSION } from './block-map.serializer.js';
export { BlockMap, type ByteRangeOptions } from './block.map.js';
