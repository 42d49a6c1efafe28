import { type ByteReader } from './byte.reader.js';
import { NbdExportNotFoundError, NbdOptionError, NbdProtocolError } from './errors.js';
import { type BlockSizeLimits } from './handshake.negotiator.js';
import {
  ClientFlag,
  HandshakeFlag,
  InfoType,
  MetaContext,
  NbdOption,
  OptionReply,
  WireSize,
  isOptionReplyError,
} from './nbd.constants.js';
import {
  decodeInfo,
  decodeMetaContextEntry,
  decodeOptionReplyHeader,
  decodeServerEntry,
  decodeServerGreeting,
  encodeGoData,
  encodeMetaContextData,
  encodeOptionRequest,
} from './option.codec.js';
import { readU64 } from './request.codec.js';

/** Largest option reply payload the client accepts. */
const MAX_OPTION_REPLY = 1024 * 1024;

export interface ClientHandshakeOptions {
  exportName: string;
  /** Ask for structured replies (falls back to simple replies if refused). */
  structuredReplies: boolean;
  /** Ask for `base:allocation` (needs structured replies). */
  blockStatus: boolean;
}

/** What the client learnt in the handshake. */
export interface ClientSession {
  exportName: string;
  size: number;
  transmissionFlags: number;
  /** Present when the server sent NBD_INFO_BLOCK_SIZE. */
  blockSize?: BlockSizeLimits;
  structuredReplies: boolean;
  /** Context id of `base:allocation`, when selected. */
  baseAllocationId?: number;
}

interface OptionReplyMessage {
  type: number;
  data: Buffer;
}

/** Client side of the fixed newstyle handshake, ending with NBD_OPT_GO (or NBD_OPT_EXPORT_NAME as a fallback). */
export class ClientHandshake {
  private fixed = false;
  private noZeroes = false;

  constructor(
    private readonly reader: ByteReader,
    private readonly write: (buf: Buffer) => void,
  ) {}

  /** Greeting and client flags. */
  async open(): Promise<void> {
    const handshakeFlags = decodeServerGreeting(await this.reader.readExact(18));
    this.fixed = (handshakeFlags & HandshakeFlag.FixedNewstyle) !== 0;
    this.noZeroes = (handshakeFlags & HandshakeFlag.NoZeroes) !== 0;
    const flags = Buffer.allocUnsafe(4);
    flags.writeUInt32BE((this.fixed ? ClientFlag.FixedNewstyle : 0) | (this.noZeroes ? ClientFlag.NoZeroes : 0), 0);
    this.write(flags);
  }

  /** Negotiate and enter transmission on `exportName`. */
  async go(options: ClientHandshakeOptions): Promise<ClientSession> {
    if (!this.fixed) return this.exportName(options.exportName, false);
    let structured = false;
    if (options.structuredReplies) {
      const reply = await this.option(NbdOption.StructuredReply);
      structured = reply.type === OptionReply.Ack;
    }
    let baseAllocationId: number | undefined;
    if (options.blockStatus && structured) {
      const data = encodeMetaContextData({ name: options.exportName, queries: [MetaContext.BaseAllocation] });
      this.write(encodeOptionRequest(NbdOption.SetMetaContext, data));
      for (;;) {
        const reply = await this.readReply(NbdOption.SetMetaContext);
        if (reply.type === OptionReply.MetaContext) {
          const entry = decodeMetaContextEntry(reply.data);
          if (entry.name === MetaContext.BaseAllocation) baseAllocationId = entry.id;
        } else {
          if (reply.type !== OptionReply.Ack) baseAllocationId = undefined;
          break;
        }
      }
    }
    const goData = encodeGoData({ name: options.exportName, infos: [InfoType.BlockSize] });
    this.write(encodeOptionRequest(NbdOption.Go, goData));
    let size: number | undefined;
    let transmissionFlags = 0;
    let blockSize: BlockSizeLimits | undefined;
    for (;;) {
      const reply = await this.readReply(NbdOption.Go);
      if (reply.type === OptionReply.Info) {
        const info = decodeInfo(reply.data);
        if (info.type === InfoType.Export && 'size' in info) {
          size = info.size;
          transmissionFlags = info.flags;
        } else if (info.type === InfoType.BlockSize && 'minimum' in info) {
          blockSize = { minimum: info.minimum, preferred: info.preferred, maximum: info.maximum };
        }
        continue;
      }
      if (reply.type === OptionReply.Ack) break;
      if (reply.type === OptionReply.ErrUnsup) return this.exportName(options.exportName, structured);
      throw this.optionError(NbdOption.Go, reply, options.exportName);
    }
    if (size === undefined) throw new NbdProtocolError('NBD_OPT_GO succeeded without NBD_INFO_EXPORT');
    return {
      exportName: options.exportName,
      size,
      transmissionFlags,
      blockSize,
      structuredReplies: structured,
      baseAllocationId,
    };
  }

  /** NBD_OPT_LIST: the exports the server offers. */
  async list(): Promise<{ name: string; description: string }[]> {
    this.write(encodeOptionRequest(NbdOption.List));
    const out: { name: string; description: string }[] = [];
    for (;;) {
      const reply = await this.readReply(NbdOption.List);
      if (reply.type === OptionReply.Server) out.push(decodeServerEntry(reply.data));
      else if (reply.type === OptionReply.Ack) return out;
      else throw this.optionError(NbdOption.List, reply, '');
    }
  }

  /** NBD_OPT_ABORT, tolerating a server that hangs up instead of answering. */
  async abort(): Promise<void> {
    this.write(encodeOptionRequest(NbdOption.Abort));
    await this.readReply(NbdOption.Abort).catch(() => undefined);
  }

  private async exportName(name: string, structured: boolean): Promise<ClientSession> {
    this.write(encodeOptionRequest(NbdOption.ExportName, Buffer.from(name, 'utf8')));
    let head: Buffer;
    try {
      head = await this.reader.readExact(10 + (this.noZeroes ? 0 : WireSize.ExportNamePadding));
    } catch (err) {
      throw new NbdExportNotFoundError(name, { cause: err });
    }
    return {
      exportName: name,
      size: readU64(head, 0),
      transmissionFlags: head.readUInt16BE(8),
      structuredReplies: structured,
    };
  }

  private async option(option: number, data?: Buffer): Promise<OptionReplyMessage> {
    this.write(encodeOptionRequest(option, data));
    return this.readReply(option);
  }

  private async readReply(option: number): Promise<OptionReplyMessage> {
    const header = decodeOptionReplyHeader(await this.reader.readExact(WireSize.OptionReplyHeader));
    if (header.option !== option) {
      throw new NbdProtocolError(`reply to option ${header.option} while waiting for option ${option}`);
    }
    if (header.length > MAX_OPTION_REPLY) throw new NbdProtocolError(`option reply of ${header.length} bytes`);
    return { type: header.type, data: await this.reader.readExact(header.length) };
  }

  private optionError(option: number, reply: OptionReplyMessage, exportName: string): Error {
    const serverMessage = isOptionReplyError(reply.type) ? reply.data.toString('utf8') : undefined;
    if (reply.type === OptionReply.ErrUnknown) return new NbdExportNotFoundError(exportName);
    if (!isOptionReplyError(reply.type)) {
      return new NbdProtocolError(`unexpected reply type ${reply.type} to option ${option}`);
    }
    return new NbdOptionError({ option, replyType: reply.type, serverMessage });
  }
}
