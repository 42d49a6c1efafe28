import { NbdProtocolError } from './errors.js';
import { InfoType, NBD_MAX_STRING, NbdMagic, WireSize } from './nbd.constants.js';
import { readU64, writeU64 } from './request.codec.js';

/** Header of an option the client sends: IHAVEOPT, option code, data length. */
export interface OptionHeader {
  option: number;
  length: number;
}

/** Header of an option reply the server sends. */
export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO. */
export interface GoRequest {
  name: string;
  infos: number[];
}

/** Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  name: string;
  queries: string[];
}

/** One NBD_REP_INFO payload, decoded. */
export type ExportInfo =
  | { type: typeof InfoType.Export; size: number; flags: number }
  | { type: typeof InfoType.Name; name: string }
  | { type: typeof InfoType.Description; description: string }
  | { type: typeof InfoType.BlockSize; minimum: number; preferred: number; maximum: number }
  | { type: number; raw: Buffer };

/** The 18 bytes the server opens with: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const buf = Buffer.allocUnsafe(18);
  buf.writeBigUInt64BE(NbdMagic.Init, 0);
  buf.writeBigUInt64BE(NbdMagic.Opt, 8);
  buf.writeUInt16BE(handshakeFlags, 16);
  return buf;
}

/** Parse the server greeting; returns the handshake flags. */
export function decodeServerGreeting(buf: Buffer): number {
  if (buf.readBigUInt64BE(0) !== NbdMagic.Init) throw new NbdProtocolError('server greeting lacks NBDMAGIC');
  const second = buf.readBigUInt64BE(8);
  if (second !== NbdMagic.Opt) {
    throw new NbdProtocolError('server does not speak newstyle negotiation (oldstyle is not supported)');
  }
  return buf.readUInt16BE(16);
}

export function encodeOptionRequest(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.OptionHeader + data.length);
  buf.writeBigUInt64BE(NbdMagic.Opt, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, 16);
  return buf;
}

export function decodeOptionHeader(buf: Buffer): OptionHeader {
  if (buf.readBigUInt64BE(0) !== NbdMagic.Opt) throw new NbdProtocolError('option without IHAVEOPT magic');
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.OptionReplyHeader + data.length);
  buf.writeBigUInt64BE(NbdMagic.OptReply, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(type >>> 0, 12);
  buf.writeUInt32BE(data.length, 16);
  data.copy(buf, 20);
  return buf;
}

export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  if (buf.readBigUInt64BE(0) !== NbdMagic.OptReply) throw new NbdProtocolError('option reply with bad magic');
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

/** Answer to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(10 + (noZeroes ? 0 : WireSize.ExportNamePadding));
  writeU64(buf, size, 0);
  buf.writeUInt16BE(flags, 8);
  return buf;
}

export function encodeInfoExport(size: number, flags: number): Buffer {
  const buf = Buffer.allocUnsafe(12);
  buf.writeUInt16BE(InfoType.Export, 0);
  writeU64(buf, size, 2);
  buf.writeUInt16BE(flags, 10);
  return buf;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const buf = Buffer.allocUnsafe(14);
  buf.writeUInt16BE(InfoType.BlockSize, 0);
  buf.writeUInt32BE(minimum, 2);
  buf.writeUInt32BE(preferred, 6);
  buf.writeUInt32BE(maximum, 10);
  return buf;
}

export function encodeInfoString(type: typeof InfoType.Name | typeof InfoType.Description, text: string): Buffer {
  const str = Buffer.from(text, 'utf8');
  const buf = Buffer.allocUnsafe(2 + str.length);
  buf.writeUInt16BE(type, 0);
  str.copy(buf, 2);
  return buf;
}

export function decodeInfo(payload: Buffer): ExportInfo {
  if (payload.length < 2) throw new NbdProtocolError('NBD_REP_INFO shorter than 2 bytes');
  const type = payload.readUInt16BE(0);
  switch (type) {
    case InfoType.Export:
      if (payload.length !== 12) throw new NbdProtocolError(`NBD_INFO_EXPORT of ${payload.length} bytes`);
      return { type, size: readU64(payload, 2), flags: payload.readUInt16BE(10) };
    case InfoType.BlockSize:
      if (payload.length !== 14) throw new NbdProtocolError(`NBD_INFO_BLOCK_SIZE of ${payload.length} bytes`);
      return {
        type,
        minimum: payload.readUInt32BE(2),
        preferred: payload.readUInt32BE(6),
        maximum: payload.readUInt32BE(10),
      };
    case InfoType.Name:
      return { type, name: payload.toString('utf8', 2) };
    case InfoType.Description:
      return { type, description: payload.toString('utf8', 2) };
    default:
      return { type, raw: payload.subarray(2) };
  }
}

/** NBD_REP_SERVER payload: name length, name, optional description. */
export function encodeServerEntry(name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const buf = Buffer.allocUnsafe(4 + n.length + d.length);
  buf.writeUInt32BE(n.length, 0);
  n.copy(buf, 4);
  d.copy(buf, 4 + n.length);
  return buf;
}

