import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import type { HypervisorDriver } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DiskTransferVerb,
  ErrorCode,
  MigrateMemoryRequest,
  MigrationRef,
  ServiceName,
  Subjects,
  toWireError,
  validateDto,
  WanmigError,
} from '@wanmig/protocol';
import { DEFAULT_GIVE_UP_MS, TokenBucket } from '@wanmig/stream';
import {
  HYPERVISOR_DRIVER,
  MEMORY_PRECOPY_CONFIG,
  NATS_CONNECTION,
  type MemoryPrecopyConfig,
} from './memory-precopy.config.js';
import { MemoryProceedRefusedError } from './errors.js';
import { MemoryMigration } from './memory.migration.js';
import { PauseReadiness } from './pause.readiness.js';
import { QemuMemoryMigration } from './qemu/qemu-memory.migration.js';
import { QemuRelayRegistry } from './qemu/qemu-relay.registry.js';
import type { DiskMigrationReport, MemoryMigrationReport, MemoryProgress } from '@wanmig/protocol';

/** How long the pause may wait for the disk's final drain (and verify) before the migration rolls back. */
export const DISK_FINALIZE_TIMEOUT_MS = 120_000;

/** What the service needs of an engine: the sim guest's pages (MemoryMigration), or QEMU's own stream. */
type MemoryEngine = Pick<MemoryMigration, 'migrationId' | 'run' | 'progress' | 'abort' | 'proceed'>;

