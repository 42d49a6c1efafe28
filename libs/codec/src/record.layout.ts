import { ChunkEncoding, RECORD_HEADER_BYTES } from '@wanmig/protocol';

/** Body of a Ref record: u64 source offset, u32 CRC-32 of the content. */
export const REF_BODY_BYTES = 12;
/** Fixed part of an Xbzrle body: u32 base CRC, u32 result CRC, u32 delta length. */
export const XBZRLE_BODY_BYTES = 12;
/** Longest record the encoder builds by merging neighbours (Zero extents, Raw runs); u32 allows more. */
export const MAX_MERGED_RECORD_LENGTH = 2 ** 31;

export const ENCODING_NAMES = {
  [ChunkEncoding.Raw]: 'raw',
  [ChunkEncoding.Zero]: 'zero',
  [ChunkEncoding.Ref]: 'ref',
  [ChunkEncoding.Xbzrle]: 'xbzrle',
} as const satisfies Record<ChunkEncoding, string>;
export type EncodingName = (typeof ENCODING_NAMES)[ChunkEncoding];

export { RECORD_HEADER_BYTES };
