import { randomUUID } from 'node:crypto';
import {
  CreateMigrationRequest,
  CreateVmRequest,
  ErrorCode,
  ImportVmRequest,
  isTerminalPhase,
  ListMigrationsRequest,
  MigrationRef,
  validateDto,
  VmRef,
  WanmigError,
  type CloudEvent,
  type ListMigrationsReply,
  type ListSitesReply,
  type ListVmsReply,
  type MigrationView,
  type SiteInfo,
  type VmView,
} from '@wanmig/protocol';
import { type OrchestratorApi } from '../orchestrator.api.js';

const AT = '2025-01-01T10:00:00.000Z';

/**
 * An OrchestratorApi in memory for the HTTP layer's specs: it validates bodies with the real DTOs (so validation
 * errors are the API's own), keeps migrations and VMs in maps, and records every call's body.
 */
export class FakeOrchestratorApi implements OrchestratorApi {
  readonly calls: { operation: keyof OrchestratorApi; body: unknown }[] = [];
  readonly migrations = new Map<string, MigrationView>();
  readonly vms = new Map<string, VmView>();
  /** Thrown by the next call instead of answering. */
  failNext?: Error;
  /** Every call waits for this before answering (a request in flight). */
  hold?: Promise<void>;
  /** Free disk at the site: a bigger VM is refused with NO_SPACE. */
  freeDiskBytes = 64 * 2 ** 30;

  private async enter(operation: keyof OrchestratorApi, body: unknown): Promise<void> {
    this.calls.push({ operation, body });
    await this.hold;
    const failure = this.failNext;
    if (failure !== undefined) {
      this.failNext = undefined;
      throw failure;
    }
  }

  addVm(vmId: string): VmView {
    const vm: VmView = {
      vmId,
      site: 'site-a',
      state: 'running',
      ramBytes: 256 * 2 ** 20,
      diskBytes: 256 * 2 ** 20,
      workload: 'web',
      diskPath: `/data/${vmId}.img`,
      createdAt: AT,
    };
    this.vms.set(vmId, vm);
    return vm;
  }

  addMigration(fields: Partial<MigrationView> = {}): MigrationView {
    const id = fields.id ?? randomUUID();
    const migration: MigrationView = {
      id,
      vmId: 'vm-1',
      fromSite: 'site-a',
      toSite: 'site-b',
      options: { downtimeMs: 300, policy: 'smart', verify: true },
      phase: 'PLANNED',
      epoch: 0,
      history: [{ phase: 'PLANNED', at: AT }],
      createdAt: AT,
      updatedAt: AT,
      ...fields,
    };
    this.migrations.set(id, migration);
    return migration;
  }

  async createMigration(body: unknown): Promise<MigrationView> {
    await this.enter('createMigration', body);
    const req = validateDto(CreateMigrationRequest, body);
    if (!this.vms.has(req.vmId)) throw new WanmigError(ErrorCode.NotFound, `no VM ${req.vmId} at site-a`);
    if ([...this.migrations.values()].some((m) => m.vmId === req.vmId && !isTerminalPhase(m.phase))) {
      throw new WanmigError(ErrorCode.Conflict, `VM ${req.vmId} is already migrating`);
    }
    const { downtimeMs, policy, verify, bandwidthBps } = req;
    return this.addMigration({
      vmId: req.vmId,
      toSite: req.toSite,
      options: { downtimeMs, policy, verify, ...(bandwidthBps === undefined ? {} : { bandwidthBps }) },
    });
  }

  async getMigration(body: unknown): Promise<MigrationView> {
    await this.enter('getMigration', body);
    return this.migration(validateDto(MigrationRef, body).migrationId);
  }

  async listMigrations(body: unknown): Promise<ListMigrationsReply> {
    await this.enter('listMigrations', body);
    const req = validateDto(ListMigrationsRequest, body);
    const migrations = [...this.migrations.values()].filter(
      (m) => (!req.unfinished || !isTerminalPhase(m.phase)) && (req.vmId === undefined || m.vmId === req.vmId),
    );
    return { migrations };
  }

