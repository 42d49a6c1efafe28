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
