import { randomUUID } from 'node:crypto';
import { statfs, mkdir } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { freemem } from 'node:os';
import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  AdoptVmRequest,
  AttachVmNetworkRequest,
  callControl,
  controlSubject,
  CreateMigrationRequest,
  CreateVmRequest,
  ErrorCode,
  ImportVmRequest,
  isTerminalPhase,
  ListMigrationsRequest,
  MigrationEventKind,
  MigrationPhase,
  MigrationRef,
  ServiceName,
  SiteVerb,
  toWireError,
  validateDto,
  VmRef,
  VmState,
  VmVerb,
  WanmigError,
  type CloudEvent,
  type ListMigrationsReply,
  type ListSitesReply,
  type ListVmsReply,
  type MigrationView,
  type SiteInfo,
  type SiteListEntry,
  type VmNicStatus,
  type VmView,
} from '@wanmig/protocol';
import { AbortRefusedError, ConcurrentUpdateError, StaleEpochError } from './errors.js';
import { MigrationEventPublisher, replayMigrationEvents } from './migration.events.js';
import { MigrationRunner } from './migration.runner.js';
import { abortStep, newMigrationRecord } from './migration.state-machine.js';
import { natsWitnesses, ResumeState, settleSwitchover } from './migration.switchover.js';
import { MigrationStore } from './migration.store.js';
import type { OrchestratorApi } from './orchestrator.api.js';
import { NATS_CONNECTION, ORCHESTRATOR_CONFIG, peerSites, type OrchestratorConfig } from './orchestrator.config.js';
import { VmInventory } from './vm.inventory.js';

/** A site that does not answer within this long is unreachable (pre-flight, site list). */
const SITE_TIMEOUT_MS = 5000;

/**
 * The control plane of one site: its VMs, the migrations it drives (those of VMs leaving it), and the API for
 * both. Migrations are driven by the source site's orchestrator and stored in its JetStream KV.
 */
