import { CodecUsageError } from '../errors.js';
import { AdaptiveCompression, type AdaptiveCompressionOptions } from './adaptive.compression.js';
import { type Zstd } from './zstd.facade.js';

export interface CompressedPayload {
  /** What goes in the frame: the zstd frame, or the input unchanged. */
  payload: Buffer;
  /** Set the frame's Zstd flag when true. */
  zstd: boolean;
}

export interface BatchCompressorOptions {
  zstd: Zstd;
  /** Default: the Zstd instance's level (3 unless changed; use 1 on fast links). */
  level?: number;
  /** Keep the compressed form only when it saves at least this fraction. Default 0.03. */
  minSavings?: number;
  /** Batches shorter than this are sent as they are. Default 256 bytes. */
  minBytes?: number;
  /** Skip compression after repeated failures (default on); false compresses every batch. */
  adaptive?: AdaptiveCompressionOptions | false;
}

export interface CompressionStats {
  attempts: number;
  compressed: number;
  skipped: number;
  bytesIn: number;
  bytesOut: number;
}

/** Whole-batch zstd when it pays: `maybeCompress` returns the smaller of the two forms. */
export class BatchCompressor {
  readonly zstd: Zstd;
  readonly level: number;
  private readonly minSavings: number;
  private readonly minBytes: number;
  private readonly adaptive?: AdaptiveCompression;
  private readonly counters: CompressionStats = { attempts: 0, compressed: 0, skipped: 0, bytesIn: 0, bytesOut: 0 };

  constructor(options: BatchCompressorOptions) {
    this.zstd = options.zstd;
    this.level = options.level ?? options.zstd.level;
    this.minSavings = options.minSavings ?? 0.03;
    this.minBytes = options.minBytes ?? 256;
    if (!(this.minSavings >= 0 && this.minSavings < 1)) {
      throw new CodecUsageError(`minSavings must be in [0, 1), got ${this.minSavings}`);
    }
    if (options.adaptive !== false) this.adaptive = new AdaptiveCompression(options.adaptive);
  }

  maybeCompress(data: Buffer): CompressedPayload {
    this.counters.bytesIn += data.length;
    if (data.length < this.minBytes) return this.plain(data);
    if (this.adaptive && !this.adaptive.shouldTry()) {
      this.counters.skipped++;
      return this.plain(data);
    }
    this.counters.attempts++;
    const packed = this.zstd.compress(data, this.level);
    const worth = packed.length <= data.length * (1 - this.minSavings);
    this.adaptive?.report(worth);
    if (!worth) return this.plain(data);
    this.counters.compressed++;
    this.counters.bytesOut += packed.length;
    return { payload: packed, zstd: true };
  }

  get stats(): Readonly<CompressionStats> {
    return { ...this.counters };
  }

  private plain(data: Buffer): CompressedPayload {
    this.counters.bytesOut += data.length;
    return { payload: data, zstd: false };
  }
}
