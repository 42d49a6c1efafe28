import { NbdProtocolError } from './errors.js';
import { NbdMagic, ReplyFlag, ReplyType, WireSize, isErrorReplyType } from './nbd.constants.js';
import { readU64, writeU64 } from './request.codec.js';

/** One `base:allocation` descriptor: `length` bytes with status `flags` (AllocationFlag bits). */
export interface BlockExtent {
  length: number;
  flags: number;
}

export interface StructuredReplyHeader {
  flags: number;
  type: number;
  cookie: bigint;
  length: number;
}

export interface SimpleReplyHeader {
  errno: number;
  cookie: bigint;
}

export interface ErrorChunk {
  errno: number;
  message: string;
  /** Present for NBD_REPLY_TYPE_ERROR_OFFSET. */
  offset?: number;
}

export function encodeSimpleReply(errno: number, cookie: bigint): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.SimpleReplyHeader);
  buf.writeUInt32BE(NbdMagic.SimpleReply, 0);
  buf.writeUInt32BE(errno, 4);
  buf.writeBigUInt64BE(cookie, 8);
  return buf;
}

/** Write a 20-byte structured chunk header into `buf` at `at`. */
function writeStructuredHeader(buf: Buffer, at: number, h: StructuredReplyHeader): void {
  buf.writeUInt32BE(NbdMagic.StructuredReply, at);
  buf.writeUInt16BE(h.flags, at + 4);
  buf.writeUInt16BE(h.type, at + 6);
  buf.writeBigUInt64BE(h.cookie, at + 8);
  buf.writeUInt32BE(h.length, at + 16);
}

export function encodeStructuredHeader(h: StructuredReplyHeader): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.StructuredReplyHeader);
  writeStructuredHeader(buf, 0, h);
  return buf;
}

/** Chunk header plus the 8-byte offset of an OFFSET_DATA chunk; the `dataLength` bytes of data follow it. */
export function encodeOffsetDataHead(cookie: bigint, offset: number, dataLength: number, done = true): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.StructuredReplyHeader + 8);
  writeStructuredHeader(buf, 0, {
    flags: done ? ReplyFlag.Done : 0,
    type: ReplyType.OffsetData,
    cookie,
    length: 8 + dataLength,
  });
  writeU64(buf, offset, WireSize.StructuredReplyHeader);
  return buf;
}

/** An OFFSET_HOLE chunk: `length` bytes at `offset` read as zeroes. */
export function encodeOffsetHoleChunk(cookie: bigint, offset: number, length: number, done = false): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.StructuredReplyHeader + 12);
  writeStructuredHeader(buf, 0, { flags: done ? ReplyFlag.Done : 0, type: ReplyType.OffsetHole, cookie, length: 12 });
  writeU64(buf, offset, 20);
  buf.writeUInt32BE(length, 28);
  return buf;
}

export function encodeNoneChunk(cookie: bigint): Buffer {
  return encodeStructuredHeader({ flags: ReplyFlag.Done, type: ReplyType.None, cookie, length: 0 });
}

/** An ERROR chunk (final) carrying `errno` and a human-readable message (truncated to 4096 bytes). */
export function encodeErrorChunk(cookie: bigint, errno: number, message = '', done = true): Buffer {
  const msg = Buffer.from(message, 'utf8').subarray(0, 4096);
  const buf = Buffer.allocUnsafe(WireSize.StructuredReplyHeader + 6 + msg.length);
  writeStructuredHeader(buf, 0, {
    flags: done ? ReplyFlag.Done : 0,
    type: ReplyType.Error,
    cookie,
    length: 6 + msg.length,
  });
  buf.writeUInt32BE(errno, 20);
  buf.writeUInt16BE(msg.length, 24);
  msg.copy(buf, 26);
  return buf;
}

/** A BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatusChunk(cookie: bigint, contextId: number, extents: BlockExtent[], done = true): Buffer {
  const payload = 4 + 8 * extents.length;
  const buf = Buffer.allocUnsafe(WireSize.StructuredReplyHeader + payload);
  writeStructuredHeader(buf, 0, {
    flags: done ? ReplyFlag.Done : 0,
    type: ReplyType.BlockStatus,
    cookie,
    length: payload,
  });
  buf.writeUInt32BE(contextId, 20);
  let at = 24;
  for (const e of extents) {
    buf.writeUInt32BE(e.length, at);
    buf.writeUInt32BE(e.flags, at + 4);
    at += 8;
  }
  return buf;
}

/** The 32-bit magic at the start of a reply. */
export function peekReplyMagic(buf: Buffer): number {
  return buf.readUInt32BE(0);
}

export function decodeSimpleReply(buf: Buffer): SimpleReplyHeader {
  const magic = buf.readUInt32BE(0);
  if (magic !== NbdMagic.SimpleReply) throw new NbdProtocolError(`bad simple reply magic 0x${magic.toString(16)}`);
  return { errno: buf.readUInt32BE(4), cookie: buf.readBigUInt64BE(8) };
}

export function decodeStructuredHeader(buf: Buffer): StructuredReplyHeader {
  const magic = buf.readUInt32BE(0);
  if (magic !== NbdMagic.StructuredReply) {
    throw new NbdProtocolError(`bad structured reply magic 0x${magic.toString(16)}`);
  }
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    length: buf.readUInt32BE(16),
  };
}

/** Decode the payload of an error chunk (any type with bit 15 set). */
export function decodeErrorPayload(type: number, payload: Buffer): ErrorChunk {
  if (!isErrorReplyType(type) || payload.length < 6) throw new NbdProtocolError('malformed error chunk');
  const errno = payload.readUInt32BE(0);
  const msgLen = payload.readUInt16BE(4);
  if (6 + msgLen > payload.length) throw new NbdProtocolError('error chunk message overruns its chunk');
  const message = payload.toString('utf8', 6, 6 + msgLen);
  if (type === ReplyType.ErrorOffset) {
    if (payload.length < 6 + msgLen + 8) throw new NbdProtocolError('ERROR_OFFSET chunk without offset');
    return { errno, message, offset: readU64(payload, 6 + msgLen) };
  }
  return { errno, message };
}

export function decodeBlockStatusPayload(payload: Buffer): { contextId: number; extents: BlockExtent[] } {
  if (payload.length < 12 || (payload.length - 4) % 8 !== 0) {
    throw new NbdProtocolError(`BLOCK_STATUS chunk of ${payload.length} bytes`);
  }
  const extents: BlockExtent[] = [];
  for (let at = 4; at < payload.length; at += 8) {
    extents.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
  }
  return { contextId: payload.readUInt32BE(0), extents };
}
