import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** Base of every block-map error. */
export class BlockMapError extends WanmigError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'BlockMapError';
  }
}

/** A block index, block range or byte range outside the map. */
export class BlockRangeError extends BlockMapError {
  readonly start: number;
  readonly count: number;
  readonly blockCount: number;
  constructor(fields: { start: number; count: number; blockCount: number; unit?: 'block' | 'byte'; cause?: unknown }) {
    const unit = fields.unit ?? 'block';
    super(
      ErrorCode.InvalidRequest,
      `${unit} range [${fields.start}, +${fields.count}) is outside a map of ${fields.blockCount} blocks`,
      { cause: fields.cause },
    );
    this.name = 'BlockRangeError';
    this.start = fields.start;
    this.count = fields.count;
    this.blockCount = fields.blockCount;
  }
}

/**
 * Invalid geometry (INVALID_REQUEST), or two maps, or a map and what a caller expected, whose
 * geometries differ (CONFLICT).
 */
export class BlockGeometryError extends BlockMapError {
  constructor(message: string, options?: { mismatch?: boolean; cause?: unknown }) {
    super(options?.mismatch ? ErrorCode.Conflict : ErrorCode.InvalidRequest, message, { cause: options?.cause });
    this.name = 'BlockGeometryError';
  }
}

/** Serialised bytes that are not a valid block map (bad magic, version, checksum or bitmap). */
export class BlockMapCorruptError extends BlockMapError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.BitmapCorrupt, message, options);
    this.name = 'BlockMapCorruptError';
  }
}
