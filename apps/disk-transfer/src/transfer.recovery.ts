import { lstat, rm } from 'node:fs/promises';
import { type DiskPhase, type DiskProgress } from '@wanmig/protocol';
import { DiskExport } from './disk.export.js';
import type { MigrationRecord, TransferStore } from './transfer.store.js';

interface RecoveryLogger {
  log(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/**
 * Serves every export on record again, at the address it had: the guest's NBD client reconnects there and re-issues
 * what was not acknowledged. An export with a migration under way reads its activity log and keeps tracking before it
 * listens, so no write reaches the image unrecorded. One that cannot be served again is logged and left on record.
 */
export async function restoreExports(
  store: TransferStore,
  running: MigrationRecord[],
  logger: RecoveryLogger,
): Promise<Map<string, DiskExport>> {
  const { records, problems } = await store.exports();
  for (const problem of problems) logger.error(`export record: ${problem}`);
  const moving = new Set(running.map((m) => m.request.exportName).filter((n): n is string => n !== undefined));
  const restored = new Map<string, DiskExport>();
  for (const record of records) {
    try {
      // A unix socket left by the killed process would refuse the listen.
      if ('path' in record.listen) await removeStaleSocket(record.listen.path);
      const disk = await DiskExport.open({
        imagePath: record.imagePath,
        role: record.role,
        blockSize: record.blockSize,
        name: record.name,
        listen: record.listen,
        activityLogPath: store.activityLogPath(record.name),
        resumeActivity: moving.has(record.name),
      });
      for (const problem of disk.activityProblems) {
        logger.warn(`export ${record.name}: ${problem}: every block counts as unsure`);
      }
      restored.set(record.name, disk);
      logger.log(`exporting ${record.imagePath} again as ${disk.address.uri} (${disk.role})`);
    } catch (err) {
      logger.error(`export ${record.name} not served again: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return restored;
}

async function removeStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat?.isSocket()) await rm(path, { force: true });
}

/** The progress of a finished migration whose record kept none (written before it was kept). */
export function restoredProgress(migrationId: string, phase: DiskPhase): DiskProgress {
  return {
    migrationId,
    phase,
    round: 0,
    sizeBytes: 0,
    bulkBytes: 0,
    dirtyBytes: 0,
    rawBytesSent: 0,
    frameBytesSent: 0,
    resentBytes: 0,
    elapsedSeconds: 0,
    throttle: {
      engaged: false,
      limitBytesPerSecond: null,
      writesDelayed: 0,
      totalDelayMs: 0,
      guestBytes: 0,
      engagedAtMs: null,
    },
  };
}
