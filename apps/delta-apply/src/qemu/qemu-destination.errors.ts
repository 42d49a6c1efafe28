import { ErrorCode } from '@wanmig/protocol';
import { DeltaApplyError } from '../errors.js';

/** A `mem.qemu.*` request about the destination QEMU of a migration that cannot be carried out. */
export class QemuDestinationError extends DeltaApplyError {
  declare readonly migrationId: string;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; cause?: unknown }) {
    super(code, message, fields);
    this.name = 'QemuDestinationError';
  }
}

/** No destination QEMU of this migration at this site. */
export class QemuDestinationNotFoundError extends QemuDestinationError {
  constructor(migrationId: string) {
    super(ErrorCode.NotFound, `no destination QEMU of migration ${migrationId} at this site`, { migrationId });
    this.name = 'QemuDestinationNotFoundError';
  }
}

/**
 * The request contradicts what this site holds: a start with other options, anything but a status after an abort,
 * an abort (without `stopRunning`) of a destination that already runs.
 */
export class QemuDestinationConflictError extends QemuDestinationError {
  constructor(migrationId: string, reason: string) {
    super(ErrorCode.Conflict, `destination QEMU of migration ${migrationId}: ${reason}`, { migrationId });
    this.name = 'QemuDestinationConflictError';
  }
}

/** The destination QEMU did not reach the state the request needs (it exited, or did not load in time). */
export class QemuDestinationStateError extends QemuDestinationError {
  /** QEMU's run state when the request gave up (`exited` when it was gone). */
  readonly state: string;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; state: string; cause?: unknown }) {
    super(code, message, fields);
    this.name = 'QemuDestinationStateError';
    this.state = fields.state;
  }
}

/**
 * The stream the destination QEMU was fed is not, or not provably, the one the source QEMU wrote (a segment's digest
 * differed, or the stream ended without its last digest): it is never run; the migration rolls back.
 */
export class QemuStreamCheckError extends QemuDestinationError {
  constructor(migrationId: string, reason: string) {
    super(ErrorCode.DigestMismatch, `destination QEMU of migration ${migrationId} is not run: ${reason}`, {
      migrationId,
    });
    this.name = 'QemuStreamCheckError';
  }
}
