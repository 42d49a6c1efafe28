import { QmpClient, QmpConnectError, type QmpStatus } from '@wanmig/hypervisor';
import { ErrorCode } from '@wanmig/protocol';
import { sleep } from '@wanmig/testing';
import {
  QemuMigrationFailedError,
  QemuMigrationStatus,
  type QemuMigrationInfo,
} from '../../../memory-precopy/src/qemu/index.js';
import { QemuMigrationInterruptedError } from './qemu-migration.errors.js';

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
const POLL_MS = 100;

type Qmp = Pick<QmpClient, 'execute' | 'on'>;

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
 * Waits for a destination QEMU started with `-incoming ... -S` to have loaded the whole stream: its incoming
 * migration `completed` and the guest `paused` (or `prelaunch`), ready for `cont`. Rejects when QEMU gives up on
 * the stream (incoming `failed`, run state `internal-error`/`shutdown`) or after `timeoutMs`.
 */
export async function waitForIncomingLoaded(
  qmp: Qmp,
  options: { migrationId: string; timeoutMs: number; postcopy?: boolean },
): Promise<QmpStatus> {
  const deadline = performance.now() + options.timeoutMs;
  // Woken by the destination's MIGRATION events (when it has them on), polled otherwise.
  let wake: (() => void) | undefined;
  const off = qmp.on('MIGRATION', () => wake?.());
  try {
    return await pollIncoming();
  } finally {
    off();
  }

  async function pollIncoming(): Promise<QmpStatus> {
    for (;;) {
      const [status, info] = await Promise.all([
        qmp.execute<QmpStatus>('query-status'),
        qmp.execute<QemuMigrationInfo>('query-migrate'),
      ]);
      if (info.status === QemuMigrationStatus.Failed || /internal-error|shutdown|guest-panicked/.test(status.status)) {
        throw new QemuMigrationInterruptedError({
          migrationId: options.migrationId,
          what: 'destination-qemu',
          detail: `incoming migration ${info.status ?? '?'}, run state ${status.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`,
        });
      }
      // In post-copy the device state is loaded once the destination leaves `inmigrate` for `paused`.
      const loaded =
        info.status === QemuMigrationStatus.Completed ||
        info.status === undefined ||
        (options.postcopy === true && info.status === POSTCOPY_ACTIVE);
      if (status.running || (loaded && (status.status === 'paused' || status.status === 'prelaunch'))) return status;
      if (performance.now() > deadline) {
        throw new QemuMigrationInterruptedError({
          migrationId: options.migrationId,
          what: 'destination-qemu',
          code: ErrorCode.StreamTimeout,
          detail: `still ${status.status} (incoming ${info.status ?? '?'}) after ${options.timeoutMs} ms`,
        });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, POLL_MS / 2);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  }
}

/** Connects to a QMP socket that QEMU may not have created yet (it was just spawned). */
export async function connectQmpWhenUp(socketPath: string, timeoutMs: number): Promise<QmpClient> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return await QmpClient.connect(socketPath, { timeoutMs: Math.max(1_000, deadline - performance.now()) });
    } catch (err) {
      if (!(err instanceof QmpConnectError) || performance.now() > deadline) throw err;
      await sleep(50);
    }
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
