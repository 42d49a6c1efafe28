import { type BlockExtent } from './reply.codec.js';

/**
 * What an NBD export serves. The server validates every request (bounds, flags, read-only) before
 * calling a backend, and orders overlapping requests (see RangeLock), so a backend only sees
 * in-range, non-overlapping concurrent calls.
 */
export interface ExportBackend {
  /** Export size in bytes. */
  readonly size: number;
  /** The backend cannot be written: the export is advertised read-only whatever its own option says. */
  readonly readOnly?: boolean;
  /**
   * Every connection shares one cache, so a FLUSH (or FUA) on one connection covers writes completed
   * on any other: the server then advertises NBD_FLAG_CAN_MULTI_CONN.
   */
  readonly multiConn?: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  /** Write `data` at `offset`; with `fua`, the data is on stable storage when the promise resolves. */
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  /** Everything written so far is on stable storage when the promise resolves. */
  flush(): Promise<void>;
  /** A hint that the range is no longer needed; its contents are unspecified afterwards. */
  trim(offset: number, length: number, fua: boolean): Promise<void>;
  /** The range reads as zeroes afterwards; with `noHole`, it must also stay allocated. */
  writeZeroes(offset: number, length: number, noHole: boolean, fua: boolean): Promise<void>;
  /**
   * `base:allocation` extents (AllocationFlag bits) starting at `offset`, covering at most `length`
   * bytes, at least one. Without it the server reports the whole range as allocated data.
   */
  blockStatus?(offset: number, length: number): Promise<BlockExtent[]>;
  close?(): Promise<void>;
}

/** What changed the export, as reported to `onWrite` and `beforeWriteReply`. */
export const WriteKind = {
  Write: 'write',
  Trim: 'trim',
  WriteZeroes: 'write-zeroes',
} as const;
export type WriteKind = (typeof WriteKind)[keyof typeof WriteKind];

/** One named export of an NbdServer, with the hooks the rest of wanmig attaches to it. */
export interface NbdExport {
  /** Name clients ask for ('' is also answered by the server's default export). */
  name: string;
  description?: string;
  backend: ExportBackend;
  /** Refuse WRITE, TRIM and WRITE_ZEROES with EPERM, and advertise NBD_FLAG_READ_ONLY. */
  readOnly?: boolean;
  /**
   * Called after every successful WRITE, TRIM or WRITE_ZEROES, once the backend has applied it and
   * before its reply is sent (this is where the dirty bitmap gets marked). A throw turns the reply
   * into EIO; the data stays applied.
   */
  onWrite?(offset: number, length: number, kind: WriteKind): void;
  /**
   * Awaited after `onWrite` and before the reply to a WRITE, TRIM or WRITE_ZEROES goes out: write
   * throttling delays replies here. A rejection turns the reply into EIO; the data stays applied.
   */
  beforeWriteReply?(offset: number, length: number, kind: WriteKind): Promise<void>;
}
