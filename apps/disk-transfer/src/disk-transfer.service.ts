import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  DiskPhase,
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
  type DiskMigrationReport,
  type DiskProgress,
  type ExportDiskReply,
  type WireError,
} from '@wanmig/protocol';
import { access, constants } from 'node:fs/promises';
import { DiskExport } from './disk.export.js';
import { imageError } from './errors.js';
import { DiskMigration } from './disk.migration.js';
import { DISK_TRANSFER_CONFIG, NATS_CONNECTION, type DiskTransferConfig } from './disk-transfer.config.js';
import { restoreExports, restoredProgress } from './transfer.recovery.js';
import { MigrationOutcome, TransferStore, type MigrationRecord, type StoredMigrateRequest } from './transfer.store.js';

interface MigrationEntry {
  request: StoredMigrateRequest;
  /** Absent for a migration that had finished before this process started (its record answers for it). */
  migration?: DiskMigration;
  report?: DiskMigrationReport;
  error?: WireError;
  /** What a finished migration restored from its record reports as its progress. */
  finalProgress?: DiskProgress;
  /** Settles once the outcome is on record (a finalize answers only then: a restart must not resume a done copy). */
  settled: Promise<void>;
}

export type MigrationState = DiskProgress & {
  report?: DiskMigrationReport;
  error?: { code: string; message: string };
};

/**
 * The source side's disks (exports) and the migrations moving them. Both are on record under the data directory, so
 * a disk-transfer killed and started again serves every disk again at the same address (the guest's NBD client
 * reconnects there) and resumes every migration that was under way (see DiskMigration's `resume`).
 */
