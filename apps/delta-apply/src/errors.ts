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
  constructor(migrationId: string) {
    super(ErrorCode.NotFound, `no disk migration ${migrationId} at this site`, { migrationId });
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

/** A frame or sync reached a session that is closing; the receiver re-requests it from whoever serves next. */
export class SessionClosedError extends DeltaApplyError {
  constructor(migrationId: string) {
    super(ErrorCode.StreamClosed, `disk session ${migrationId} is closed`, { migrationId });
    this.name = 'SessionClosedError';
  }
}
