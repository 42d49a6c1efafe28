import { ErrorCode } from '@wanmig/protocol';
import { HypervisorError } from '../errors.js';

const INSTALL_HINT = 'install qemu-system-x86 (deploy/bootstrap.sh does)';

/**
 * No usable `qemu-system-x86_64`. UNAVAILABLE rather than NOT_FOUND: nothing in the caller's request is missing,
 * the machine lacks a tool, so the request can succeed once it is installed.
 */
export class QemuNotFoundError extends HypervisorError {
  /** Where it was looked for (the override, or each PATH entry). */
  readonly searched: string[];
  constructor(reason: string, searched: string[], options: { cause?: unknown } = {}) {
    super(ErrorCode.Unavailable, `${reason}: ${INSTALL_HINT}, or point QEMU_SYSTEM_BIN at it`, {
      cause: options.cause,
    });
    this.name = 'QemuNotFoundError';
    this.searched = searched;
  }
}

/** The binary runs but `--version` is unreadable or older than required. */
export class QemuVersionError extends HypervisorError {
  readonly binary: string;
  readonly versionText: string;
  constructor(binary: string, versionText: string, reason: string) {
    super(ErrorCode.Unavailable, `${binary}: ${reason} ('${versionText.split('\n')[0]}'): ${INSTALL_HINT}`);
    this.name = 'QemuVersionError';
    this.binary = binary;
    this.versionText = versionText;
  }
}

/** QEMU could not be started, exited before its QMP socket answered, or did not open it in time. */
export class QemuStartError extends HypervisorError {
  /** The last lines QEMU wrote to stderr. */
  readonly stderrTail: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  constructor(
    name: string,
    reason: string,
    fields: { stderrTail?: string; exitCode?: number | null; signal?: string | null; cause?: unknown } = {},
  ) {
    const tail = fields.stderrTail?.trim() ? `; last stderr lines:\n${fields.stderrTail.trim()}` : '';
    super(ErrorCode.Unavailable, `QEMU '${name}' did not start: ${reason}${tail}`, { cause: fields.cause });
    this.name = 'QemuStartError';
    this.stderrTail = fields.stderrTail ?? '';
    this.exitCode = fields.exitCode ?? null;
    this.signal = fields.signal ?? null;
  }
}

/** Options QEMU cannot be started with (a QMP socket another QEMU answers on, an unreadable kernel...). */
export class QemuConfigError extends HypervisorError {
  readonly problems: string[];
  constructor(problems: string[], code: ErrorCode = ErrorCode.InvalidRequest) {
    super(code, `invalid QEMU options: ${problems.join('; ')}`);
    this.name = 'QemuConfigError';
    this.problems = problems;
  }
}

/** QEMU reported the migration as failed or cancelled, or it did not finish in time. */
export class QemuMigrationFailedError extends HypervisorError {
  readonly migrationId: string;
  readonly status: string;
  constructor(fields: { migrationId: string; status: string; detail?: string; cause?: unknown }) {
    super(
      ErrorCode.Unavailable,
      `QEMU migration of ${fields.migrationId} ended ${fields.status}${fields.detail ? `: ${fields.detail}` : ''}`,
      { cause: fields.cause },
    );
    this.name = 'QemuMigrationFailedError';
    this.migrationId = fields.migrationId;
    this.status = fields.status;
  }
}

/**
 * The source QEMU cannot be live-migrated without losing guest writes: a TCG guest under a QEMU older than
 * TCG_MIGRATION_MIN_QEMU_VERSION. UNAVAILABLE: the request is fine, the host's QEMU is not.
 */
export class QemuMigrationUnsafeError extends HypervisorError {
  readonly version: string;
  constructor(version: string, minimum: string) {
    super(
      ErrorCode.Unavailable,
      `QEMU ${version} loses guest writes when it live-migrates a TCG guest (its dirty-bitmap sync leaves TCG's ` +
        `TLB stale; fixed in QEMU ${minimum}, commit 03bfc2188f): run the guest under KVM, or QEMU ${minimum} or ` +
        `newer (Debian 12: bookworm-backports; deploy/bootstrap.sh installs it)`,
    );
    this.name = 'QemuMigrationUnsafeError';
    this.version = version;
  }
}

/**
 * The test guest's image could not be built: its build script is missing, failed or timed out. UNAVAILABLE: the
 * request is fine, the host cannot provide the guest (yet: a build that failed on a download may pass later).
 */
export class GuestImageError extends HypervisorError {
  readonly cacheDir: string;
  readonly reason: string;
  /** The build's last stderr lines. */
  readonly logTail: string;
  constructor(cacheDir: string, reason: string, logTail: string, options: { cause?: unknown } = {}) {
    super(
      ErrorCode.Unavailable,
      `guest image in ${cacheDir}: ${reason}${logTail ? `\n--- build log tail ---\n${logTail}` : ''}`,
      { cause: options.cause },
    );
    this.name = 'GuestImageError';
    this.cacheDir = cacheDir;
    this.reason = reason;
    this.logTail = logTail;
  }
}

/**
 * A running QEMU that cannot be taken over as a VM (vm.import): a destination could not start the machine it runs
 * the same way, or its disk is not a raw file image wanmig can mirror. INVALID_REQUEST: asking again changes nothing.
 */
export class QemuImportError extends HypervisorError {
  readonly pid?: number;
  readonly problems: string[];
  constructor(what: string, problems: string[], fields: { vmId?: string; pid?: number } = {}) {
    super(ErrorCode.InvalidRequest, `${what} cannot be imported: ${problems.join('; ')}`, { vmId: fields.vmId });
    this.name = 'QemuImportError';
    this.pid = fields.pid;
    this.problems = problems;
  }
}
