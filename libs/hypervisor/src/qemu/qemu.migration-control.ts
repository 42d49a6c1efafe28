import { setTimeout as sleep } from 'node:timers/promises';
import { compareQemuVersions, formatQemuVersion, TCG_MIGRATION_MIN_QEMU_VERSION } from './qemu.binary.js';
import { QemuMigrationFailedError, QemuMigrationUnsafeError } from './qemu.errors.js';
import type { QmpClient } from './qmp.client.js';
import type { QmpStatus } from './qmp.types.js';

/** Milliseconds of pause QEMU aims for at switchover (its own default is 300 as well). */
export const DEFAULT_QEMU_DOWNTIME_LIMIT_MS = 300;
/**
 * QEMU's own rate limit, bytes/s, when wanmig paces the stream: high enough never to bind. QEMU's
 * default (32 MiB/s) would cap a faster WAN and, on a slower one, add a second limiter that QEMU's
 * bandwidth estimate cannot tell from the link. Our socket's backpressure is the pace.
 */
export const UNPACED_QEMU_MAX_BANDWIDTH = 8 * 1024 ** 3;
const POLL_MS = 100;

/** `query-migrate`'s `status` values that end a migration (QEMU 7.2). */
export const QemuMigrationStatus = {
  Completed: 'completed',
  Failed: 'failed',
  Cancelled: 'cancelled',
} as const;

/** The part of `query-migrate` wanmig reads (QEMU 7.2). */
export interface QemuMigrationInfo {
  /** none, setup, active, device, completed, failed, cancelling, cancelled, postcopy-*, pre-switchover... */
  status?: string;
  'total-time'?: number;
  'setup-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'error-desc'?: string;
  /** Auto-converge's current throttle of the guest's vCPUs (percent), while it throttles. */
  'cpu-throttle-percentage'?: number;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    duplicate: number;
    normal: number;
    'normal-bytes': number;
    'dirty-sync-count': number;
    mbps: number;
    'pages-per-second'?: number;
  };
}

export interface QemuMigrationTuning {
  /** `downtime-limit`, ms (DEFAULT_QEMU_DOWNTIME_LIMIT_MS). */
  downtimeLimitMs?: number;
  /** `max-bandwidth`, bytes/s (UNPACED_QEMU_MAX_BANDWIDTH): set it only when QEMU must pace itself. */
  maxBandwidth?: number;
  /** QEMU's auto-converge: throttle the guest's vCPUs when rounds stop converging (default off). */
  autoConverge?: boolean;
  /**
   * XBZRLE: QEMU keeps a cache of pages it sent and re-sends a changed page as a delta against it. Off unless a
   * cache size (bytes) is given: the relay's zstd stream already turns unchanged repeats into references, and the
   * cache costs source memory and CPU for pages that change wholesale.
   */
  xbzrleCacheBytes?: number;
  /** Allow `migrate-start-postcopy` later (capability `postcopy-ram`; default off). */
  postcopy?: boolean;
}

type Qmp = Pick<QmpClient, 'execute' | 'on'>;

/**
 * Prepares the source QEMU for a relayed precopy migration:
 * - capability `events` on, so state changes arrive as MIGRATION events;
 * - `return-path` off, `postcopy-ram` as asked: pre-copy over the relay is one-way; post-copy makes QEMU open
 *   its return path, which the relay then carries back (QemuMigrationSource `returnPath`, and the sink's), and
 *   the destination QEMU needs `postcopy-ram` too;
 * - `downtime-limit` (300 ms by default): QEMU stops iterating once remaining dirty memory over
 *   its measured bandwidth fits in it; the measured bandwidth is the WAN's pace, since the relay
 *   stops reading while its window is full;
 * - `max-bandwidth` high, so that QEMU's own rate limit never binds.
 * The destination QEMU needs no parameters; `events` on there too is useful for watching it.
 */
export async function configureQemuMigration(qmp: Qmp, tuning: QemuMigrationTuning = {}): Promise<void> {
  await assertMigrationSafe(qmp);
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'events', state: true },
      { capability: 'return-path', state: false },
      { capability: 'postcopy-ram', state: tuning.postcopy ?? false },
      { capability: 'auto-converge', state: tuning.autoConverge ?? false },
      { capability: 'xbzrle', state: (tuning.xbzrleCacheBytes ?? 0) > 0 },
    ],
  });
  await qmp.execute('migrate-set-parameters', {
    'downtime-limit': tuning.downtimeLimitMs ?? DEFAULT_QEMU_DOWNTIME_LIMIT_MS,
    'max-bandwidth': tuning.maxBandwidth ?? UNPACED_QEMU_MAX_BANDWIDTH,
    ...((tuning.xbzrleCacheBytes ?? 0) > 0 ? { 'xbzrle-cache-size': tuning.xbzrleCacheBytes } : {}),
  });
}

/**
 * Refuses (QemuMigrationUnsafeError) a source that would lose guest writes in live migration: a TCG guest under a
 * QEMU older than TCG_MIGRATION_MIN_QEMU_VERSION. Asked of the running QEMU itself, which may not be the binary on
 * this host's PATH (an adopted VM).
 */
