import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** The relay of QEMU's migration stream failed: the socket, the framing or the stream beneath it. */
export class QemuStreamError extends WanmigError {
  readonly migrationId: string;
  /** Bytes read from QEMU when it failed. */
  readonly qemuBytes: number;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; qemuBytes?: number; cause?: unknown }) {
    super(code, message, { cause: fields.cause });
    this.name = 'QemuStreamError';
    this.migrationId = fields.migrationId;
    this.qemuBytes = fields.qemuBytes ?? 0;
  }
}

/** The relay was closed before QEMU's stream had reached the destination. */
export class QemuStreamAbortedError extends QemuStreamError {
  constructor(fields: { migrationId: string; qemuBytes: number }) {
    super(ErrorCode.StreamClosed, `QEMU migration stream of ${fields.migrationId} was closed before its end`, fields);
    this.name = 'QemuStreamAbortedError';
  }
}

/**
 * The receiver already holds part of a QEMU stream. QEMU cannot resume a migration stream in the
 * middle: a new attempt starts from byte 0 under a new migration id (or after the destination has
 * dropped the old stream).
 */
export class QemuStreamNotFreshError extends QemuStreamError {
  readonly nextSeq: number;
  readonly cursor: number;
  constructor(fields: { migrationId: string; nextSeq: number; cursor: number }) {
    super(
      ErrorCode.Conflict,
      `the receiver of ${fields.migrationId} already holds ${fields.cursor} bytes (${fields.nextSeq} frames) ` +
        'of a QEMU stream; QEMU streams restart from zero',
      fields,
    );
    this.name = 'QemuStreamNotFreshError';
    this.nextSeq = fields.nextSeq;
    this.cursor = fields.cursor;
  }
}
