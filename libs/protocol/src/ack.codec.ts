import { ErrorCode } from './error-codes.js';
import { FrameError } from './errors.js';

/**
 * Receiver -> sender control record (32 bytes, big-endian):
 *   0 u16 magic 0x574b ('WK')   2 u8 version   3 u8 type   4 u32 reserved
 *   8 u64 nextSeq: every frame below it is durable at the receiver
 *  16 u64 cursor: the receiver's durable position in the source (end offset of the last applied frame)
 *  24 u64 received: the next sequence the receiver will accept (frames below it arrived, durable or not)
 */
export const AckType = {
  /** Cumulative acknowledgement after the data is durable. */
  Ack: 1,
  /** Re-request: something at or after nextSeq was lost or rejected; resend from nextSeq. */
  Nak: 2,
  /** Reply to a status request: the receiver's persisted watermark. */
  Status: 3,
  /** The receiver gave up on the stream (a frame kept failing to apply, or its storage failed). */
  Failed: 4,
} as const;
export type AckType = (typeof AckType)[keyof typeof AckType];

export interface AckMessage {
  type: AckType;
  nextSeq: number;
  cursor: number;
  /** Next sequence the receiver accepts; defaults to nextSeq. */
  received?: number;
}

const ACK_MAGIC = 0x574b;
const ACK_VERSION = 1;
export const ACK_BYTES = 32;

export function encodeAck(msg: AckMessage): Buffer {
  const out = Buffer.alloc(ACK_BYTES);
  out.writeUInt16BE(ACK_MAGIC, 0);
  out.writeUInt8(ACK_VERSION, 2);
  out.writeUInt8(msg.type, 3);
  out.writeUInt32BE(Math.floor(msg.nextSeq / 2 ** 32), 8);
  out.writeUInt32BE(msg.nextSeq >>> 0, 12);
  out.writeUInt32BE(Math.floor(msg.cursor / 2 ** 32), 16);
  out.writeUInt32BE(msg.cursor >>> 0, 20);
  const received = msg.received ?? msg.nextSeq;
  out.writeUInt32BE(Math.floor(received / 2 ** 32), 24);
  out.writeUInt32BE(received >>> 0, 28);
  return out;
}

export function decodeAck(data: Uint8Array): AckMessage {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length !== ACK_BYTES || buf.readUInt16BE(0) !== ACK_MAGIC) {
    throw new FrameError(ErrorCode.FrameTruncated, `not an ack record (${buf.length} bytes)`);
  }
  if (buf.readUInt8(2) !== ACK_VERSION) throw new FrameError(ErrorCode.FrameBadVersion, 'unsupported ack version');
  const type = buf.readUInt8(3);
  if (type !== AckType.Ack && type !== AckType.Nak && type !== AckType.Status && type !== AckType.Failed) {
    throw new FrameError(ErrorCode.FrameBadFlags, `unknown ack type ${type}`);
  }
  return {
    type,
    nextSeq: buf.readUInt32BE(8) * 2 ** 32 + buf.readUInt32BE(12),
    cursor: buf.readUInt32BE(16) * 2 ** 32 + buf.readUInt32BE(20),
    received: buf.readUInt32BE(24) * 2 ** 32 + buf.readUInt32BE(28),
  };
}