export async function assertMigrationSafe(qmp: Qmp): Promise<void> {
  const [{ qemu }, kvm] = await Promise.all([
    qmp.execute<{ qemu: { major: number; minor: number; micro: number } }>('query-version'),
    qmp.execute<{ enabled: boolean }>('query-kvm'),
  ]);
  if (!kvm.enabled && compareQemuVersions(qemu, TCG_MIGRATION_MIN_QEMU_VERSION) < 0) {
    throw new QemuMigrationUnsafeError(formatQemuVersion(qemu), formatQemuVersion(TCG_MIGRATION_MIN_QEMU_VERSION));
  }
}

/** Starts QEMU's migration to the relay's socket (`QemuMigrationSource.listen` first). */
export async function startQemuMigration(qmp: Qmp, socketPath: string): Promise<void> {
  await qmp.execute('migrate', { uri: `unix:${socketPath}` });
}

/**
 * Waits for QEMU's migration to finish, from MIGRATION events with `query-migrate` as the
 * authority (polled too, so a missed event costs at most POLL_MS). Resolves with the final
 * `query-migrate` on `completed`; rejects with QemuMigrationFailedError on `failed`, `cancelled`
 * or when `timeoutMs` passes (QEMU's migration is left as it is: cancel it if that is wanted).
 */
export async function waitForQemuMigration(
  qmp: Qmp,
  options: { migrationId: string; timeoutMs: number },
): Promise<QemuMigrationInfo> {
  // QEMU 7.2 says `completed` before it fills in total-time and downtime: the figures are read once they are.
  await waitForMigrationStatus(qmp, [QemuMigrationStatus.Completed], options);
  return completedFigures(qmp);
}

/** `query-migrate` status while the guest is stopped and QEMU waits for `migrate-continue` (pause-before-switchover). */
export const PRE_SWITCHOVER = 'pre-switchover';
export const POSTCOPY_ACTIVE = 'postcopy-active';
/** Statuses in which QEMU's outgoing migration is still under way (QEMU 7.2, precopy). */
export const MIGRATION_IN_PROGRESS = new Set([
  'setup',
  'active',
  'pre-switchover',
  'device',
  'cancelling',
  'wait-unplug',
]);
/** Run states from which `cont` starts the guest (after a migration that did not switch over, or a pause). */
const RESUMABLE = new Set(['paused', 'postmigrate', 'prelaunch', 'suspended']);

/**
 * Waits until QEMU's outgoing migration reaches one of `wanted` (woken by MIGRATION events, polling
 * `query-migrate` as the authority). Rejects with QemuMigrationFailedError on `failed`/`cancelled` (unless
 * wanted) or when `timeoutMs` passes.
 */
export async function waitForMigrationStatus(
  qmp: Qmp,
  wanted: readonly string[],
  options: { migrationId: string; timeoutMs: number },
): Promise<QemuMigrationInfo> {
  const deadline = performance.now() + options.timeoutMs;
  let wake: (() => void) | undefined;
  const off = qmp.on('MIGRATION', () => wake?.());
  try {
    for (;;) {
      const info = await qmp.execute<QemuMigrationInfo>('query-migrate');
      const status = info.status ?? 'none';
      if (wanted.includes(status)) return info;
      if (status === QemuMigrationStatus.Failed || status === QemuMigrationStatus.Cancelled) {
        throw new QemuMigrationFailedError({ migrationId: options.migrationId, status, detail: info['error-desc'] });
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new QemuMigrationFailedError({
          migrationId: options.migrationId,
          status: `still ${status} after ${options.timeoutMs} ms (waiting for ${wanted.join('/')})`,
        });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(POLL_MS, left));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    off();
  }
}

/**
 * The source's `query-migrate` once its figures are in. QEMU 7.2 sets `completed` before it computes `total-time`
 * and `downtime` (migration_calculate_complete runs after), so a query right after the event can read zeros: ask
 * again, briefly, until `total-time` is set.
 */
export async function completedFigures(qmp: Qmp, timeoutMs = 2_000): Promise<QemuMigrationInfo> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<QemuMigrationInfo>('query-migrate');
    if ((info['total-time'] ?? 0) > 0 || performance.now() > deadline) return info;
    await sleep(20);
  }
}

/** Waits until no outgoing migration is in progress on `qmp` (after a cancel); the last `query-migrate`. */
export async function waitForMigrationIdle(qmp: Qmp, timeoutMs: number): Promise<QemuMigrationInfo> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<QemuMigrationInfo>('query-migrate');
    if (!MIGRATION_IN_PROGRESS.has(info.status ?? 'none') || performance.now() > deadline) return info;
    await sleep(POLL_MS / 2);
  }
}

/**
 * Makes sure the guest runs: `cont` from a resumable state, waiting out transient ones (`finish-migrate`,
 * `inmigrate` while a cancel unwinds). Returns the final run state.
 */
export async function ensureRunning(qmp: Qmp, timeoutMs: number): Promise<string> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const status = await qmp.execute<QmpStatus>('query-status');
    if (status.running) return status.status;
    if (performance.now() > deadline) return status.status;
    if (RESUMABLE.has(status.status)) {
      await qmp.execute('cont').catch(() => undefined);
    } else {
      await sleep(POLL_MS / 2);
    }
  }
}