@Injectable()
export class OrchestratorService implements OrchestratorApi, OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('orchestrator');
  private readonly runners = new Map<string, MigrationRunner>();
  private store!: MigrationStore;
  private events!: MigrationEventPublisher;
  private inventory!: VmInventory;
  /** Set once the HTTP API listens (main.ts), reported by site.info. */
  httpUrl?: string;

  constructor(
    @Inject(NATS_CONNECTION) private readonly nc: NatsConnection,
    @Inject(ORCHESTRATOR_CONFIG) private readonly config: OrchestratorConfig,
  ) {}

  private get domain(): string {
    return this.config.jsDomain || this.config.site;
  }

  async onApplicationBootstrap(): Promise<void> {
    await mkdir(this.config.dataDir, { recursive: true });
    this.store = await MigrationStore.open(this.nc, { domain: this.domain });
    this.events = await MigrationEventPublisher.open(this.nc, { site: this.config.site, domain: this.domain });
    this.inventory = await VmInventory.open(this.nc, {
      site: this.config.site,
      domain: this.domain,
      dataDir: this.config.dataDir,
      simRuntimeDir: this.config.simRuntimeDir,
      qemuAccel: this.config.qemuAccel,
    });
    // A restart picks up every migration this site was driving, from the phase it wrote last.
    for (const record of await this.store.listUnfinished()) {
      if (record.fromSite !== this.config.site) continue;
      this.logger.log(`resuming migration ${record.id} of ${record.vmId} in ${record.phase}`);
      this.startRunner(record.id);
    }
  }

  async onApplicationShutdown(): Promise<void> {
    await this.nc.drain().catch(() => undefined);
  }

  async createMigration(body: unknown): Promise<MigrationView> {
    const req = validateDto(CreateMigrationRequest, body);
    await this.preflight(req);
    const id = randomUUID();
    const record = newMigrationRecord(
      {
        id,
        vmId: req.vmId,
        fromSite: this.config.site,
        toSite: req.toSite,
        options: {
          downtimeMs: req.downtimeMs,
          policy: req.policy,
          verify: req.verify,
          serviceDeadlineMs: req.serviceDeadlineMs,
          ...(req.bandwidthBps ? { bandwidthBps: req.bandwidthBps } : {}),
        },
      },
      new Date(),
    );
    await this.store.create(record);
    // Marked before the reply: a second create for the same VM, even a concurrent one, is refused from here on.
    await this.inventory.setMigrating(req.vmId, id);
    this.logger.log(`migration ${id}: ${req.vmId} ${this.config.site} → ${req.toSite}`);
    await this.events
      .publish(MigrationEventKind.PhaseChanged, id, {
        migrationId: id,
        vmId: req.vmId,
        from: '',
        to: record.phase,
        epoch: 0,
      })
      .catch(() => undefined);
    this.startRunner(id);
    return record;
  }

  async getMigration(body: unknown): Promise<MigrationView> {
    const { migrationId } = validateDto(MigrationRef, body);
    return (await this.store.require(migrationId)).record;
  }

  async listMigrations(body: unknown): Promise<ListMigrationsReply> {
    const req = validateDto(ListMigrationsRequest, body ?? {});
    let migrations = req.unfinished ? await this.store.listUnfinished() : await this.store.list();
    if (req.vmId) migrations = migrations.filter((m) => m.vmId === req.vmId);
    return { migrations };
  }

  async abortMigration(body: unknown): Promise<MigrationView> {
    const { migrationId } = validateDto(MigrationRef, body);
    // The runner may move the record between our read and our write: read again and decide again.
    for (let attempt = 1; ; attempt++) {
      const { record } = await this.store.require(migrationId);
      const step = abortStep(record); // refuses finished and post-ACTIVATE migrations, nothing changed
      if (!step) return record;
      await this.stopMemoryFirst(record);
      try {
        const { record: next } = await this.store.transition(migrationId, step);
        this.logger.log(`migration ${migrationId}: abort requested in ${record.phase}`);
        const runner = this.runners.get(migrationId);
        if (runner) runner.requestAbort();
        else this.startRunner(migrationId);
        return next;
      } catch (err) {
        if (attempt < 5 && (err instanceof StaleEpochError || err instanceof ConcurrentUpdateError)) continue;
        throw err;
      }
    }
  }

  /**
   * From memory pre-copy on, memory-precopy (or, if it forgot the migration, the destination) alone knows whether the
   * destination already runs the VM: it must agree to stop before the abort is written, or the record would roll back
   * a VM that runs over there. While nobody can tell, the abort is refused and changes nothing.
   */
  private async stopMemoryFirst(record: MigrationView): Promise<void> {
    const memoryPhases: MigrationPhase[] = [MigrationPhase.MemPrecopy, MigrationPhase.StopAndCopy];
    if (!memoryPhases.includes(record.phase)) return;
    // A QEMU VM's destination answers on its own verb: asked the sim's, it would say NOT_FOUND, read as "not resumed".
    const driver = (await this.inventory.get(record.vmId))?.driver;
    const witnesses = natsWitnesses(this.nc, this.config.site, record, driver);
    const state = await settleSwitchover(witnesses, record.phase);
    if (state === ResumeState.Resumed || state === ResumeState.Resuming)
      throw new AbortRefusedError(
        record.id,
        record.phase,
        state === ResumeState.Resumed
          ? 'the destination runs the VM already (past the point of no return)'
          : 'the destination is being asked to run the VM (the point of no return)',
      );
    if (state === ResumeState.Unknown)
      throw new WanmigError(
        ErrorCode.Unavailable,
        `migration ${record.id}: memory-precopy and ${record.toSite} do not say whether the destination runs the VM; nothing changed, try again`,
      );
  }

  async migrationEvents(body: unknown): Promise<CloudEvent[]> {
    const { migrationId } = validateDto(MigrationRef, body);
    await this.store.require(migrationId);
    return replayMigrationEvents(this.nc, { site: this.config.site, domain: this.domain, migrationId });
  }

  async createVm(body: unknown): Promise<VmView> {
    const req = validateDto(CreateVmRequest, body);
    const view = await this.inventory.create(req);
    this.logger.log(`VM ${req.vmId} runs at ${view.serviceAddress} (${req.ramBytes} B RAM, ${req.diskBytes} B disk)`);
    return view;
  }

  async importVm(body: unknown): Promise<VmView> {
    const req = validateDto(ImportVmRequest, body);
    const view = await this.inventory.importQemu(req);
    this.logger.log(`VM ${req.vmId} imported from the QEMU at ${req.qmpSocket}; runs at ${view.serviceAddress}`);
    return view;
  }

  async getVm(body: unknown): Promise<VmView> {
    const { vmId } = validateDto(VmRef, body);
    return this.inventory.describe(vmId);
  }

  async listVms(): Promise<ListVmsReply> {
    return { vms: await this.inventory.list() };
  }

  async removeVm(body: unknown): Promise<{ vmId: string }> {
    const { vmId } = validateDto(VmRef, body);
    await this.inventory.remove(vmId);
    this.logger.log(`VM ${vmId} removed`);
    return { vmId };
  }

  async adoptVm(body: unknown): Promise<VmView> {
    const req = validateDto(AdoptVmRequest, body);
    const view = await this.inventory.adopt(req);
    this.logger.log(`VM ${req.vmId} arrived by migration ${req.migrationId}; runs at ${view.serviceAddress}`);
    return view;
  }

  /** An arriving VM (resumed here by delta-apply, not adopted yet) gets its addresses at this site. */
  async attachVmNetwork(body: unknown): Promise<VmNicStatus> {
    const req = validateDto(AttachVmNetworkRequest, body);
    return this.inventory.attachNetwork(req.vmId, req.addresses);
  }

  async siteInfo(): Promise<SiteInfo> {
    const fs = await statfs(this.config.dataDir);
    const running = [...this.runners.keys()].length;
    return {
      site: this.config.site,
      freeDiskBytes: fs.bavail * fs.bsize,
      freeRamBytes: await availableMemory(),
      vms: await this.inventory.count(),
      migrationsRunning: running,
      ...(this.httpUrl ? { httpUrl: this.httpUrl } : {}),
    };
  }

  async listSites(): Promise<ListSitesReply> {
    const sites: SiteListEntry[] = [{ ...(await this.siteInfo()), reachable: true }];
    const peers = await Promise.all(
      peerSites(this.config).map(async (site): Promise<SiteListEntry> => {
        try {
          return { ...(await this.remoteSiteInfo(site)), reachable: true };
        } catch (err) {
          return { site, reachable: false, error: toWireError(err).message };
        }
      }),
    );
    return { sites: [...sites, ...peers] };
  }

  /** Bad requests are refused here, before anything is written or touched. */
  private async preflight(req: CreateMigrationRequest): Promise<void> {
    if (req.toSite === this.config.site) {
      throw new WanmigError(ErrorCode.InvalidRequest, `VM ${req.vmId} is already at ${req.toSite}`);
    }
    const vm = await this.inventory.require(req.vmId);
    const moving = (await this.store.listUnfinished()).find((m) => m.vmId === req.vmId);
    if (moving || vm.state === VmState.Migrating) {
      throw new WanmigError(
        ErrorCode.Conflict,
        `VM ${req.vmId} is already moving (migration ${moving?.id ?? vm.migrationId}, ${moving?.phase ?? 'unknown phase'})`,
      );
    }
    const live = await this.inventory.describe(req.vmId);
    if (live.state !== VmState.Running) throw new WanmigError(ErrorCode.Conflict, `VM ${req.vmId} is not running`);
    if (!peerSites(this.config).includes(req.toSite)) {
      throw new WanmigError(
        ErrorCode.NotFound,
        `unknown site ${req.toSite} (this site knows: ${peerSites(this.config).join(', ') || 'no other site'})`,
      );
    }
    const dest = await this.remoteSiteInfo(req.toSite).catch((err: unknown) => {
      throw new WanmigError(ErrorCode.Unavailable, `site ${req.toSite} is unreachable: ${toWireError(err).message}`);
    });
    if (dest.freeDiskBytes < vm.diskBytes) {
      throw new WanmigError(
        ErrorCode.NoSpace,
        `site ${req.toSite} has ${dest.freeDiskBytes} bytes free for disks, the VM's disk needs ${vm.diskBytes}`,
      );
    }
    if (dest.freeRamBytes < vm.ramBytes) {
      throw new WanmigError(
        ErrorCode.NoSpace,
        `site ${req.toSite} has ${dest.freeRamBytes} bytes of memory available, the VM needs ${vm.ramBytes}`,
      );
    }
    const clash = await callControl<VmView>(this.nc, controlSubject(req.toSite, ServiceName.Orchestrator, VmVerb.Get), {
      vmId: req.vmId,
    }).then(
      () => true,
      (err: unknown) => {
        if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return false;
        throw err;
      },
    );
    if (clash) throw new WanmigError(ErrorCode.Conflict, `site ${req.toSite} already has a VM named ${req.vmId}`);
  }

  private remoteSiteInfo(site: string): Promise<SiteInfo> {
    return callControl<SiteInfo>(
      this.nc,
      controlSubject(site, ServiceName.Orchestrator, SiteVerb.Info),
      {},
      SITE_TIMEOUT_MS,
    );
  }

  private startRunner(id: string): void {
    if (this.runners.has(id)) return;
    const runner = new MigrationRunner(
      {
        nc: this.nc,
        site: this.config.site,
        store: this.store,
        events: this.events,
        inventory: this.inventory,
        netMoved: { controllers: this.config.netMovedControllers, timeoutMs: this.config.netMovedTimeoutMs },
        holdTimeoutMs: this.config.switchoverHoldMs,
        log: (line) => this.logger.log(line),
        warn: (line) => this.logger.warn(line),
      },
      id,
    );
    this.runners.set(id, runner);
    runner
      .run()
      .then(
        (record) => {
          if (isTerminalPhase(record.phase)) this.logger.log(`migration ${id} ended ${record.phase}`);
        },
        (err: unknown) => this.logger.error(`migration ${id} runner stopped: ${toWireError(err).message}`),
      )
      .finally(() => this.runners.delete(id));
  }
}

/** MemAvailable from /proc/meminfo (what the kernel can give without swapping), else os.freemem(). */
async function availableMemory(): Promise<number> {
  try {
    const text = await readFile('/proc/meminfo', 'utf8');
    const kib = /^MemAvailable:\s+(\d+) kB/m.exec(text);
    if (kib) return Number(kib[1]) * 1024;
  } catch {
    // Not Linux: fall through.
  }
  return freemem();
}
