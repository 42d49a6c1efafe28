import { crc32 } from 'node:zlib';
import { ErrorCode } from './error-codes.js';
import { FrameError } from './errors.js';
import {
  FRAME_HEADER_BYTES,
  FrameFlag,
  FRAME_MAGIC,
  FRAME_VERSION,
  KNOWN_FRAME_FLAGS,
  MAX_FRAME_PAYLOAD,
  STREAM_KINDS,
  type Frame,
  type FrameHeader,
  type StreamKind,
} from './frame.js';
import { bytesToUuid, uuidToBytes } from './uuid.js';

export interface FrameFields {
  kind: StreamKind;
  flags: number;
  migrationId: string;
  streamId: number;
  seq: number;
  offset: number;
  length: number;
}

const CHECKED_HEADER_BYTES = 56;

/** Builds one frame: header and payload in a single buffer, ready to publish. */
export function encodeFrame(fields: FrameFields, payload: Uint8Array): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) {
    throw new FrameError(ErrorCode.FrameTooLarge, `payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  }
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt16BE(FRAME_MAGIC, 0);
  out.writeUInt8(FRAME_VERSION, 2);
  out.writeUInt8(fields.kind, 3);
  out.writeUInt16BE(fields.flags, 4);
  out.writeUInt16BE(FRAME_HEADER_BYTES, 6);
  uuidToBytes(fields.migrationId, out, 8);
  out.writeUInt32BE(fields.streamId, 24);
  out.writeUInt32BE(0, 28);
  writeU64(out, 32, fields.seq);
  writeU64(out, 40, fields.offset);
  out.writeUInt32BE(fields.length, 48);
  out.writeUInt32BE(payload.length, 52);
  out.set(payload, FRAME_HEADER_BYTES);
  out.writeUInt32BE(frameChecksum(out, payload.length), 56);
  out.writeUInt32BE(0, 60);
  return out;
}

/**
 * Parses and verifies a frame. Throws FrameError for anything truncated, of an unknown version,
 * kind or flag, or whose checksum does not match. The payload is a view into `data`.
 */
export function decodeFrame(data: Uint8Array): Frame {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < FRAME_HEADER_BYTES) {
    throw new FrameError(ErrorCode.FrameTruncated, `frame of ${buf.length} bytes is shorter than its header`);
  }
  if (buf.readUInt16BE(0) !== FRAME_MAGIC) throw new FrameError(ErrorCode.FrameBadMagic, 'not a wanmig frame');
  const version = buf.readUInt8(2);
  if (version !== FRAME_VERSION) {
    throw new FrameError(
      ErrorCode.FrameBadVersion,
      `frame version ${version} is not supported (want ${FRAME_VERSION})`,
    );
  }
  const migrationId = bytesToUuid(buf, 8);
  const seq = readU64(buf, 32);
  const kind = buf.readUInt8(3);
  if (!STREAM_KINDS.includes(kind)) {
    throw new FrameError(ErrorCode.FrameBadKind, `unknown stream kind ${kind}`, { migrationId, seq });
  }
  const flags = buf.readUInt16BE(4);
  if ((flags & ~KNOWN_FRAME_FLAGS) !== 0) {
    throw new FrameError(ErrorCode.FrameBadFlags, `unknown frame flags 0x${flags.toString(16)}`, { migrationId, seq });
  }
  if (flags & FrameFlag.Zstd && flags & FrameFlag.ZstdStream) {
    throw new FrameError(ErrorCode.FrameBadFlags, `frame ${seq} is flagged both Zstd and ZstdStream`, {
      migrationId,
      seq,
    });
  }
  if (flags & FrameFlag.Digest && flags & (FrameFlag.Records | FrameFlag.Zstd | FrameFlag.ZstdStream)) {
    throw new FrameError(ErrorCode.FrameBadFlags, `frame ${seq}: a Digest frame carries a bare digest`, {
      migrationId,
      seq,
    });
  }
  const headerLength = buf.readUInt16BE(6);
  const payloadLength = buf.readUInt32BE(52);
  if (headerLength !== FRAME_HEADER_BYTES || buf.length !== FRAME_HEADER_BYTES + payloadLength) {
    throw new FrameError(
      ErrorCode.FrameTruncated,
      `frame is ${buf.length} bytes, header says ${headerLength} + ${payloadLength}`,
      { migrationId, seq },
    );
  }
  const checksum = buf.readUInt32BE(56);
  if (frameChecksum(buf, payloadLength) !== checksum) {
    throw new FrameError(ErrorCode.FrameBadChecksum, `frame ${seq} failed its checksum`, { migrationId, seq });
  }
  const header: FrameHeader = {
    version,
    kind: kind as StreamKind,
    flags,
    migrationId,
    streamId: buf.readUInt32BE(24),
    seq,
    offset: readU64(buf, 40),
    length: buf.readUInt32BE(48),
    payloadLength,
    checksum,
  };
  return { header, payload: buf.subarray(FRAME_HEADER_BYTES) };
}

function frameChecksum(buf: Buffer, payloadLength: number): number {
  const head = crc32(buf.subarray(0, CHECKED_HEADER_BYTES));
  return crc32(buf.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + payloadLength), head);
}

function writeU64(buf: Buffer, at: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a u64-safe integer: ${value}`);
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * 2 ** 32 + buf.readUInt32BE(at + 4);
}
