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
