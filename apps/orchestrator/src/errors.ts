import { ErrorCode, WanmigError, type MigrationPhase } from '@wanmig/protocol';

/** Base of the orchestrator's errors: every one names the migration and, where known, its phase. */
export class MigrationError extends WanmigError {
  readonly migrationId: string;
  readonly phase?: MigrationPhase;
  constructor(
    code: ErrorCode,
    message: string,
    fields: { migrationId: string; phase?: MigrationPhase; cause?: unknown; retryable?: boolean },
  ) {
    super(code, message, {
      cause: fields.cause,
      ...(fields.retryable === undefined ? {} : { retryable: fields.retryable }),
    });
    this.name = 'MigrationError';
    this.migrationId = fields.migrationId;
    this.phase = fields.phase;
  }
}

/** The state machine does not allow `from → to` (e.g. skipping a phase, or leaving a terminal phase). */
export class InvalidTransitionError extends MigrationError {
  readonly to: MigrationPhase;
  constructor(migrationId: string, from: MigrationPhase, to: MigrationPhase, why?: string) {
    super(ErrorCode.Conflict, `migration ${migrationId}: no transition ${from} → ${to}${why ? ` (${why})` : ''}`, {
      migrationId,
      phase: from,
    });
    this.name = 'InvalidTransitionError';
    this.to = to;
  }
}

/** An abort of a migration that is past ACTIVATE (only forward recovery) or already finished. */
export class AbortRefusedError extends MigrationError {
  constructor(migrationId: string, phase: MigrationPhase, why: string) {
    super(ErrorCode.Conflict, `migration ${migrationId} cannot be aborted in ${phase}: ${why}`, {
      migrationId,
      phase,
    });
    this.name = 'AbortRefusedError';
  }
}

/** A transition computed from an epoch the record has moved past: someone else advanced it first. */
export class StaleEpochError extends MigrationError {
  readonly expectedEpoch: number;
  readonly actualEpoch: number;
  constructor(migrationId: string, phase: MigrationPhase, expectedEpoch: number, actualEpoch: number) {
    super(
      ErrorCode.Conflict,
      `migration ${migrationId}: transition from epoch ${expectedEpoch}, but the record is at epoch ${actualEpoch} (${phase})`,
      { migrationId, phase },
    );
    this.name = 'StaleEpochError';
    this.expectedEpoch = expectedEpoch;
    this.actualEpoch = actualEpoch;
  }
}

/** The KV entry changed between read and write (optimistic concurrency lost). */
export class ConcurrentUpdateError extends MigrationError {
  readonly revision: number;
  constructor(migrationId: string, revision: number, cause?: unknown) {
    super(ErrorCode.Conflict, `migration ${migrationId} changed since revision ${revision}; re-read and retry`, {
      migrationId,
      cause,
    });
    this.name = 'ConcurrentUpdateError';
    this.revision = revision;
  }
}

export class MigrationExistsError extends MigrationError {
  constructor(migrationId: string, cause?: unknown) {
    super(ErrorCode.Conflict, `migration ${migrationId} already exists`, { migrationId, cause });
    this.name = 'MigrationExistsError';
  }
}

export class MigrationNotFoundError extends MigrationError {
  constructor(migrationId: string) {
    super(ErrorCode.NotFound, `no migration ${migrationId}`, { migrationId });
    this.name = 'MigrationNotFoundError';
  }
}

/** A stored record that does not parse: never guessed at, reported. */
export class MigrationRecordCorruptError extends MigrationError {
  constructor(migrationId: string, cause?: unknown) {
    super(ErrorCode.Internal, `stored migration ${migrationId} is not a valid record`, { migrationId, cause });
    this.name = 'MigrationRecordCorruptError';
  }
}

/** A service the migration needs stayed away (not answering) longer than the migration's service deadline. */
export class ServiceAwayError extends MigrationError {
  readonly service: string;
  readonly site: string;
  readonly awayMs: number;
  readonly deadlineMs: number;
  constructor(fields: {
    migrationId: string;
    phase?: MigrationPhase;
    service: string;
    site: string;
    awayMs: number;
    deadlineMs: number;
    cause?: unknown;
  }) {
    const { service, site, awayMs, deadlineMs } = fields;
    super(
      ErrorCode.Unavailable,
      `${service} at ${site} did not answer for ${(awayMs / 1000).toFixed(1)} s ` +
        `(service deadline ${(deadlineMs / 1000).toFixed(0)} s)`,
      // The deadline is the caller's bound on waiting: past it, the migration does not wait any longer.
      { ...fields, retryable: false },
    );
    this.name = 'ServiceAwayError';
    this.service = service;
    this.site = site;
    this.awayMs = awayMs;
    this.deadlineMs = deadlineMs;
  }
}
