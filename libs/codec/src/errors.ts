import { ErrorCode, WanmigError } from '@wanmig/protocol';

export interface CodecErrorFields {
  /** Target byte offset of the record at fault. */
  offset?: number;
  /** Position of the record in its batch (0-based). */
  recordIndex?: number;
  cause?: unknown;
}

/** Base of every codec error: carries the offset and record index when a record is at fault. */
export class CodecError extends WanmigError {
  readonly offset?: number;
  readonly recordIndex?: number;
  constructor(code: ErrorCode, message: string, fields: CodecErrorFields = {}) {
    super(code, message, { cause: fields.cause });
    this.name = 'CodecError';
    this.offset = fields.offset;
    this.recordIndex = fields.recordIndex;
  }
}

/** A record batch that does not parse or whose decoded result fails its CRC (RECORD_CORRUPT). */
export class RecordCorruptError extends CodecError {
  constructor(message: string, fields: CodecErrorFields = {}) {
    super(ErrorCode.RecordCorrupt, message, fields);
    this.name = 'RecordCorruptError';
  }
}

/**
 * The receiver's bytes are not what the sender based a record on (BASE_MISMATCH): the source of a
 * Ref or the base of an Xbzrle record has another CRC. Sender and receiver disagree about the
 * target's content; the sender must forget its caches and resend those ranges raw.
 */
export class BaseMismatchError extends CodecError {
  readonly expectedCrc: number;
  readonly actualCrc: number;
  constructor(message: string, fields: CodecErrorFields & { expectedCrc: number; actualCrc: number }) {
    super(ErrorCode.BaseMismatch, message, fields);
    this.name = 'BaseMismatchError';
    this.expectedCrc = fields.expectedCrc;
    this.actualCrc = fields.actualCrc;
  }
}

/** A record (or a Ref's source) reaching past the end of the target (FRAME_OUT_OF_RANGE). */
export class RecordOutOfRangeError extends CodecError {
  readonly length: number;
  readonly targetSize: number;
  constructor(fields: CodecErrorFields & { offset: number; length: number; targetSize: number }) {
    super(
      ErrorCode.FrameOutOfRange,
      `range [${fields.offset}, +${fields.length}) reaches past the target's ${fields.targetSize} bytes`,
      fields,
    );
    this.name = 'RecordOutOfRangeError';
    this.length = fields.length;
    this.targetSize = fields.targetSize;
  }
}

/** The caller handed the codec something it cannot encode (negative offset, empty chunk, bad option). */
export class CodecUsageError extends CodecError {
  constructor(message: string, fields: CodecErrorFields = {}) {
    super(ErrorCode.InvalidRequest, message, fields);
    this.name = 'CodecUsageError';
  }
}

/**
 * zstd failed: a payload that is not one valid zstd frame of a known, acceptable size
 * (RECORD_CORRUPT), or a backend that cannot be loaded or fails to compress (INTERNAL).
 */
export class ZstdError extends CodecError {
  readonly backend?: string;
  constructor(code: ErrorCode, message: string, fields: CodecErrorFields & { backend?: string } = {}) {
    super(code, message, fields);
    this.name = 'ZstdError';
    this.backend = fields.backend;
  }
}
