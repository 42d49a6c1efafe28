/** Error codes that cross NATS as `{ code, message }`. Anything not listed travels as INTERNAL. */
export const ErrorCode = {
  Internal: 'INTERNAL',
  InvalidRequest: 'INVALID_REQUEST',
  FrameTruncated: 'FRAME_TRUNCATED',
  FrameBadMagic: 'FRAME_BAD_MAGIC',
  FrameBadVersion: 'FRAME_BAD_VERSION',
  FrameBadFlags: 'FRAME_BAD_FLAGS',
  FrameBadKind: 'FRAME_BAD_KIND',
  FrameBadChecksum: 'FRAME_BAD_CHECKSUM',
  FrameTooLarge: 'FRAME_TOO_LARGE',
  FrameOutOfRange: 'FRAME_OUT_OF_RANGE',
  RecordCorrupt: 'RECORD_CORRUPT',
  BaseMismatch: 'BASE_MISMATCH',
  BitmapCorrupt: 'BITMAP_CORRUPT',
  StreamTimeout: 'STREAM_TIMEOUT',
  StreamClosed: 'STREAM_CLOSED',
  NotFound: 'NOT_FOUND',
  Conflict: 'CONFLICT',
  NoSpace: 'NO_SPACE',
  Unavailable: 'UNAVAILABLE',
  /** What arrived is not what was sent (a stream's segment, a RAM region, a disk region): nothing runs on it. */
  DigestMismatch: 'DIGEST_MISMATCH',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const known = new Set<string>(Object.values(ErrorCode));
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && known.has(value);
}