  async abortMigration(body: unknown): Promise<MigrationView> {
    await this.enter('abortMigration', body);
    const migration = this.migration(validateDto(MigrationRef, body).migrationId);
    if (isTerminalPhase(migration.phase)) {
      throw new WanmigError(ErrorCode.Conflict, `migration ${migration.id} cannot be aborted in ${migration.phase}`);
    }
    const aborted: MigrationView = { ...migration, phase: 'ROLLING_BACK', epoch: migration.epoch + 1 };
    this.migrations.set(aborted.id, aborted);
    return aborted;
  }

  async migrationEvents(body: unknown): Promise<CloudEvent[]> {
    await this.enter('migrationEvents', body);
    const migration = this.migration(validateDto(MigrationRef, body).migrationId);
    return [
      {
        specversion: '1.0',
        id: randomUUID(),
        source: 'wanmig/orchestrator/site-a',
        type: 'io.wanmig.migration.phase-changed',
        subject: migration.id,
        time: AT,
        datacontenttype: 'application/json',
        data: { migrationId: migration.id, vmId: migration.vmId, from: 'PLANNED', to: 'PREPARING', epoch: 1 },
      },
    ];
  }

  async createVm(body: unknown): Promise<VmView> {
    await this.enter('createVm', body);
    const req = validateDto(CreateVmRequest, body);
    if (this.vms.has(req.vmId)) throw new WanmigError(ErrorCode.Conflict, `VM ${req.vmId} exists`);
    if (req.diskBytes > this.freeDiskBytes)
      throw new WanmigError(ErrorCode.NoSpace, `no room for ${req.diskBytes} bytes`);
    const vm = { ...this.addVm(req.vmId), ramBytes: req.ramBytes, diskBytes: req.diskBytes, workload: req.workload };
    this.vms.set(vm.vmId, vm);
    return vm;
  }

  async importVm(body: unknown): Promise<VmView> {
    await this.enter('importVm', body);
    const req = validateDto(ImportVmRequest, body);
    if (this.vms.has(req.vmId)) throw new WanmigError(ErrorCode.Conflict, `VM ${req.vmId} exists`);
    const vm: VmView = { ...this.addVm(req.vmId), driver: 'qemu', diskPath: `/srv/${req.vmId}.img` };
    this.vms.set(vm.vmId, vm);
    return vm;
  }

  async getVm(body: unknown): Promise<VmView> {
    await this.enter('getVm', body);
    return this.vm(validateDto(VmRef, body).vmId);
  }

  async listVms(body: unknown): Promise<ListVmsReply> {
    await this.enter('listVms', body);
    return { vms: [...this.vms.values()] };
  }

  async removeVm(body: unknown): Promise<{ vmId: string }> {
    await this.enter('removeVm', body);
    const { vmId } = this.vm(validateDto(VmRef, body).vmId);
    this.vms.delete(vmId);
    return { vmId };
  }

  async siteInfo(body: unknown): Promise<SiteInfo> {
    await this.enter('siteInfo', body);
    return this.site();
  }

  async listSites(body: unknown): Promise<ListSitesReply> {
    await this.enter('listSites', body);
    return {
      sites: [
        { ...this.site(), reachable: true },
        { site: 'site-b', reachable: false, error: 'no answer within 5000 ms' },
      ],
    };
  }

  private site(): SiteInfo {
    return {
      site: 'site-a',
      freeDiskBytes: this.freeDiskBytes,
      freeRamBytes: 8 * 2 ** 30,
      vms: this.vms.size,
      migrationsRunning: 0,
    };
  }

  private migration(id: string): MigrationView {
    const migration = this.migrations.get(id);
    if (migration === undefined) throw new WanmigError(ErrorCode.NotFound, `no migration ${id}`);
    return migration;
  }

  private vm(vmId: string): VmView {
    const vm = this.vms.get(vmId);
    if (vm === undefined) throw new WanmigError(ErrorCode.NotFound, `no VM ${vmId} at site-a`);
    return vm;
  }
}
