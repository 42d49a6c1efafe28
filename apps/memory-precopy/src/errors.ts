import { ErrorCode, WanmigError } from '@wanmig/protocol';

export class MemoryMigrationError extends WanmigError {
  readonly migrationId: string;
  readonly phase: string;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; phase: string; cause?: unknown }) {
    super(code, message, { cause: fields.cause });
    this.name = 'MemoryMigrationError';
    this.migrationId = fields.migrationId;
    this.phase = fields.phase;
  }
}

export class MemoryAbortedError extends MemoryMigrationError {
  constructor(migrationId: string, phase: string) {
    super(ErrorCode.Conflict, `migration ${migrationId} was aborted during ${phase}; the source keeps running`, {
      migrationId,
      phase,
    });
    this.name = 'MemoryAbortedError';
  }
}

/** The switchover never started: a service it needs stayed away or out of step past the deadline; the source runs on. */
export class PauseHeldOffError extends MemoryMigrationError {
  readonly reason: string;
  readonly waitedMs: number;
  constructor(migrationId: string, reason: string, waitedMs: number) {
    super(
      ErrorCode.Unavailable,
      `migration ${migrationId} not paused: ${reason}, for ${(waitedMs / 1000).toFixed(1)} s; the source keeps running`,
      { migrationId, phase: 'precopy' },
    );
    this.name = 'PauseHeldOffError';
    this.reason = reason;
    this.waitedMs = waitedMs;
  }
}

/** The destination's RAM is not the source's at pause: it is never run, the source rolls back. */
export class RamMismatchError extends MemoryMigrationError {
  /** `where`: which regions differ, in words (describeRamDifference), or empty. */
  constructor(migrationId: string, destination: string, source: string, where = '') {
    super(
      ErrorCode.DigestMismatch,
      `RAM of migration ${migrationId} differs at the destination from the source at pause${where} (sha256 ` +
        `${destination}, source ${source}): not resumed`,
      { migrationId, phase: 'stop-and-copy' },
    );
    this.name = 'RamMismatchError';
  }
}

/** A held switchover got no go in time: the source rolls back and runs on (the caller may be gone). */
export class MemoryHoldTimeoutError extends MemoryMigrationError {
  constructor(migrationId: string, timeoutMs: number) {
    super(
      ErrorCode.Unavailable,
      `migration ${migrationId}: no go (mem.proceed) within ${timeoutMs} ms of holding before the resume; rolled back, the source runs on`,
      { migrationId, phase: 'holding' },
    );
    this.name = 'MemoryHoldTimeoutError';
  }
}

/** `mem.proceed` for a migration that is not holding: it rolled back, timed out, or has not reached the hold. */
export class MemoryProceedRefusedError extends MemoryMigrationError {
  constructor(migrationId: string, phase: string, why: string) {
    super(ErrorCode.Conflict, `migration ${migrationId} cannot proceed in ${phase}: ${why}`, { migrationId, phase });
    this.name = 'MemoryProceedRefusedError';
  }
}
