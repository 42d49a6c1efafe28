import { NbdProtocolError } from './errors.js';
import { NbdMagic, WireSize } from './nbd.constants.js';

/** A transmission-phase request header (the WRITE payload, if any, follows it on the wire). */
export interface NbdRequestHeader {
  flags: number;
  type: number;
  /** Opaque 64-bit value the reply echoes (called "handle" in older versions of the spec). */
  cookie: bigint;
  offset: number;
  length: number;
}

const TWO_32 = 0x1_0000_0000;

/** Read a 64-bit unsigned offset as a number; values beyond 2^53 lose precision but stay beyond any export. */
export function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}

export function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32) >>> 0, at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Encode a 28-byte request header. */
export function encodeRequestHeader(req: NbdRequestHeader): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.RequestHeader);
  buf.writeUInt32BE(NbdMagic.Request, 0);
  buf.writeUInt16BE(req.flags, 4);
  buf.writeUInt16BE(req.type, 6);
  buf.writeBigUInt64BE(req.cookie, 8);
  writeU64(buf, req.offset, 16);
  buf.writeUInt32BE(req.length, 24);
  return buf;
}

/** Decode a 28-byte request header; a wrong magic is a protocol violation. */
export function decodeRequestHeader(buf: Buffer): NbdRequestHeader {
  if (buf.length < WireSize.RequestHeader) throw new NbdProtocolError(`request header of ${buf.length} bytes`);
  const magic = buf.readUInt32BE(0);
  if (magic !== NbdMagic.Request) throw new NbdProtocolError(`bad request magic 0x${magic.toString(16)}`);
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offset: readU64(buf, 16),
    length: buf.readUInt32BE(24),
  };
}
