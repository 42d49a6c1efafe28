import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** Where a QEMU VM migration stood when it failed (or was asked about). */
export const QemuMigrationStage = {
  /** The source disk becomes a `mirror-target` export of disk-transfer at site A. */
  DiskExport: 'disk-export',
  /** QEMU mirrors the guest's writes into that export. */
  DiskMirror: 'disk-mirror',
  /** disk-transfer copies the disk to site B until it holds the destination in step. */
  DiskCopy: 'disk-copy',
  /** The destination QEMU starts with `-incoming` on the destination image, the memory relay is wired. */
  Destination: 'destination',
  /** QEMU's own pre-copy streams RAM through the relay, until it stops the guest (pre-switchover). */
  MemoryPrecopy: 'memory-precopy',
  /** The guest is stopped: the disk's final drain, the mirror goes, then `migrate-continue`. */
  Switchover: 'switchover',
  /** QEMU sends the last pages and the device state; the destination loads them. */
  Completion: 'completion',
  /** The destination QEMU is told to run (`cont`). */
  Activate: 'activate',
} as const;
export type QemuMigrationStage = (typeof QemuMigrationStage)[keyof typeof QemuMigrationStage];

/**
 * A QEMU VM migration through wanmig failed. Before the destination runs the source is authoritative: the
 * migration is rolled back (QEMU's migration cancelled, the disk migration aborted, the mirror cancelled, the
 * source guest running again, the destination QEMU stopped and its image deleted). `rolledBack` says whether that
 * rollback finished cleanly; `cleanupErrors` lists what did not.
 */
export class QemuVmMigrationError extends WanmigError {
  readonly migrationId: string;
  readonly stage: QemuMigrationStage;
  readonly rolledBack: boolean;
  readonly cleanupErrors: string[];
  constructor(fields: {
    migrationId: string;
    stage: QemuMigrationStage;
    rolledBack: boolean;
    cleanupErrors?: string[];
    code?: ErrorCode;
    cause?: unknown;
  }) {
    const cleanup = fields.cleanupErrors ?? [];
    const why = fields.cause instanceof Error ? fields.cause.message : String(fields.cause);
    const outcome = fields.rolledBack ? 'rolled back, the guest runs at the source' : 'rollback incomplete';
    super(
      fields.code ?? (fields.cause instanceof WanmigError ? fields.cause.code : ErrorCode.Unavailable),
      `QEMU migration ${fields.migrationId} failed at ${fields.stage}: ${why} (${outcome})` +
        (cleanup.length > 0 ? `; cleanup: ${cleanup.join('; ')}` : ''),
      { cause: fields.cause },
    );
    this.name = 'QemuVmMigrationError';
    this.migrationId = fields.migrationId;
    this.stage = fields.stage;
    this.rolledBack = fields.rolledBack;
    this.cleanupErrors = cleanup;
  }
}

/** Something the migration depends on went away or broke while it ran (the tripwire's reason). */
export class QemuMigrationInterruptedError extends WanmigError {
  readonly migrationId: string;
  /** What broke: `destination-qemu`, `source-qemu`, `disk-mirror`, `disk-migration`, `memory-relay`, `memory-sink`. */
  readonly what: string;
  constructor(fields: { migrationId: string; what: string; detail: string; code?: ErrorCode; cause?: unknown }) {
    super(fields.code ?? ErrorCode.Unavailable, `${fields.what}: ${fields.detail}`, { cause: fields.cause });
    this.name = 'QemuMigrationInterruptedError';
    this.migrationId = fields.migrationId;
    this.what = fields.what;
  }
}