@Injectable()
export class DiskTransferService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('disk-transfer');
  private readonly exports = new Map<string, DiskExport>();
  private readonly migrations = new Map<string, MigrationEntry>();
  private store!: TransferStore;
  private stopping = false;

  constructor(
    @Inject(NATS_CONNECTION) private readonly nc: NatsConnection,
    @Inject(DISK_TRANSFER_CONFIG) private readonly config: DiskTransferConfig,
  ) {}

  /** Before the control subjects open: every export served again, every migration under way resumed. */
  async onApplicationBootstrap(): Promise<void> {
    this.store = await TransferStore.open(this.config.dataDir);
    const { records, problems } = await this.store.migrations();
    for (const problem of problems) this.logger.error(`migration record: ${problem}`);
    const running = records.filter((r) => r.outcome === MigrationOutcome.Running);
    const restored = await restoreExports(this.store, running, this.logger);
    for (const [name, disk] of restored) this.exports.set(name, disk);
    for (const record of records) {
      if (record.outcome === MigrationOutcome.Running) this.resume(record);
      else this.migrations.set(record.request.migrationId, finishedEntry(record));
    }
  }

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
      activityLogPath: this.store.activityLogPath(req.name),
    }).catch((err: unknown) => {
      throw imageError(req.imagePath, err);
    });
    try {
      const a = disk.address;
      await this.store.saveExport({
        name: req.name,
        imagePath: req.imagePath,
        role: disk.role,
        blockSize: disk.dirty.blockSize,
        listen: a.transport === 'tcp' ? { host: a.host, port: a.port } : { path: a.path },
      });
    } catch (err) {
      await disk.close();
      throw err;
    }
    this.exports.set(req.name, disk);
    this.logger.log(`exporting ${req.imagePath} as ${disk.address.uri} (${disk.role})`);
    return { name: req.name, uri: disk.address.uri, sizeBytes: disk.size };
  }

  async unexport(body: unknown): Promise<{ name: string }> {
    const { name } = validateDto(ExportRef, body);
    const disk = this.exports.get(name);
    if (!disk) throw new WanmigError(ErrorCode.NotFound, `no export named ${name}`);
    if ([...this.migrations.values()].some((m) => m.request.exportName === name && !m.report && !m.error)) {
      throw new WanmigError(ErrorCode.Conflict, `export ${name} is being migrated`);
    }
    this.exports.delete(name);
    await disk.close();
    await this.store.removeExport(name);
    for (const [id, m] of this.migrations) if (m.request.exportName === name) this.migrations.delete(id);
    return { name };
  }

  /** Starts a migration and replies at once (once it is on record); progress is published on its events subject. */
  async migrate(body: unknown): Promise<{ migrationId: string }> {
    const req = validateDto(MigrateDiskRequest, body);
    const known = this.migrations.get(req.migrationId);
    if (known) return { migrationId: req.migrationId }; // idempotent: the same request again
    const disk = req.exportName !== undefined ? this.exports.get(req.exportName) : undefined;
    if (req.exportName !== undefined && !disk) {
      throw new WanmigError(ErrorCode.NotFound, `no export named ${req.exportName}`);
    }
    const busy = [...this.migrations.values()].find(
      (m) => m.request.exportName !== undefined && m.request.exportName === req.exportName && !m.report && !m.error,
    );
    if (busy) {
      throw new WanmigError(
        ErrorCode.Conflict,
        `export ${req.exportName} is already moving (${busy.request.migrationId})`,
      );
    }
    if (!disk) {
      // An image nobody exports: check it now, so a typo fails the request rather than the run.
      await access(req.imagePath!, constants.R_OK).catch((err: unknown) => {
        throw imageError(req.imagePath!, err);
      });
    }
    if (this.migrations.has(req.migrationId)) return { migrationId: req.migrationId };
    const request: StoredMigrateRequest = { ...req };
    // Earlier migrations of this export are over: only the latest one answers for it.
    for (const [id, m] of this.migrations) {
      if (req.exportName !== undefined && m.request.exportName === req.exportName) {
        this.migrations.delete(id);
        await this.store.removeMigration(m);
      }
    }
    await this.store.saveMigration({ request, outcome: MigrationOutcome.Running });
    this.start(request, disk, false);
    return { migrationId: req.migrationId };
  }

  progress(body: unknown): MigrationState {
    const entry = this.entry(body);
    return { ...this.progressOf(entry), report: entry.report, error: entry.error };
  }

  /**
   * The final drain of a migration started with `hold` (the VM is paused); replies with the report once the
   * destination holds every block (verified when asked). Idempotent: while finalizing or after, every call gets the
   * same report, or the same typed error. A migration without hold: CONFLICT (it drained on its own, and writes may
   * have gone on after that).
   */
  async finalize(body: unknown): Promise<DiskMigrationReport> {
    const entry = this.entry(body);
    if (!entry.migration) {
      if (entry.report) return entry.report;
      throw new WanmigError(entry.error!.code, entry.error!.message);
    }
    const known = entry.report !== undefined || entry.error !== undefined;
    const t0 = performance.now();
    const report = await entry.migration.finalize();
    await entry.settled;
    if (!known) {
      this.logger.log(
        `migration ${report.migrationId} finalized in ${(performance.now() - t0).toFixed(0)} ms ` +
          `(${report.finalDrainBytes} bytes in the final drain, writes frozen ${report.downtimeMs.toFixed(0)} ms)`,
      );
    }
    return report;
  }

  /** A new budget for a running migration (bits per second), kept on record; replies with its progress. */
  async setBandwidth(body: unknown): Promise<MigrationState> {
    const req = validateDto(SetDiskBandwidthRequest, body);
    const entry = this.entry({ migrationId: req.migrationId });
    if (entry.report || entry.error || !entry.migration)
      throw new WanmigError(ErrorCode.Conflict, `migration ${req.migrationId} has finished`);
    entry.migration.setBandwidth(req.bandwidthBps);
    entry.request = { ...entry.request, bandwidthBps: req.bandwidthBps };
    await this.store.saveMigration({ request: entry.request, outcome: MigrationOutcome.Running });
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
    const id = entry.request.migrationId;
    if (!entry.migration) {
      // Finished before this process started: writes are not frozen here any more; a failed one has nothing to stop.
      const frozen = entry.request.keepFrozen || entry.request.hold;
      if (entry.report && !frozen) throw new WanmigError(ErrorCode.Conflict, `migration ${id} has finished`);
      return { ...this.progressOf(entry), report: entry.report, error: entry.error };
    }
    if (!entry.migration.abort()) throw new WanmigError(ErrorCode.Conflict, `migration ${id} has finished`);
    if (entry.report) this.logger.warn(`migration ${id} rolled back after it finished: the source's writes thaw`);
    return { ...entry.migration.progress(), report: entry.report, error: entry.error };
  }

  /**
   * Stops serving. Migrations under way stop sending but stay on record as running, with their activity logs: like a
   * crash, a stop is resumed from at the next start.
   */
  async onApplicationShutdown(): Promise<void> {
    this.stopping = true;
    for (const entry of this.migrations.values()) if (!entry.report && !entry.error) entry.migration?.abort();
    for (const disk of this.exports.values()) await disk.close();
    this.exports.clear();
    await this.nc.drain();
  }

  /** A migration under way when the process before stopped: it goes on from what the destination and the log say. */
  private resume(record: MigrationRecord): void {
    const { request } = record;
    const disk = request.exportName !== undefined ? this.exports.get(request.exportName) : undefined;
    if (request.exportName !== undefined && !disk) {
      // Its writes could not be tracked: resuming would miss them. Failed, on record; the caller rolls back.
      const error = toWireError(
        new WanmigError(ErrorCode.Unavailable, `export ${request.exportName} could not be served again`),
      );
      this.migrations.set(request.migrationId, { request, error, settled: Promise.resolve() });
      void this.store.saveMigration({ request, outcome: MigrationOutcome.Failed, error }).catch(() => undefined);
      return;
    }
    this.logger.log(`resuming migration ${request.migrationId}${disk ? ` of ${request.exportName}` : ''}`);
    this.start(request, disk, true);
  }

  private start(request: StoredMigrateRequest, disk: DiskExport | undefined, resumed: boolean): void {
    const events = Subjects.diskEvents(request.migrationId);
    const migration = new DiskMigration({
      migrationId: request.migrationId,
      nc: this.nc,
      destSite: request.toSite,
      imagePath: disk?.imagePath ?? request.imagePath!,
      blockSize: disk?.dirty.blockSize ?? request.blockSize,
      disk,
      bandwidthBps: request.bandwidthBps || undefined,
      downtimeMs: request.downtimeMs,
      maxRounds: request.maxRounds,
      codec: request.codec,
      verify: request.verify,
      destPath: request.destPath,
      keepFrozen: request.keepFrozen,
      hold: request.hold,
      giveUpAfterMs: request.giveUpAfterMs,
      ...(resumed ? { resume: { unsure: disk?.activity?.unsureBlocks() } } : {}),
      log: (line) => this.logger.log(line),
      onProgress: (p) => this.nc.publish(events, JSON.stringify({ type: 'progress', ...p })),
    });
    const entry: MigrationEntry = { request, migration, settled: Promise.resolve() };
    this.migrations.set(request.migrationId, entry);
    entry.settled = migration.run().then(
      async (report) => {
        entry.report = report;
        await this.settle(entry, MigrationOutcome.Done, disk);
        this.nc.publish(events, JSON.stringify({ type: 'completed', report }));
        this.logger.log(
          `migration ${request.migrationId} done: ${report.rawBytesSent} bytes in ${report.totalSeconds.toFixed(1)} s`,
        );
      },
      async (err: unknown) => {
        // Stopped by this process's shutdown: still running as far as the record goes, resumed at the next start.
        if (this.stopping) return;
        entry.error = toWireError(err);
        await this.settle(entry, MigrationOutcome.Failed, disk);
        this.nc.publish(events, JSON.stringify({ type: 'failed', error: entry.error }));
        this.logger.error(
          `migration ${request.migrationId} failed: ${err instanceof Error ? err.message : String(err)}`,
        );
      },
    );
  }

  /** The outcome on record, and the export's activity log closed: nothing is resumed after this. */
  private async settle(entry: MigrationEntry, outcome: MigrationOutcome, disk: DiskExport | undefined): Promise<void> {
    const progress = entry.migration?.progress();
    try {
      await this.store.saveMigration({
        request: entry.request,
        outcome,
        ...(progress ? { progress } : {}),
        ...(entry.report ? { report: entry.report } : {}),
        ...(entry.error ? { error: entry.error } : {}),
      });
      await disk?.stopTracking();
    } catch (err) {
      this.logger.error(`migration ${entry.request.migrationId}: outcome not recorded: ${toWireError(err).message}`);
    }
  }

  private progressOf(entry: MigrationEntry): DiskProgress {
    return (
      entry.migration?.progress() ??
      entry.finalProgress ??
      restoredProgress(entry.request.migrationId, entry.error ? DiskPhase.Failed : DiskPhase.Done)
    );
  }

  private entry(body: unknown): MigrationEntry {
    const { migrationId } = validateDto(MigrationRef, body);
    const entry = this.migrations.get(migrationId);
    if (!entry) throw new WanmigError(ErrorCode.NotFound, `no migration ${migrationId} on this site`);
    return entry;
  }
}

function finishedEntry(record: MigrationRecord): MigrationEntry {
  return {
    request: record.request,
    ...(record.report ? { report: record.report } : {}),
    ...(record.error ? { error: record.error } : {}),
    ...(record.progress ? { finalProgress: record.progress } : {}),
    settled: Promise.resolve(),
  };
}
