/**
 * Codec records: the payload of a frame with FrameFlag.Records is a sequence of records, one per
 * page (4 KiB) or block, each with the encoding the codec chose for it. Layout (big-endian):
 *
 *   0 u8  encoding (ChunkEncoding)    4 u32 length: bytes the record covers once decoded
 *   1 u8  reserved (0)                8 u64 offset: absolute byte address in the target
 *   2 u16 reserved (0)               16 ... body, by encoding:
 *
 *   Raw     `length` bytes, verbatim
 *   Zero    nothing: the range reads as zeros
 *   Ref     u64 source offset, u32 CRC-32 of the content: copy `length` bytes the receiver already
 *           holds at the source offset (dedup); the CRC guards against a stale reference
 *   Xbzrle  u32 CRC-32 of the base (the receiver's current bytes at `offset`), u32 CRC-32 of the
 *           result, u32 delta length, delta bytes (XBZRLE runs against the base)
 */
export const RECORD_HEADER_BYTES = 16;

export const ChunkEncoding = {
  Raw: 0,
  Zero: 1,
  Ref: 2,
  Xbzrle: 3,
} as const;
export type ChunkEncoding = (typeof ChunkEncoding)[keyof typeof ChunkEncoding];

export const PAGE_SIZE = 4096;
