import { ErrorCode, WanmigError } from '@wanmig/protocol';

export class DiskMigrationError extends WanmigError {
  readonly migrationId: string;
  readonly phase: string;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; phase: string; cause?: unknown }) {
    super(code, message, { cause: fields.cause });
    this.name = 'DiskMigrationError';
    this.migrationId = fields.migrationId;
    this.phase = fields.phase;
  }
}

/** The destination image differs from the source: never ignored. */
export class VerifyMismatchError extends DiskMigrationError {
  readonly regions: number[];
  constructor(migrationId: string, regions: number[], regionBytes: number) {
    const first = regions.slice(0, 5).map((r) => r * regionBytes);
    super(
      ErrorCode.Conflict,
      `destination image differs from the source in ${regions.length} region(s) of ${regionBytes} bytes (first at ${first.join(', ')})`,
      { migrationId, phase: 'verify' },
    );
    this.name = 'VerifyMismatchError';
    this.regions = regions;
  }
}

export class MigrationAbortedError extends DiskMigrationError {
  constructor(migrationId: string, phase: string, cause?: unknown) {
    super(ErrorCode.Conflict, `migration ${migrationId} was aborted during ${phase}`, { migrationId, phase, cause });
    this.name = 'MigrationAbortedError';
  }
}

/** `finalize` of a migration that was not started with `hold`: it drains on its own, with no pause to wait for. */
export class NotHeldError extends DiskMigrationError {
  constructor(migrationId: string, phase: string) {
    super(ErrorCode.Conflict, `migration ${migrationId} was not started with hold: there is nothing to finalize`, {
      migrationId,
      phase,
    });
    this.name = 'NotHeldError';
  }
}

/** A file system error about an image, in terms an operator can act on. */
export function imageError(path: string, err: unknown): WanmigError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new WanmigError(ErrorCode.NotFound, `image ${path} does not exist`, { cause: err });
  if (code === 'EACCES' || code === 'EPERM') {
    return new WanmigError(ErrorCode.InvalidRequest, `image ${path} cannot be opened: permission denied`, {
      cause: err,
    });
  }
  if (code === 'EISDIR')
    return new WanmigError(ErrorCode.InvalidRequest, `image ${path} is a directory`, { cause: err });
  if (err instanceof WanmigError) return err;
  return new WanmigError(ErrorCode.InvalidRequest, `image ${path} cannot be used: ${(err as Error).message}`, {
    cause: err,
  });
}

/** The activity log could not be written: the write it guards must not reach the image (the guest sees EIO). */
export class ActivityLogError extends WanmigError {
  readonly path: string;
  constructor(path: string, cause: unknown) {
    super(ErrorCode.Internal, `activity log ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
    this.name = 'ActivityLogError';
    this.path = path;
  }
}
