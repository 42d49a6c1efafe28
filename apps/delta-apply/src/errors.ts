import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** Base of delta-apply's errors: each names the migration it is about. */
export class DeltaApplyError extends WanmigError {
  readonly migrationId?: string;
  constructor(code: ErrorCode, message: string, fields: { migrationId?: string; cause?: unknown } = {}) {
    super(code, message, { cause: fields.cause });
    this.name = 'DeltaApplyError';
    this.migrationId = fields.migrationId;
  }
}

/** The file system cannot hold the image: nothing was created. */
export class NoSpaceError extends DeltaApplyError {
  readonly path: string;
  readonly neededBytes: number;
  readonly availableBytes: number;
  constructor(fields: { migrationId?: string; path: string; neededBytes: number; availableBytes: number }) {
    super(
      ErrorCode.NoSpace,
      `not enough room for ${fields.path}: ${fields.neededBytes} bytes needed, ${fields.availableBytes} available`,
      fields,
    );
    this.name = 'NoSpaceError';
    this.path = fields.path;
    this.neededBytes = fields.neededBytes;
    this.availableBytes = fields.availableBytes;
  }
}

export class MigrationNotFoundError extends DeltaApplyError {
  constructor(migrationId: string, what: 'disk' | 'memory' = 'disk') {
    super(ErrorCode.NotFound, `no ${what} migration ${migrationId} at this site`, { migrationId });
    this.name = 'MigrationNotFoundError';
  }
}

/** A request that contradicts what this site already holds for the migration (size, block size, path). */
export class MigrationConflictError extends DeltaApplyError {
  readonly field: string;
  constructor(fields: { migrationId: string; field: string; message: string }) {
    super(ErrorCode.Conflict, fields.message, fields);
    this.name = 'MigrationConflictError';
    this.field = fields.field;
  }
}

/** The persisted state of a migration cannot be used as it is (unreadable manifest, image gone). */
export class MigrationStateError extends DeltaApplyError {
  readonly path: string;
  constructor(fields: { migrationId?: string; path: string; message: string; cause?: unknown }) {
    super(ErrorCode.Conflict, fields.message, fields);
    this.name = 'MigrationStateError';
    this.path = fields.path;
  }
}

/** The service is shutting down and takes no new work. */
export class ServiceStoppingError extends DeltaApplyError {
  constructor() {
    super(ErrorCode.Unavailable, 'delta-apply is shutting down');
    this.name = 'ServiceStoppingError';
  }
}

/** The present map does not fit in one reply: the sender must not trust a partial one (it re-sends everything). */
export class PresentMapTooLargeError extends DeltaApplyError {
  constructor(migrationId: string, bytes: number, limit: number) {
    super(
      ErrorCode.Conflict,
      `the present map of ${migrationId} takes ${bytes} bytes, more than one reply carries (${limit})`,
      { migrationId },
    );
    this.name = 'PresentMapTooLargeError';
  }
}

/** A frame or sync reached a session that is closing; the receiver re-requests it from whoever serves next. */
export class SessionClosedError extends DeltaApplyError {
  constructor(migrationId: string) {
    super(ErrorCode.StreamClosed, `session ${migrationId} is closed`, { migrationId });
    this.name = 'SessionClosedError';
  }
}

/** A memory frame addressed outside the RAM file: refused before anything is written. */
export class PageOutOfRangeError extends DeltaApplyError {
  readonly seq: number;
  readonly offset: number;
  readonly length: number;
  readonly ramBytes: number;
  constructor(fields: { migrationId: string; seq: number; offset: number; length: number; ramBytes: number }) {
    super(
      ErrorCode.FrameOutOfRange,
      `memory frame ${fields.seq} covers [${fields.offset}, +${fields.length}), past the ${fields.ramBytes}-byte RAM`,
      fields,
    );
    this.name = 'PageOutOfRangeError';
    this.seq = fields.seq;
    this.offset = fields.offset;
    this.length = fields.length;
    this.ramBytes = fields.ramBytes;
  }
}

/** A device-state frame that cannot be taken as it is (records, a gap, too large, a wrong length). */
export class DeviceStateFrameError extends DeltaApplyError {
  readonly seq: number;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; seq: number; cause?: unknown }) {
    super(code, message, fields);
    this.name = 'DeviceStateFrameError';
    this.seq = fields.seq;
  }
}

/** The device state held here is not the one the resume request describes: nothing is started. */
export class DeviceStateMismatchError extends DeltaApplyError {
  /** What differs: nothing was received, the size, or the sha256. */
  readonly mismatch: 'missing' | 'size' | 'sha256';
  constructor(fields: { migrationId: string; mismatch: 'missing' | 'size' | 'sha256'; message: string }) {
    super(ErrorCode.InvalidRequest, fields.message, fields);
    this.name = 'DeviceStateMismatchError';
    this.mismatch = fields.mismatch;
  }
}

/** The hypervisor driver failed to start or resume the VM; the incoming VM was stopped, the files stay. */
export class VmResumeError extends DeltaApplyError {
  readonly vmId: string;
  readonly driver: string;
  constructor(fields: { migrationId: string; vmId: string; driver: string; cause: unknown }) {
    const known = fields.cause instanceof WanmigError ? fields.cause : undefined;
    super(
      known?.code ?? ErrorCode.Internal,
      `the ${fields.driver} driver did not resume VM ${fields.vmId}: ` +
        (known ? known.message : 'internal error (see the delta-apply log)'),
      fields,
    );
    this.name = 'VmResumeError';
    this.vmId = fields.vmId;
    this.driver = fields.driver;
  }
}
