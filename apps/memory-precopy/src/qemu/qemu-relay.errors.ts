import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** A `mem.qemu.relay*` request that cannot be carried out; names the migration. */
export class QemuRelayError extends WanmigError {
  readonly migrationId: string;
  constructor(code: ErrorCode, message: string, fields: { migrationId: string; cause?: unknown }) {
    super(code, message, { cause: fields.cause });
    this.name = 'QemuRelayError';
    this.migrationId = fields.migrationId;
  }
}

/** No relay of this migration at this site. */
export class QemuRelayNotFoundError extends QemuRelayError {
  constructor(migrationId: string) {
    super(ErrorCode.NotFound, `no QEMU relay of migration ${migrationId} at this site`, { migrationId });
    this.name = 'QemuRelayNotFoundError';
  }
}

/** A relay of this migration exists and differs from the request, or can no longer serve (closed, failed). */
export class QemuRelayConflictError extends QemuRelayError {
  constructor(migrationId: string, reason: string) {
    super(ErrorCode.Conflict, `QEMU relay of migration ${migrationId}: ${reason}`, { migrationId });
    this.name = 'QemuRelayConflictError';
  }
}

/** No receiver of the migration's QEMU stream answers (delta-apply's `mem.qemu.incoming` comes first). */
export class QemuReceiverUnavailableError extends QemuRelayError {
  constructor(migrationId: string, cause?: unknown) {
    super(
      ErrorCode.Unavailable,
      `no receiver of migration ${migrationId}'s QEMU stream answers: start mem.qemu.incoming at the destination first`,
      { migrationId, cause },
    );
    this.name = 'QemuReceiverUnavailableError';
  }
}
