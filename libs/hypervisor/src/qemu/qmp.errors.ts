import { ErrorCode } from '@wanmig/protocol';
import { HypervisorError } from '../errors.js';

/**
 * How a QMP `error.class` maps to a wanmig code. QEMU 7.2 uses only these five classes; almost everything is
 * `GenericError`, whose cause (bad argument, wrong state, missing node...) only the free-text `desc` tells, so it
 * maps to INVALID_REQUEST: the request, as sent, cannot be carried out. The other classes say more:
 * a device or node that does not exist is NOT_FOUND, one not in the right state is CONFLICT, and a KVM lacking a
 * capability is UNAVAILABLE (nothing the caller can change in the request). Unknown classes → INVALID_REQUEST.
 */
export const QMP_ERROR_CODES: Readonly<Record<string, ErrorCode>> = {
  GenericError: ErrorCode.InvalidRequest,
  CommandNotFound: ErrorCode.InvalidRequest,
  DeviceNotFound: ErrorCode.NotFound,
  DeviceNotActive: ErrorCode.Conflict,
  KVMMissingCap: ErrorCode.Unavailable,
};

/** QEMU answered a command with `{"error": {"class", "desc"}}`. */
export class QmpCommandError extends HypervisorError {
  readonly command: string;
  /** QMP `error.class`, e.g. `GenericError`, `CommandNotFound`. */
  readonly errorClass: string;
  /** QMP `error.desc`, QEMU's own words. */
  readonly desc: string;
  constructor(command: string, errorClass: string, desc: string) {
    super(QMP_ERROR_CODES[errorClass] ?? ErrorCode.InvalidRequest, `QMP '${command}' failed: ${errorClass}: ${desc}`);
    this.name = 'QmpCommandError';
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/** Something awaited on a QMP connection (a reply, the greeting, an event) did not arrive in time. */
export class QmpTimeoutError extends HypervisorError {
  /** What was awaited: `reply to '<command>'`, `greeting`, `connection` or `event <NAME>`. */
  readonly awaited: string;
  /** The command whose reply did not come, when it was a command. */
  readonly command?: string;
  readonly timeoutMs: number;
  constructor(
    socketPath: string,
    awaited: string,
    timeoutMs: number,
    fields: { command?: string; hint?: string } = {},
  ) {
    const hint = fields.hint ? ` (${fields.hint})` : '';
    super(ErrorCode.Unavailable, `QMP at ${socketPath}: no ${awaited} within ${timeoutMs} ms${hint}`);
    this.name = 'QmpTimeoutError';
    this.awaited = awaited;
    this.command = fields.command;
    this.timeoutMs = timeoutMs;
  }
}

/** The QMP connection closed (close() was called, QEMU quit or died) with a request or an event wait in flight. */
export class QmpClosedError extends HypervisorError {
  readonly socketPath: string;
  constructor(socketPath: string, reason: string, options: { cause?: unknown } = {}) {
    super(ErrorCode.Unavailable, `QMP connection to ${socketPath} closed: ${reason}`, { cause: options.cause });
    this.name = 'QmpClosedError';
    this.socketPath = socketPath;
  }
}

/** The QMP socket could not be reached (ENOENT: QEMU not started or gone; ECONNREFUSED: stale socket file). */
export class QmpConnectError extends HypervisorError {
  readonly socketPath: string;
  /** The errno name (`ENOENT`, `ECONNREFUSED`...), when there was one. */
  readonly errno?: string;
  constructor(socketPath: string, errno: string | undefined, options: { cause?: unknown } = {}) {
    super(ErrorCode.Unavailable, `cannot connect to QMP at ${socketPath}${errno ? ` (${errno})` : ''}`, {
      cause: options.cause,
    });
    this.name = 'QmpConnectError';
    this.socketPath = socketPath;
    this.errno = errno;
  }
}

/** The peer does not speak QMP: no greeting banner, a line that is not JSON, or a line too long. */
export class QmpProtocolError extends HypervisorError {
  constructor(socketPath: string, message: string, options: { cause?: unknown } = {}) {
    super(ErrorCode.Unavailable, `QMP at ${socketPath}: ${message}`, { cause: options.cause });
    this.name = 'QmpProtocolError';
  }
}
