import type { QmpClient } from '@wanmig/hypervisor';
import { QemuMigrationFailedError } from './qemu-migration.errors.js';

/** Milliseconds of pause QEMU aims for at switchover (its own default is 300 as well). */
export const DEFAULT_QEMU_DOWNTIME_LIMIT_MS = 300;
/**
 * QEMU's own rate limit, bytes/s, when wanmig paces the stream: high enough never to bind. QEMU's
 * default (32 MiB/s) would cap a faster WAN and, on a slower one, add a second limiter that QEMU's
 * bandwidth estimate cannot tell from the link. Our socket's backpressure is the pace.
 */
export const UNPACED_QEMU_MAX_BANDWIDTH = 8 * 1024 ** 3;
const POLL_MS = 250;

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
  const deadline = performance.now() + options.timeoutMs;
  let wake: (() => void) | undefined;
  const off = qmp.on('MIGRATION', () => wake?.());
  try {
    for (;;) {
      const info = await qmp.execute<QemuMigrationInfo>('query-migrate');
      if (info.status === QemuMigrationStatus.Completed) return info;
      if (info.status === QemuMigrationStatus.Failed || info.status === QemuMigrationStatus.Cancelled) {
        throw new QemuMigrationFailedError({
          migrationId: options.migrationId,
          status: info.status,
          detail: info['error-desc'],
        });
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new QemuMigrationFailedError({
          migrationId: options.migrationId,
          status: `still ${info.status ?? 'unknown'} after ${options.timeoutMs} ms`,
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
