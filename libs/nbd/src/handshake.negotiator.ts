import { type ByteReader } from './byte.reader.js';
import { NbdProtocolError } from './errors.js';
import {
  BASE_ALLOCATION_CONTEXT_ID,
  ClientFlag,
  HandshakeFlag,
  InfoType,
  MetaContext,
  NBD_MAX_OPTION_LENGTH,
  NbdOption,
  OptionReply,
  WireSize,
} from './nbd.constants.js';
import {
  decodeGoData,
  decodeMetaContextData,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextEntry,
  encodeOptionReply,
  encodeServerEntry,
  encodeServerGreeting,
} from './option.codec.js';

/** What the negotiator needs to know of an export. */
export interface NegotiableExport {
  readonly name: string;
  readonly description?: string;
  readonly size: number;
  /** Transmission flags for a session that did (or did not) negotiate structured replies. */
  transmissionFlags(structuredReplies: boolean): number;
}

/** Where the negotiator looks exports up. `find('')` answers with the default export, if any. */
export interface ExportDirectory<E extends NegotiableExport> {
  find(name: string): E | undefined;
  list(): readonly E[];
}

/** Size constraints advertised with NBD_INFO_BLOCK_SIZE. */
export interface BlockSizeLimits {
  minimum: number;
  preferred: number;
  maximum: number;
}

/** Outcome of a handshake that reached the transmission phase. */
export interface NegotiatedSession<E extends NegotiableExport> {
  export: E;
  structuredReplies: boolean;
  /** `base:allocation` was selected for this export: BLOCK_STATUS is allowed. */
  baseAllocation: boolean;
  transmissionFlags: number;
  /** How the client entered transmission. */
  via: 'go' | 'export-name';
  /** The client asked for NBD_INFO_BLOCK_SIZE with NBD_OPT_GO (it promised to honour the limits). */
  blockSizeAgreed: boolean;
}

const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes;
const KNOWN_CLIENT_FLAGS = ClientFlag.FixedNewstyle | ClientFlag.NoZeroes;

/**
 * Server side of the fixed newstyle handshake: greeting, client flags, then option haggling until
 * NBD_OPT_GO or NBD_OPT_EXPORT_NAME enters transmission (or the client aborts). Options it does not
 * implement (STARTTLS included) get NBD_REP_ERR_UNSUP; malformed ones NBD_REP_ERR_INVALID.
 *
 * `run()` resolves with the session, or undefined after NBD_OPT_ABORT. It rejects with
 * NbdProtocolError when the server must hang up (bad magic, unknown client flags, unknown export
 * under NBD_OPT_EXPORT_NAME, an option too long to be honest) and with NbdConnectionClosedError
 * when the client leaves.
 */
export class HandshakeNegotiator<E extends NegotiableExport> {
  private structuredReplies = false;
  private noZeroes = false;
  /** Export the last NBD_OPT_SET_META_CONTEXT referred to, when it selected base:allocation. */
  private metaExport?: E;

  constructor(
    private readonly reader: ByteReader,
    private readonly write: (buf: Buffer) => void,
    private readonly exports: ExportDirectory<E>,
    private readonly limits: BlockSizeLimits,
  ) {}

  async run(): Promise<NegotiatedSession<E> | undefined> {
    this.write(encodeServerGreeting(SERVER_HANDSHAKE_FLAGS));
    const clientFlags = (await this.reader.readExact(4)).readUInt32BE(0);
    if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0) {
      throw new NbdProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.noZeroes = (clientFlags & ClientFlag.NoZeroes) !== 0;
    for (;;) {
      const header = decodeOptionHeader(await this.reader.readExact(WireSize.OptionHeader));
      if (header.length > NBD_MAX_OPTION_LENGTH) {
        throw new NbdProtocolError(`option ${header.option} with ${header.length} bytes of data`);
      }
      const data = await this.reader.readExact(header.length);
      const outcome = this.handle(header.option, data);
      if (outcome === 'abort') return undefined;
      if (outcome) return outcome;
    }
  }

  /** Answer one option; a session means transmission starts now. */
  private handle(option: number, data: Buffer): NegotiatedSession<E> | 'abort' | undefined {
    switch (option) {
      case NbdOption.ExportName:
        return this.exportName(data);
      case NbdOption.Abort:
        this.reply(option, OptionReply.Ack);
        return 'abort';
      case NbdOption.List:
        this.list(data);
        return undefined;
      case NbdOption.Info:
      case NbdOption.Go:
        return this.infoOrGo(option, data);
      case NbdOption.StructuredReply:
        if (data.length !== 0) return this.error(option, OptionReply.ErrInvalid, 'no data expected');
        this.structuredReplies = true;
        this.reply(option, OptionReply.Ack);
        return undefined;
      case NbdOption.ListMetaContext:
      case NbdOption.SetMetaContext:
        this.metaContext(option, data);
        return undefined;
      default:
        return this.error(option, OptionReply.ErrUnsup, `option ${option} is not supported`);
    }
  }

