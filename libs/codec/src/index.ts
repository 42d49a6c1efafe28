export * from './errors.js';
export { ZERO_PAGE, isZero } from './zero.detect.js';
export { hashPage } from './page.hash.js';
export { DEFAULT_DEDUP_ENTRIES, DedupIndex, type DedupIndexOptions } from './dedup.index.js';
export { DEFAULT_XBZRLE_CACHE_BYTES, SentPageCache, type CachedPage } from './sent-page.cache.js';
export { XBZRLE_MAX_LENGTH, XBZRLE_MERGE_GAP, xbzrleApply, xbzrleCheck, xbzrleEncode } from './xbzrle.codec.js';
export { ZstdBackendName, type ZstdBackend } from './zstd/zstd.backend.js';
export { zstdContentSize } from './zstd/zstd-frame.header.js';
export {
  DEFAULT_ZSTD_MAX_OUTPUT,
  ZSTD_LEVEL_FAST,
  ZSTD_LEVEL_WAN,
  Zstd,
  type ZstdLoadOptions,
} from './zstd/zstd.facade.js';
export {
  ZSTD_STREAM_LEVEL,
  ZSTD_STREAM_WINDOW_LOG,
  ZstdStreamDecoder,
  ZstdStreamEncoder,
  type ZstdStreamOptions,
} from './zstd/zstd.stream.js';
export { AdaptiveCompression, type AdaptiveCompressionOptions } from './zstd/adaptive.compression.js';
export {
  BatchCompressor,
  type BatchCompressorOptions,
  type CompressedPayload,
  type CompressionStats,
} from './zstd/batch.compressor.js';
export { ENCODING_NAMES, REF_BODY_BYTES, XBZRLE_BODY_BYTES, type EncodingName } from './record.layout.js';
export { RecordWriter } from './record.writer.js';
export { parseRecords, type ParsedRecord } from './record.reader.js';
export { addStats, emptyStats, type BatchStats, type EncodingStats } from './batch.stats.js';
export { CODEC_OFF, ChunkEncoder, type ChunkEncoderOptions, type EncodedBatch } from './chunk.encoder.js';
export { ChunkDecoder, type ApplyResult, type ChunkDecoderOptions } from './chunk.decoder.js';
export { BufferTarget, type ChunkTarget } from './chunk.target.js';
export { createRng, type Rng } from './dataset/seeded.rng.js';
export { fillText } from './dataset/text.generator.js';
export {
  DEFAULT_MIX,
  PageGenerator,
  PageKind,
  generateMixedPage,
  mixedDataset,
  mutatePage,
  type DatasetChunk,
  type DatasetMix,
  type MixedDatasetOptions,
} from './dataset/mixed.dataset.js';
