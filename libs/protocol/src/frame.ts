/**
 * The binary frame every bulk byte travels in. Layout (big-endian, 64-byte header):
 *
 *   0  u16  magic 0x574d ('WM')         32 u64 sequence number
 *   2  u8   version                     40 u64 offset in the target space (disk or RAM byte address)
 *   3  u8   stream kind                 48 u32 length: bytes the frame covers once decoded
 *   4  u16  encoding flags              52 u32 payload length (bytes after the header)
 *   6  u16  header length (64)          56 u32 CRC-32 of header bytes 0..55 followed by the payload
 *   8  16B  migration id (UUID bytes)   60 u32 reserved (0)
 *   24 u32  stream id
 *   28 u32  reserved (0)
 */
export const FRAME_MAGIC = 0x574d;
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 64;
/** nats-server's default max_payload is 1 MiB; frames stay well under it. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024 - FRAME_HEADER_BYTES - 4096;

export const StreamKind = {
  Bulk: 1,
  Disk: 2,
  Memory: 3,
  DeviceState: 4,
} as const;
export type StreamKind = (typeof StreamKind)[keyof typeof StreamKind];
export const STREAM_KINDS: readonly number[] = Object.values(StreamKind);

export const FrameFlag = {
  /** The payload is a sequence of codec records (see libs/codec), not raw bytes. */
  Records: 1 << 0,
  /** The payload is one zstd frame; decompress before reading records or raw bytes. */
  Zstd: 1 << 1,
  /** The sender has nothing more to send on this stream. */
  End: 1 << 2,
  /** Make everything up to and including this frame durable before acknowledging it. */
  Barrier: 1 << 3,
  /**
   * The payload is the next segment of one zstd stream that runs through the frames of this stream (flushed at
   * each frame's end): decode in sequence order, each frame once. Never together with Zstd.
   */
  ZstdStream: 1 << 4,
  /**
   * The payload is the sha256 of the stream's decoded bytes from the previous Digest frame's offset (or 0) up to
   * this frame's offset; the frame covers no bytes (length 0). The receiver compares it with its own digest of what
   * it applied there and fails the stream on a difference: an end-to-end check of a relayed byte stream.
   */
  Digest: 1 << 5,
} as const;
export type FrameFlag = (typeof FrameFlag)[keyof typeof FrameFlag];
export const KNOWN_FRAME_FLAGS = Object.values(FrameFlag).reduce((all, bit) => all | bit, 0);

export interface FrameHeader {
  version: number;
  kind: StreamKind;
  flags: number;
  migrationId: string;
  streamId: number;
  seq: number;
  offset: number;
  length: number;
  payloadLength: number;
  checksum: number;
}

export interface Frame {
  header: FrameHeader;
  payload: Buffer;
}