export function decodeServerEntry(payload: Buffer): { name: string; description: string } {
  if (payload.length < 4) throw new NbdProtocolError('NBD_REP_SERVER shorter than 4 bytes');
  const len = payload.readUInt32BE(0);
  if (len > payload.length - 4) throw new NbdProtocolError('NBD_REP_SERVER name overruns the reply');
  return { name: payload.toString('utf8', 4, 4 + len), description: payload.toString('utf8', 4 + len) };
}

/** NBD_REP_META_CONTEXT payload: context id then name. */
export function encodeMetaContextEntry(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const buf = Buffer.allocUnsafe(4 + n.length);
  buf.writeUInt32BE(id, 0);
  n.copy(buf, 4);
  return buf;
}

export function decodeMetaContextEntry(payload: Buffer): { id: number; name: string } {
  if (payload.length < 4) throw new NbdProtocolError('NBD_REP_META_CONTEXT shorter than 4 bytes');
  return { id: payload.readUInt32BE(0), name: payload.toString('utf8', 4) };
}

/** A sequential parser over option data that throws NbdProtocolError when a field overruns it. */
class OptionDataCursor {
  private at = 0;
  constructor(private readonly data: Buffer) {}
  get remaining(): number {
    return this.data.length - this.at;
  }
  u16(): number {
    this.need(2);
    const v = this.data.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.data.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  string(len: number): string {
    if (len > NBD_MAX_STRING) throw new NbdProtocolError(`string of ${len} bytes exceeds ${NBD_MAX_STRING}`);
    this.need(len);
    const s = this.data.toString('utf8', this.at, this.at + len);
    this.at += len;
    return s;
  }
  private need(n: number): void {
    if (this.at + n > this.data.length) throw new NbdProtocolError('option data is shorter than its fields');
  }
}

export function encodeGoData(req: GoRequest): Buffer {
  const name = Buffer.from(req.name, 'utf8');
  const buf = Buffer.allocUnsafe(4 + name.length + 2 + 2 * req.infos.length);
  buf.writeUInt32BE(name.length, 0);
  name.copy(buf, 4);
  let at = 4 + name.length;
  buf.writeUInt16BE(req.infos.length, at);
  at += 2;
  for (const info of req.infos) {
    buf.writeUInt16BE(info, at);
    at += 2;
  }
  return buf;
}

/** Parse NBD_OPT_INFO / NBD_OPT_GO data; the lengths must add up exactly. */
export function decodeGoData(data: Buffer): GoRequest {
  const cur = new OptionDataCursor(data);
  const name = cur.string(cur.u32());
  const count = cur.u16();
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(cur.u16());
  if (cur.remaining !== 0) throw new NbdProtocolError('trailing bytes after the information requests');
  return { name, infos };
}

export function encodeMetaContextData(req: MetaContextRequest): Buffer {
  const name = Buffer.from(req.name, 'utf8');
  const queries = req.queries.map((q) => Buffer.from(q, 'utf8'));
  const size = 4 + name.length + 4 + queries.reduce((sum, q) => sum + 4 + q.length, 0);
  const buf = Buffer.allocUnsafe(size);
  buf.writeUInt32BE(name.length, 0);
  name.copy(buf, 4);
  let at = 4 + name.length;
  buf.writeUInt32BE(queries.length, at);
  at += 4;
  for (const q of queries) {
    buf.writeUInt32BE(q.length, at);
    q.copy(buf, at + 4);
    at += 4 + q.length;
  }
  return buf;
}

/** Parse NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data. */
export function decodeMetaContextData(data: Buffer): MetaContextRequest {
  const cur = new OptionDataCursor(data);
  const name = cur.string(cur.u32());
  const count = cur.u32();
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(cur.string(cur.u32()));
  if (cur.remaining !== 0) throw new NbdProtocolError('trailing bytes after the queries');
  return { name, queries };
}
