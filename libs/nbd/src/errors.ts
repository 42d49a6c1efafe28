import { ErrorCode, WanmigError } from '@wanmig/protocol';
import { NbdErrno, commandName, errnoName } from './nbd.constants.js';

/** Base of every NBD error. */
export class NbdError extends WanmigError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'NbdError';
  }
}

/** The peer broke the protocol (bad magic, impossible lengths, unexpected reply): the connection is dropped. */
export class NbdProtocolError extends NbdError {
  readonly detail: string;
  constructor(detail: string, options?: { cause?: unknown }) {
    super(ErrorCode.InvalidRequest, `NBD protocol violation: ${detail}`, options);
    this.name = 'NbdProtocolError';
    this.detail = detail;
  }
}

/** The connection ended (or was destroyed) while `expected` bytes were awaited and only `received` had arrived. */
export class NbdConnectionClosedError extends NbdError {
  readonly expected: number;
  readonly received: number;
  constructor(fields: { expected?: number; received?: number; cause?: unknown } = {}) {
    const expected = fields.expected ?? 0;
    const received = fields.received ?? 0;
    super(
      ErrorCode.StreamClosed,
      expected > 0 ? `NBD connection closed after ${received} of ${expected} expected bytes` : 'NBD connection closed',
      { cause: fields.cause },
    );
    this.name = 'NbdConnectionClosedError';
    this.expected = expected;
    this.received = received;
  }
}

function codeForErrno(errno: number): ErrorCode {
  switch (errno) {
    case NbdErrno.ENOSPC:
      return ErrorCode.NoSpace;
    case NbdErrno.EINVAL:
    case NbdErrno.EOVERFLOW:
    case NbdErrno.EPERM:
    case NbdErrno.ENOTSUP:
      return ErrorCode.InvalidRequest;
    default:
      return ErrorCode.Internal;
  }
}

/** A transmission-phase request the server answered with an error (client side). */
export class NbdCommandError extends NbdError {
  /** NBD error value from the reply (`NbdErrno`); unknown values are kept as sent. */
  readonly errno: number;
  readonly command: string;
  readonly offset: number;
  readonly length: number;
  /** Message of a structured error chunk, if the server sent one. */
  readonly serverMessage?: string;
  constructor(fields: {
    errno: number;
    command: number;
    offset: number;
    length: number;
    serverMessage?: string;
    cause?: unknown;
  }) {
    const cmd = commandName(fields.command);
    super(
      codeForErrno(fields.errno),
      `NBD ${cmd} at ${fields.offset} (+${fields.length}) failed: ${errnoName(fields.errno)}` +
        (fields.serverMessage ? ` (${fields.serverMessage})` : ''),
      { cause: fields.cause },
    );
    this.name = 'NbdCommandError';
    this.errno = fields.errno;
    this.command = cmd;
    this.offset = fields.offset;
    this.length = fields.length;
    this.serverMessage = fields.serverMessage;
  }
}

/** An option the server refused during the handshake (client side). */
export class NbdOptionError extends NbdError {
  readonly option: number;
  readonly replyType: number;
  readonly serverMessage?: string;
  constructor(fields: { option: number; replyType: number; serverMessage?: string; cause?: unknown }) {
    super(
      ErrorCode.InvalidRequest,
      `NBD option ${fields.option} refused with reply 0x${fields.replyType.toString(16)}` +
        (fields.serverMessage ? ` (${fields.serverMessage})` : ''),
      { cause: fields.cause },
    );
    this.name = 'NbdOptionError';
    this.option = fields.option;
    this.replyType = fields.replyType;
    this.serverMessage = fields.serverMessage;
  }
}

/** No export of that name: the server refused it, or the server API was asked for one it does not have. */
export class NbdExportNotFoundError extends NbdError {
  readonly exportName: string;
  constructor(exportName: string, options?: { cause?: unknown }) {
    super(ErrorCode.NotFound, `NBD export not found: '${exportName}'`, options);
    this.name = 'NbdExportNotFoundError';
    this.exportName = exportName;
  }
}

/** An export of that name is already registered on the server. */
export class NbdExportExistsError extends NbdError {
  readonly exportName: string;
  constructor(exportName: string, options?: { cause?: unknown }) {
    super(ErrorCode.Conflict, `NBD export already exists: '${exportName}'`, options);
    this.name = 'NbdExportExistsError';
    this.exportName = exportName;
  }
}

/** The listen address (TCP host:port or unix socket path) is taken. */
export class NbdAddressInUseError extends NbdError {
  readonly address: string;
  constructor(address: string, options?: { cause?: unknown }) {
    super(ErrorCode.Conflict, `NBD listen address in use: ${address}`, options);
    this.name = 'NbdAddressInUseError';
    this.address = address;
  }
}

/** The server (or client) was used after close. */
export class NbdClosedError extends NbdError {
  constructor(what: string, options?: { cause?: unknown }) {
    super(ErrorCode.StreamClosed, `${what} is closed`, options);
    this.name = 'NbdClosedError';
  }
}

/** Thrown by a backend to choose the NBD error value the client receives (otherwise the server maps Node errors). */
export class NbdBackendError extends NbdError {
  readonly errno: NbdErrno;
  readonly offset?: number;
  constructor(errno: NbdErrno, message: string, fields: { offset?: number; cause?: unknown } = {}) {
    super(codeForErrno(errno), message, { cause: fields.cause });
    this.name = 'NbdBackendError';
    this.errno = errno;
    this.offset = fields.offset;
  }
}

/** Map an error from a backend to the NBD error value sent to the client. */
export function errnoFromError(err: unknown): NbdErrno {
  if (err instanceof NbdBackendError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NbdErrno.ENOSPC;
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
    case 'EBADF':
      return NbdErrno.EPERM;
    case 'ENOMEM':
      return NbdErrno.ENOMEM;
    case 'EINVAL':
      return NbdErrno.EINVAL;
    default:
      return NbdErrno.EIO;
  }
}