  private exportName(data: Buffer): NegotiatedSession<E> {
    const name = data.toString('utf8');
    const exp = this.exports.find(name);
    // NBD_OPT_EXPORT_NAME cannot answer an error: the only refusal is to hang up.
    if (!exp) throw new NbdProtocolError(`NBD_OPT_EXPORT_NAME for unknown export '${name}'`);
    const flags = exp.transmissionFlags(this.structuredReplies);
    this.write(encodeExportNameReply(exp.size, flags, this.noZeroes));
    return this.session(exp, flags, 'export-name', false);
  }

  private list(data: Buffer): void {
    if (data.length !== 0) {
      this.error(NbdOption.List, OptionReply.ErrInvalid, 'NBD_OPT_LIST takes no data');
      return;
    }
    for (const exp of this.exports.list()) {
      this.reply(NbdOption.List, OptionReply.Server, encodeServerEntry(exp.name, exp.description));
    }
    this.reply(NbdOption.List, OptionReply.Ack);
  }

  private infoOrGo(option: number, data: Buffer): NegotiatedSession<E> | undefined {
    let request;
    try {
      request = decodeGoData(data);
    } catch (err) {
      return this.error(option, OptionReply.ErrInvalid, (err as Error).message);
    }
    const exp = this.exports.find(request.name);
    if (!exp) return this.error(option, OptionReply.ErrUnknown, `no export named '${request.name}'`);
    const flags = exp.transmissionFlags(this.structuredReplies);
    this.reply(option, OptionReply.Info, encodeInfoExport(exp.size, flags));
    // Sent whether asked or not: clients ignore info they did not request, and these are the defaults anyway.
    const { minimum, preferred, maximum } = this.limits;
    this.reply(option, OptionReply.Info, encodeInfoBlockSize(minimum, preferred, maximum));
    if (request.infos.includes(InfoType.Name)) {
      this.reply(option, OptionReply.Info, encodeInfoString(InfoType.Name, exp.name));
    }
    if (request.infos.includes(InfoType.Description) && exp.description) {
      this.reply(option, OptionReply.Info, encodeInfoString(InfoType.Description, exp.description));
    }
    this.reply(option, OptionReply.Ack);
    if (option !== NbdOption.Go) return undefined;
    return this.session(exp, flags, 'go', request.infos.includes(InfoType.BlockSize));
  }

  private metaContext(option: number, data: Buffer): void {
    const isSet = option === NbdOption.SetMetaContext;
    // SET replaces the selection even when it fails.
    if (isSet) this.metaExport = undefined;
    if (isSet && !this.structuredReplies) {
      this.error(option, OptionReply.ErrInvalid, 'negotiate structured replies first');
      return;
    }
    let request;
    try {
      request = decodeMetaContextData(data);
    } catch (err) {
      this.error(option, OptionReply.ErrInvalid, (err as Error).message);
      return;
    }
    const exp = this.exports.find(request.name);
    if (!exp) {
      this.error(option, OptionReply.ErrUnknown, `no export named '${request.name}'`);
      return;
    }
    const matches = request.queries.some((q) =>
      isSet ? q === MetaContext.BaseAllocation : q === MetaContext.BaseAllocation || q === 'base:',
    );
    const selected = isSet ? matches : matches || request.queries.length === 0;
    if (selected) {
      this.reply(
        option,
        OptionReply.MetaContext,
        encodeMetaContextEntry(isSet ? BASE_ALLOCATION_CONTEXT_ID : 0, MetaContext.BaseAllocation),
      );
      if (isSet) this.metaExport = exp;
    }
    this.reply(option, OptionReply.Ack);
  }

  private session(exp: E, flags: number, via: 'go' | 'export-name', blockSizeAgreed: boolean): NegotiatedSession<E> {
    return {
      export: exp,
      structuredReplies: this.structuredReplies,
      baseAllocation: this.structuredReplies && this.metaExport === exp,
      transmissionFlags: flags,
      via,
      blockSizeAgreed,
    };
  }

  private reply(option: number, type: number, data?: Buffer): void {
    this.write(encodeOptionReply(option, type, data));
  }

  private error(option: number, type: number, message: string): undefined {
    this.reply(option, type, Buffer.from(message, 'utf8'));
    return undefined;
  }
}
