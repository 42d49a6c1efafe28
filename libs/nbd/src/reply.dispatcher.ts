import { type ByteReader } from './byte.reader.js';
import { NbdCommandError, NbdProtocolError } from './errors.js';
import {
  NBD_DEFAULT_MAX_PAYLOAD,
  NbdCommand,
  NbdMagic,
  ReplyFlag,
  ReplyType,
  WireSize,
  isErrorReplyType,
} from './nbd.constants.js';
import {
  type BlockExtent,
  decodeBlockStatusPayload,
  decodeErrorPayload,
  decodeSimpleReply,
  decodeStructuredHeader,
} from './reply.codec.js';
import { readU64 } from './request.codec.js';

/** What a request resolves with: READ data, BLOCK_STATUS extents, or nothing. */
export type ReplyValue = Buffer | BlockExtent[] | undefined;

interface Pending {
  type: number;
  offset: number;
  length: number;
  resolve(value: ReplyValue): void;
  reject(err: Error): void;
  /** Structured READ being assembled from several chunks. */
  buffer?: Buffer;
  covered: number;
  extents?: BlockExtent[];
  error?: { errno: number; message: string };
}

/** Largest structured reply payload accepted: a full READ plus overhead, or a full extent list. */
const MAX_REPLY_PAYLOAD = Math.max(NBD_DEFAULT_MAX_PAYLOAD + 64, 4 + 8 * (1 << 20));

/**
 * Client side of the transmission phase's replies: reads simple replies and structured chunks,
 * matches them to requests by cookie, assembles READ data (zero-copy when one chunk carries it
 * all) and settles each request once its reply is complete.
 */
export class ReplyDispatcher {
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly reader: ByteReader,
    private readonly session: { structuredReplies: boolean; baseAllocationId?: number },
    private readonly onSettled: () => void,
  ) {}

  /** Requests awaiting their reply. */
  get size(): number {
    return this.pending.size;
  }

  has(cookie: number): boolean {
    return this.pending.has(cookie);
  }

  /** Expect a reply for `cookie`. */
  expect(cookie: number, req: { type: number; offset: number; length: number }): Promise<ReplyValue> {
    return new Promise<ReplyValue>((resolve, reject) => {
      this.pending.set(cookie, { ...req, resolve, reject, covered: 0 });
    });
  }

  /** Reject every request awaiting a reply. */
  failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Read replies until the connection ends (rejects with why) or the server breaks the protocol. */
  async run(): Promise<never> {
    for (;;) {
      const head =
        this.reader.tryRead(WireSize.SimpleReplyHeader) ?? (await this.reader.readExact(WireSize.SimpleReplyHeader));
      const magic = head.readUInt32BE(0);
      if (magic === NbdMagic.SimpleReply) await this.onSimpleReply(head);
      else if (magic === NbdMagic.StructuredReply) await this.onStructuredChunk(head);
      else throw new NbdProtocolError(`bad reply magic 0x${magic.toString(16)}`);
    }
  }
  private take(cookie: bigint): Pending {
    const id = Number(cookie);
    const p = this.pending.get(id);
    if (!p) throw new NbdProtocolError(`reply for unknown cookie ${cookie}`);
    return p;
  }

  private settle(cookie: bigint, p: Pending, outcome: { value?: ReplyValue; error?: Error }): void {
    this.pending.delete(Number(cookie));
    if (outcome.error) p.reject(outcome.error);
    else p.resolve(outcome.value);
    this.onSettled();
  }

  private async onSimpleReply(head: Buffer): Promise<void> {
    const { errno, cookie } = decodeSimpleReply(head);
    const p = this.take(cookie);
    if (errno !== 0) {
      this.settle(cookie, p, { error: this.commandError(p, errno) });
      return;
    }
    if (p.type === NbdCommand.Read) {
      if (this.session.structuredReplies) throw new NbdProtocolError('simple reply to READ after structured replies');
      const data = this.reader.tryRead(p.length) ?? (await this.reader.readExact(p.length));
      this.settle(cookie, p, { value: data });
      return;
    }
    this.settle(cookie, p, {});
  }

  private async onStructuredChunk(first: Buffer): Promise<void> {
    const rest = this.reader.tryRead(4) ?? (await this.reader.readExact(4));
    const h = decodeStructuredHeader(Buffer.concat([first, rest]));
    if (!this.session.structuredReplies) throw new NbdProtocolError('structured reply without negotiation');
    if (h.length > MAX_REPLY_PAYLOAD) throw new NbdProtocolError(`structured chunk of ${h.length} bytes`);
    const p = this.take(h.cookie);
    const payload = this.reader.tryRead(h.length) ?? (await this.reader.readExact(h.length));
    const done = (h.flags & ReplyFlag.Done) !== 0;
    let whole: Buffer | undefined;
    if (isErrorReplyType(h.type)) {
      const e = decodeErrorPayload(h.type, payload);
      p.error ??= { errno: e.errno, message: e.message };
    } else if (h.type === ReplyType.OffsetData && p.type === NbdCommand.Read) {
      if (payload.length < 9) throw new NbdProtocolError('OFFSET_DATA chunk without data');
      const at = readU64(payload, 0) - p.offset;
      const data = payload.subarray(8);
      if (at < 0 || at + data.length > p.length) throw new NbdProtocolError('OFFSET_DATA outside the request');
      if (done && at === 0 && data.length === p.length && !p.buffer) whole = data;
      else data.copy((p.buffer ??= Buffer.alloc(p.length)), at);
      p.covered += data.length;
    } else if (h.type === ReplyType.OffsetHole && p.type === NbdCommand.Read) {
      if (payload.length !== 12) throw new NbdProtocolError('OFFSET_HOLE chunk of wrong size');
      const at = readU64(payload, 0) - p.offset;
      const len = payload.readUInt32BE(8);
      if (at < 0 || at + len > p.length) throw new NbdProtocolError('OFFSET_HOLE outside the request');
      (p.buffer ??= Buffer.alloc(p.length)).fill(0, at, at + len);
      p.covered += len;
    } else if (h.type === ReplyType.BlockStatus && p.type === NbdCommand.BlockStatus) {
      const status = decodeBlockStatusPayload(payload);
      if (status.contextId === this.session.baseAllocationId) p.extents = status.extents;
    } else if (h.type !== ReplyType.None) {
      throw new NbdProtocolError(`unexpected chunk type ${h.type} for ${p.type}`);
    }
    if (!done) return;
    if (p.error) {
      this.settle(h.cookie, p, { error: this.commandError(p, p.error.errno, p.error.message) });
    } else if (p.type === NbdCommand.Read) {
      if (p.covered < p.length) throw new NbdProtocolError('READ reply does not cover the request');
      this.settle(h.cookie, p, { value: whole ?? p.buffer ?? Buffer.alloc(0) });
    } else if (p.type === NbdCommand.BlockStatus) {
      if (!p.extents) throw new NbdProtocolError('BLOCK_STATUS reply without extents');
      this.settle(h.cookie, p, { value: p.extents });
    } else {
      this.settle(h.cookie, p, {});
    }
  }

  private commandError(p: Pending, errno: number, serverMessage?: string): NbdCommandError {
    return new NbdCommandError({ errno, command: p.type, offset: p.offset, length: p.length, serverMessage });
  }
}