interface Entry {
  migration: MemoryEngine;
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
    @Inject(MEMORY_PRECOPY_CONFIG) private readonly config: MemoryPrecopyConfig,
    @Inject(QemuRelayRegistry) private readonly relays: QemuRelayRegistry,
  ) {}

  async migrate(body: unknown): Promise<{ migrationId: string }> {
    const req = validateDto(MigrateMemoryRequest, body);
    if (this.migrations.has(req.migrationId)) return { migrationId: req.migrationId };
    const busy = [...this.migrations.values()].find((m) => m.vmId === req.vmId && !m.report && !m.error);
    if (busy)
      throw new WanmigError(ErrorCode.Conflict, `VM ${req.vmId} is already moving (${busy.migration.migrationId})`);
    if (req.driver === 'qemu') return this.migrateQemu(req);
    const vm = await this.driver.attach(req.vmId);
    if (this.migrations.has(req.migrationId)) return { migrationId: req.migrationId };
    const events = Subjects.memoryEvents(req.migrationId);
    const readiness = new PauseReadiness({
      nc: this.nc,
      migrationId: req.migrationId,
      site: this.config.site,
      destSite: req.toSite,
      diskMigrationId: req.diskMigrationId,
      giveUpAfterMs: req.giveUpAfterMs ?? DEFAULT_GIVE_UP_MS,
    });
    let heldOffFor: string | undefined;
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
      giveUpAfterMs: req.giveUpAfterMs,
      readyToPause: async () => {
        const reason = await readiness.check();
        if (reason !== heldOffFor) {
          if (reason) this.logger.warn(`migration ${req.migrationId}: pause held off: ${reason}`);
          else this.logger.log(`migration ${req.migrationId}: every service is ready, pausing`);
          heldOffFor = reason;
        }
        return reason;
      },
      holdBeforeResume: req.holdBeforeResume,
      holdTimeoutMs: req.holdTimeoutMs,
      ...(req.diskMigrationId ? this.diskHooks(req.migrationId, req.diskMigrationId) : {}),
      onProgress: (p) => this.nc.publish(events, JSON.stringify({ type: 'progress', ...p })),
      onResumed: (destination) => this.nc.publish(events, JSON.stringify({ type: 'resumed', ...destination })),
    });
    // The destination runs the VM: the source lets it go for good, unless the caller ends it itself (a later step may
    // still fail and roll back to it).
    this.track(req, migration, async () => {
      if (req.keepSource) await vm.detach?.();
      else await vm.release().catch((err: unknown) => this.logger.warn(`releasing ${req.vmId}: ${String(err)}`));
    });
    return { migrationId: req.migrationId };
  }

  /**
   * A QEMU VM: QEMU migrates itself through this service's relay. The source VM is never released here: the
   * orchestrator stops it once the destination is adopted (keepSource), or it runs on after a rollback.
   */
  private migrateQemu(req: MigrateMemoryRequest): { migrationId: string } {
    const events = Subjects.memoryEvents(req.migrationId);
    const migration = new QemuMemoryMigration({
      migrationId: req.migrationId,
      nc: this.nc,
      destSite: req.toSite,
      vmId: req.vmId,
      runtimeDir: this.config.runtimeDir,
      relays: this.relays,
      downtimeMs: req.downtimeMs,
      bandwidthBps: req.bandwidthBps || undefined,
      holdBeforeResume: req.holdBeforeResume,
      holdTimeoutMs: req.holdTimeoutMs,
      ...(req.diskMigrationId ? this.diskHooks(req.migrationId, req.diskMigrationId) : {}),
      onProgress: (p) => this.nc.publish(events, JSON.stringify({ type: 'progress', ...p })),
      onResumed: (destination) => this.nc.publish(events, JSON.stringify({ type: 'resumed', ...destination })),
    });
    this.track(req, migration, () => Promise.resolve());
    return { migrationId: req.migrationId };
  }

  private track(req: MigrateMemoryRequest, migration: MemoryEngine, release: () => Promise<void>): void {
    const events = Subjects.memoryEvents(req.migrationId);
    const entry: Entry = { migration, vmId: req.vmId };
    this.migrations.set(req.migrationId, entry);
    migration.run().then(
      async (report) => {
        entry.report = report;
        await release();
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
  }

  progress(body: unknown): MemoryState {
    const entry = this.entry(body);
    return { ...entry.migration.progress(), report: entry.report, error: entry.error };
  }

  /** Stops a migration and rolls back to the source, as long as the destination has not started resuming the VM. */
  abort(body: unknown): MemoryState {
    const entry = this.entry(body);
    if (entry.report || !entry.migration.abort()) {
      throw new WanmigError(
        ErrorCode.Conflict,
        `migration ${entry.migration.migrationId} cannot be aborted: the destination is resuming/has resumed VM ${entry.vmId}`,
      );
    }
    return { ...entry.migration.progress(), error: entry.error };
  }

  /** The go of a held switchover (`holdBeforeResume`): the destination runs the VM next. A repeat answers the same. */
  proceed(body: unknown): MemoryState {
    const entry = this.entry(body);
    if (!entry.report && (entry.error || !entry.migration.proceed())) {
      const { phase } = entry.migration.progress();
      throw new MemoryProceedRefusedError(
        entry.migration.migrationId,
        phase,
        entry.error ? `it failed and rolled back (${entry.error.message})` : 'it is not holding before the resume',
      );
    }
    return { ...entry.migration.progress(), report: entry.report, error: entry.error };
  }

  async onApplicationShutdown(): Promise<void> {
    for (const entry of this.migrations.values()) if (!entry.report && !entry.error) entry.migration.abort();
    await this.nc.drain();
  }

  /**
   * The disk migration of this site's disk-transfer that moves the VM's disk (started with `hold`): finalized while
   * the VM is paused; on a rollback after that, aborted, so the source's disk writes thaw. The orchestrator aborts it
   * too: this is the safety net, and its errors are only logged.
   */
  private diskHooks(migrationId: string, diskMigrationId: string) {
    const subject = (verb: DiskTransferVerb) => controlSubject(this.config.site, ServiceName.DiskTransfer, verb);
    return {
      whilePaused: () =>
        callControl<DiskMigrationReport>(
          this.nc,
          subject(DiskTransferVerb.Finalize),
          { migrationId: diskMigrationId },
          DISK_FINALIZE_TIMEOUT_MS,
        ),
      afterRollBack: async () => {
        try {
          await callControl(this.nc, subject(DiskTransferVerb.Abort), { migrationId: diskMigrationId });
          this.logger.warn(`migration ${migrationId} rolled back: disk migration ${diskMigrationId} aborted`);
        } catch (err) {
          this.logger.error(
            `migration ${migrationId} rolled back, but aborting disk migration ${diskMigrationId} failed: ${err instanceof Error ? err.message : String(err)}`,
          );
        }
      },
    };
  }

  private entry(body: unknown): Entry {
    const { migrationId } = validateDto(MigrationRef, body);
    const entry = this.migrations.get(migrationId);
    if (!entry) throw new WanmigError(ErrorCode.NotFound, `no memory migration ${migrationId} on this site`);
    return entry;
  }
}
