import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  ErrorCode,
  Subjects,
  validateDto,
  WanmigError,
  toWireError,
  ExportDiskRequest,
  ExportRef,
  MigrateDiskRequest,
  MigrationRef,
  SetDiskBandwidthRequest,
  type ExportDiskReply,
  type WireError,
} from '@wanmig/protocol';
import { access, constants } from 'node:fs/promises';
import { DiskExport } from './disk.export.js';
import { imageError } from './errors.js';
import { DiskMigration } from './disk.migration.js';
import type { DiskMigrationReport, DiskProgress } from '@wanmig/protocol';
import { NATS_CONNECTION } from './disk-transfer.config.js';

interface MigrationEntry {
  migration: DiskMigration;
  exportName?: string;
  report?: DiskMigrationReport;
  error?: WireError;
}

export type MigrationState = DiskProgress & {
  report?: DiskMigrationReport;
  error?: { code: string; message: string };
};

/** The source side's disks (exports) and the migrations moving them. */
@Injectable()
export class DiskTransferService implements OnApplicationShutdown {
  private readonly logger = new Logger('disk-transfer');
  private readonly exports = new Map<string, DiskExport>();
  private readonly migrations = new Map<string, MigrationEntry>();

  constructor(@Inject(NATS_CONNECTION) private readonly nc: NatsConnection) {}

  async export(body: unknown): Promise<ExportDiskReply> {
    const req = validateDto(ExportDiskRequest, body);
    const existing = this.exports.get(req.name);
    if (existing) {
      if (existing.imagePath !== req.imagePath) {
        throw new WanmigError(ErrorCode.Conflict, `export ${req.name} already serves ${existing.imagePath}`);
      }
      return { name: req.name, uri: existing.address.uri, sizeBytes: existing.size };
    }
    const disk = await DiskExport.open({
      imagePath: req.imagePath,
      role: req.role,
      createSize: req.createSize,
      blockSize: req.blockSize,
      name: req.name,
      listen: req.socket !== undefined ? { path: req.socket } : { host: '127.0.0.1', port: req.port ?? 0 },
    }).catch((err: unknown) => {
      throw imageError(req.imagePath, err);
    });
    this.exports.set(req.name, disk);
    this.logger.log(`exporting ${req.imagePath} as ${disk.address.uri} (${disk.role})`);
    return { name: req.name, uri: disk.address.uri, sizeBytes: disk.size };
  }

  async unexport(body: unknown): Promise<{ name: string }> {
    const { name } = validateDto(ExportRef, body);
    const disk = this.exports.get(name);
    if (!disk) throw new WanmigError(ErrorCode.NotFound, `no export named ${name}`);
    if ([...this.migrations.values()].some((m) => m.exportName === name && !m.report && !m.error)) {
      throw new WanmigError(ErrorCode.Conflict, `export ${name} is being migrated`);
    }
    this.exports.delete(name);
    await disk.close();
    return { name };
  }

