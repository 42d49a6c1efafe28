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
 *
 * Details fixed by libs/codec (the only writer and reader):
 * - Reserved bytes must be zero; a reader rejects anything else, so they stay free for flags.
 * - `length` is never 0. Raw and Zero records may cover many pages (the encoder merges neighbours,
 *   so a zero extent is one record); Ref and Xbzrle records cover one page (4 KiB) each.
 * - A batch has no count or trailer: it ends with its last record. The frame's payload length and
 *   CRC guard against truncation; a reader still rejects a batch cut inside a record.
 * - Xbzrle delta, as QEMU's (migration/xbzrle.c): pairs of uleb128 unchanged-run length, uleb128
 *   changed-run length, changed bytes (new values). Only the first unchanged run may be 0, no
 *   changed run is 0, a trailing unchanged run is omitted, lengths take at most 3 bytes.
 * - Records apply in order and a Ref may name bytes written by any earlier record, in the same
 *   batch or an earlier one. A reader that finds a Ref source or Xbzrle base with the wrong CRC
 *   skips the record when its range already holds the result (a replay) or when later records of
 *   the batch overwrite the whole range; otherwise it fails with BASE_MISMATCH.
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
