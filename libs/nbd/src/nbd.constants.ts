/**
 * Wire constants of the NBD protocol (fixed newstyle handshake, simple and structured replies,
 * `base:allocation` block status), named as in `doc/proto.md` of NetworkBlockDevice/nbd.
 */

/** Magic numbers. 64-bit magics are bigints; the 32-bit ones are plain numbers. */
export const NbdMagic = {
  /** 'NBDMAGIC', first 8 bytes the server sends. */
  Init: 0x4e42444d41474943n,
  /** 'IHAVEOPT': second server magic, and the prefix of every option the client sends. */
  Opt: 0x49484156454f5054n,
  /** Prefix of every option reply. */
  OptReply: 0x3e889045565a9n,
  Request: 0x25609513,
  SimpleReply: 0x67446698,
  StructuredReply: 0x668e33ef,
} as const;

/** Handshake flags (16 bits, server → client). */
export const HandshakeFlag = {
  FixedNewstyle: 1 << 0,
  NoZeroes: 1 << 1,
} as const;
export type HandshakeFlag = (typeof HandshakeFlag)[keyof typeof HandshakeFlag];

/** Client flags (32 bits, client → server). */
export const ClientFlag = {
  FixedNewstyle: 1 << 0,
  NoZeroes: 1 << 1,
} as const;
export type ClientFlag = (typeof ClientFlag)[keyof typeof ClientFlag];

/** Transmission flags (16 bits), sent with the export size. */
export const TransmissionFlag = {
  HasFlags: 1 << 0,
  ReadOnly: 1 << 1,
  SendFlush: 1 << 2,
  SendFua: 1 << 3,
  Rotational: 1 << 4,
  SendTrim: 1 << 5,
  SendWriteZeroes: 1 << 6,
  SendDf: 1 << 7,
  CanMultiConn: 1 << 8,
  SendResize: 1 << 9,
  SendCache: 1 << 10,
  SendFastZero: 1 << 11,
} as const;
export type TransmissionFlag = (typeof TransmissionFlag)[keyof typeof TransmissionFlag];

/** Option codes (client → server during the handshake). */
export const NbdOption = {
  ExportName: 1,
  Abort: 2,
  List: 3,
  PeekExport: 4,
  StartTls: 5,
  Info: 6,
  Go: 7,
  StructuredReply: 8,
  ListMetaContext: 9,
  SetMetaContext: 10,
  ExtendedHeaders: 11,
} as const;
export type NbdOption = (typeof NbdOption)[keyof typeof NbdOption];

/** Option reply types. Error replies have bit 31 set. */
export const OptionReply = {
  Ack: 1,
  Server: 2,
  Info: 3,
  MetaContext: 4,
  ErrUnsup: 0x80000001,
  ErrPolicy: 0x80000002,
  ErrInvalid: 0x80000003,
  ErrPlatform: 0x80000004,
  ErrTlsReqd: 0x80000005,
  ErrUnknown: 0x80000006,
  ErrShutdown: 0x80000007,
  ErrBlockSizeReqd: 0x80000008,
  ErrTooBig: 0x80000009,
} as const;
export type OptionReply = (typeof OptionReply)[keyof typeof OptionReply];

export function isOptionReplyError(type: number): boolean {
  return (type & 0x80000000) !== 0;
}

/** Information types inside `NBD_REP_INFO` (answers to NBD_OPT_INFO / NBD_OPT_GO). */
export const InfoType = {
  Export: 0,
  Name: 1,
  Description: 2,
  BlockSize: 3,
} as const;
export type InfoType = (typeof InfoType)[keyof typeof InfoType];

/** Request types (transmission phase). */
export const NbdCommand = {
  Read: 0,
  Write: 1,
  Disc: 2,
  Flush: 3,
  Trim: 4,
  Cache: 5,
  WriteZeroes: 6,
  BlockStatus: 7,
} as const;
export type NbdCommand = (typeof NbdCommand)[keyof typeof NbdCommand];

/** Human names of the request types, for messages and errors. */
export const NBD_COMMAND_NAMES: Readonly<Record<number, string>> = {
  [NbdCommand.Read]: 'READ',
  [NbdCommand.Write]: 'WRITE',
  [NbdCommand.Disc]: 'DISC',
  [NbdCommand.Flush]: 'FLUSH',
  [NbdCommand.Trim]: 'TRIM',
  [NbdCommand.Cache]: 'CACHE',
  [NbdCommand.WriteZeroes]: 'WRITE_ZEROES',
  [NbdCommand.BlockStatus]: 'BLOCK_STATUS',
};

export function commandName(type: number): string {
  return NBD_COMMAND_NAMES[type] ?? `CMD_${type}`;
}

/** Command flags (16 bits, per request). */
export const CommandFlag = {
  Fua: 1 << 0,
  NoHole: 1 << 1,
  Df: 1 << 2,
  ReqOne: 1 << 3,
  FastZero: 1 << 4,
} as const;
export type CommandFlag = (typeof CommandFlag)[keyof typeof CommandFlag];

/** Structured reply flags. */
export const ReplyFlag = {
  Done: 1 << 0,
} as const;

/** Structured reply chunk types. Error chunk types have bit 15 set. */
export const ReplyType = {
  None: 0,
  OffsetData: 1,
  OffsetHole: 2,
  BlockStatus: 5,
  Error: 0x8001,
  ErrorOffset: 0x8002,
} as const;
export type ReplyType = (typeof ReplyType)[keyof typeof ReplyType];

export function isErrorReplyType(type: number): boolean {
  return (type & 0x8000) !== 0;
}

/** Error values of the error field of replies. */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrno = (typeof NbdErrno)[keyof typeof NbdErrno];

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(NbdErrno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** `base:allocation` status flags. */
export const AllocationFlag = {
  Hole: 1 << 0,
  Zero: 1 << 1,
} as const;
export type AllocationFlag = (typeof AllocationFlag)[keyof typeof AllocationFlag];

/** Meta contexts this implementation knows. */
export const MetaContext = {
  BaseAllocation: 'base:allocation',
} as const;
export type MetaContext = (typeof MetaContext)[keyof typeof MetaContext];

/** Fixed sizes on the wire, in bytes. */
export const WireSize = {
  RequestHeader: 28,
  SimpleReplyHeader: 16,
  StructuredReplyHeader: 20,
  OptionHeader: 16,
  OptionReplyHeader: 20,
  /** Zero padding after NBD_OPT_EXPORT_NAME's answer unless NO_ZEROES was negotiated. */
  ExportNamePadding: 124,
} as const;

/** Defaults this server advertises and enforces. */
export const NBD_DEFAULT_MIN_BLOCK = 1;
export const NBD_DEFAULT_PREFERRED_BLOCK = 4096;
/** Largest READ/WRITE payload accepted (2^25, the size proto.md says no client should exceed). */
export const NBD_DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
/** Largest option payload accepted in the handshake before the server hangs up. */
export const NBD_MAX_OPTION_LENGTH = 64 * 1024;
/** Strings (export names, queries, messages) may be at most this long. */
export const NBD_MAX_STRING = 4096;
/** A block status chunk carries at most this many descriptors. */
export const NBD_MAX_EXTENTS = 1 << 20;
/** The context id this server assigns to `base:allocation`. */
export const BASE_ALLOCATION_CONTEXT_ID = 1;
/** IANA port of NBD. */
export const NBD_DEFAULT_PORT = 10809;