  /** Starts a migration and replies at once; progress is published on its events subject. */
  async migrate(body: unknown): Promise<{ migrationId: string }> {
    const req = validateDto(MigrateDiskRequest, body);
    const known = this.migrations.get(req.migrationId);
    if (known) return { migrationId: req.migrationId }; // idempotent: the same request again
    const disk = req.exportName !== undefined ? this.exports.get(req.exportName) : undefined;
    if (req.exportName !== undefined && !disk) {
      throw new WanmigError(ErrorCode.NotFound, `no export named ${req.exportName}`);
    }
    const busy = [...this.migrations.values()].find(
      (m) => m.exportName !== undefined && m.exportName === req.exportName && !m.report && !m.error,
    );
    if (busy) {
      throw new WanmigError(
        ErrorCode.Conflict,
        `export ${req.exportName} is already moving (${busy.migration.migrationId})`,
      );
    }
    if (!disk) {
      // An image nobody exports: check it now, so a typo fails the request rather than the run.
      await access(req.imagePath!, constants.R_OK).catch((err: unknown) => {
        throw imageError(req.imagePath!, err);
      });
      if (this.migrations.has(req.migrationId)) return { migrationId: req.migrationId };
    }
    const events = Subjects.diskEvents(req.migrationId);
    const migration = new DiskMigration({
      migrationId: req.migrationId,
      nc: this.nc,
      destSite: req.toSite,
      imagePath: disk?.imagePath ?? req.imagePath!,
      blockSize: disk?.dirty.blockSize ?? req.blockSize,
      disk,
      bandwidthBps: req.bandwidthBps || undefined,
      downtimeMs: req.downtimeMs,
      maxRounds: req.maxRounds,
      codec: req.codec,
      verify: req.verify,
      destPath: req.destPath,
      keepFrozen: req.keepFrozen,
      hold: req.hold,
      onProgress: (p) => this.nc.publish(events, JSON.stringify({ type: 'progress', ...p })),
    });
    const entry: MigrationEntry = { migration, exportName: req.exportName };
    this.migrations.set(req.migrationId, entry);
    migration.run().then(
      (report) => {
        entry.report = report;
        this.nc.publish(events, JSON.stringify({ type: 'completed', report }));
        this.logger.log(
          `migration ${req.migrationId} done: ${report.rawBytesSent} bytes in ${report.totalSeconds.toFixed(1)} s`,
        );
      },
      (err: unknown) => {
        entry.error = toWireError(err);
        this.nc.publish(events, JSON.stringify({ type: 'failed', error: entry.error }));
        this.logger.error(`migration ${req.migrationId} failed: ${err instanceof Error ? err.message : String(err)}`);
      },
    );
    return { migrationId: req.migrationId };
  }

  progress(body: unknown): MigrationState {
    const entry = this.entry(body);
    return { ...entry.migration.progress(), report: entry.report, error: entry.error };
  }

  /**
   * The final drain of a migration started with `hold` (the VM is paused); replies with the report once the
   * destination holds every block (verified when asked). Idempotent: while finalizing or after, every call gets the
   * same report, or the same typed error. A migration without hold: CONFLICT (it drained on its own, and writes may
   * have gone on after that).
   */
  async finalize(body: unknown): Promise<DiskMigrationReport> {
    const entry = this.entry(body);
    const known = entry.report !== undefined || entry.error !== undefined;
    const t0 = performance.now();
    const report = await entry.migration.finalize();
    if (!known) {
      this.logger.log(
        `migration ${report.migrationId} finalized in ${(performance.now() - t0).toFixed(0)} ms ` +
          `(${report.finalDrainBytes} bytes in the final drain, writes frozen ${report.downtimeMs.toFixed(0)} ms)`,
      );
    }
    return report;
  }

  /** A new budget for a running migration (bits per second); replies with its progress. */
  setBandwidth(body: unknown): MigrationState {
    const req = validateDto(SetDiskBandwidthRequest, body);
    const entry = this.entry({ migrationId: req.migrationId });
    if (entry.report || entry.error)
      throw new WanmigError(ErrorCode.Conflict, `migration ${req.migrationId} has finished`);
    entry.migration.setBandwidth(req.bandwidthBps);
    this.logger.log(`migration ${req.migrationId}: budget now ${req.bandwidthBps} bit/s`);
    return { ...entry.migration.progress(), report: entry.report, error: entry.error };
  }

  /**
   * Stops an unfinished migration (the source's writes thaw). A finished one that left writes frozen (keepFrozen,
   * hold) has its writes thawed: the switch-over did not happen and the VM writes here again. A finished one whose
   * writes already flow: CONFLICT.
   */
  abort(body: unknown): MigrationState {
    const entry = this.entry(body);
    const id = entry.migration.migrationId;
    if (!entry.migration.abort()) throw new WanmigError(ErrorCode.Conflict, `migration ${id} has finished`);
    if (entry.report) this.logger.warn(`migration ${id} rolled back after it finished: the source's writes thaw`);
    return { ...entry.migration.progress(), report: entry.report, error: entry.error };
  }

  async onApplicationShutdown(): Promise<void> {
    for (const entry of this.migrations.values()) if (!entry.report && !entry.error) entry.migration.abort();
    for (const disk of this.exports.values()) await disk.close();
    this.exports.clear();
    await this.nc.drain();
  }

  private entry(body: unknown): MigrationEntry {
    const { migrationId } = validateDto(MigrationRef, body);
    const entry = this.migrations.get(migrationId);
    if (!entry) throw new WanmigError(ErrorCode.NotFound, `no migration ${migrationId} on this site`);
    return entry;
  }
}
