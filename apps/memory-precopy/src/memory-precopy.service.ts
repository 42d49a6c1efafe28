import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import type { HypervisorDriver } from '@wanmig/hypervisor';
import {
  ErrorCode,
  MigrateMemoryRequest,
  MigrationRef,
  Subjects,
  toWireError,
  validateDto,
  WanmigError,
} from '@wanmig/protocol';
import { TokenBucket } from '@wanmig/stream';
import { HYPERVISOR_DRIVER, NATS_CONNECTION } from './memory-precopy.config.js';
import { MemoryMigration } from './memory.migration.js';
import type { MemoryMigrationReport, MemoryProgress } from '@wanmig/protocol';

interface Entry {
  migration: MemoryMigration;
  vmId: string;
  report?: MemoryMigrationReport;
  error?: { code: string; message: string };
}

export type MemoryState = MemoryProgress & {
  report?: MemoryMigrationReport;
  error?: { code: string; message: string };
};

/** The source side's memory migrations: one engine per migration, one migration per VM at a time. */
@Injectable()
export class MemoryPrecopyService implements OnApplicationShutdown {
  private readonly logger = new Logger('memory-precopy');
  private readonly migrations = new Map<string, Entry>();

  constructor(
    @Inject(NATS_CONNECTION) private readonly nc: NatsConnection,
    @Inject(HYPERVISOR_DRIVER) private readonly driver: HypervisorDriver,
  ) {}

  async migrate(body: unknown): Promise<{ migrationId: string }> {
    const req = validateDto(MigrateMemoryRequest, body);
    if (this.migrations.has(req.migrationId)) return { migrationId: req.migrationId };
    const busy = [...this.migrations.values()].find((m) => m.vmId === req.vmId && !m.report && !m.error);
    if (busy)
      throw new WanmigError(ErrorCode.Conflict, `VM ${req.vmId} is already moving (${busy.migration.migrationId})`);
    const vm = await this.driver.attach(req.vmId);
    if (this.migrations.has(req.migrationId)) return { migrationId: req.migrationId };
    const events = Subjects.memoryEvents(req.migrationId);
    const migration = new MemoryMigration({
      migrationId: req.migrationId,
      nc: this.nc,
      destSite: req.toSite,
      vmId: req.vmId,
      vm,
      policy: req.policy,
      codec: req.codec,
      downtimeMs: req.downtimeMs,
      bandwidthBps: req.bandwidthBps || undefined,
      limiter: req.bandwidthBps ? new TokenBucket(req.bandwidthBps / 8) : undefined,
      diskUri: req.diskUri,
      verifyRam: req.verifyRam,
      queriesAtPause: req.queriesAtPause,
      servicePort: req.servicePort,
      onProgress: (p) => this.nc.publish(events, JSON.stringify({ type: 'progress', ...p })),
      onResumed: (destination) => this.nc.publish(events, JSON.stringify({ type: 'resumed', ...destination })),
    });
    const entry: Entry = { migration, vmId: req.vmId };
    this.migrations.set(req.migrationId, entry);
    migration.run().then(
      async (report) => {
        entry.report = report;
        // The destination runs the VM: the source lets it go for good.
        await vm.release().catch((err: unknown) => this.logger.warn(`releasing ${req.vmId}: ${String(err)}`));
        this.nc.publish(events, JSON.stringify({ type: 'completed', report }));
        this.logger.log(`VM ${req.vmId} moved to ${req.toSite}: paused ${report.pausedMs.toFixed(0)} ms`);
      },
      (err: unknown) => {
        entry.error = toWireError(err);
        this.nc.publish(events, JSON.stringify({ type: 'failed', error: entry.error }));
        this.logger.error(
          `migration ${req.migrationId} failed, source kept: ${err instanceof Error ? err.message : String(err)}`,
        );
      },
    );
    return { migrationId: req.migrationId };
  }

  progress(body: unknown): MemoryState {
    const entry = this.entry(body);
    return { ...entry.migration.progress(), report: entry.report, error: entry.error };
  }

  abort(body: unknown): MemoryState {
    const entry = this.entry(body);
    if (entry.report)
      throw new WanmigError(ErrorCode.Conflict, `migration ${entry.migration.migrationId} has finished`);
    entry.migration.abort();
    return { ...entry.migration.progress(), error: entry.error };
  }

  async onApplicationShutdown(): Promise<void> {
    for (const entry of this.migrations.values()) if (!entry.report && !entry.error) entry.migration.abort();
    await this.nc.drain();
  }

  private entry(body: unknown): Entry {
    const { migrationId } = validateDto(MigrationRef, body);
    const entry = this.migrations.get(migrationId);
    if (!entry) throw new WanmigError(ErrorCode.NotFound, `no memory migration ${migrationId} on this site`);
    return entry;
  }
}
