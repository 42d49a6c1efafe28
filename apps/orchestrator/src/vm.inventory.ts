/**
 * The VMs that run at this site, one KV entry each (the site's own JetStream domain). Creating a VM makes its disk
 * image, serves it through this site's disk-transfer (so every write is tracked from the start) and launches the
 * embedded guest on it, detached: guests outlive an orchestrator restart.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/nats-core';
import { generateSparseImage, GuestDiedError, GuestNotFoundError, SimDriver, type SimSourceVm } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DiskTransferVerb,
  ErrorCode,
  ServiceName,
  VmState,
  WanmigError,
  type AdoptVmRequest,
  type CreateVmRequest,
  type ExportDiskReply,
  type ImportVmRequest,
  type VmNicStatus,
  type VmView,
} from '@wanmig/protocol';
import { VmNetwork } from './vm.network.js';
import { QemuVms } from './vm.qemu.js';

export const DEFAULT_VM_BUCKET = 'wanmig-vms';
/** A new VM's disk holds data over this fraction of its size (the rest is holes), like a used system disk. */
const DISK_FILL = 0.25;
const MiB = 2 ** 20;
/** An imported QEMU runs its own guest: the sim driver's workload names nothing there. */
const IMPORTED_WORKLOAD = 'idle';

export interface VmRecord extends VmView {
  /** Name of the disk's export at this site's disk-transfer. */
  exportName: string;
  /** RAM file of a guest that arrived by migration (delta-apply's), deleted with the VM. */
  ramPath?: string;
  /** The disk is the user's own image (an imported VM's): never deleted here, not even once the VM moved away. */
  userDisk?: boolean;
  /** While it moves: the migration that brought it here, its `migrationId` again should this move roll back. */
  arrivedBy?: string;
}

export interface VmInventoryOptions {
  site: string;
  domain?: string;
  dataDir: string;
  simRuntimeDir: string;
  bucket?: string;
  /** How QEMU VMs launched here are accelerated (OrchestratorConfig.qemuAccel). */
  qemuAccel?: 'auto' | 'tcg' | 'kvm';
}

export class VmInventory {
  readonly driver: SimDriver;
  readonly qemu: QemuVms;
  readonly network: VmNetwork;
  /** VM ids being created or imported here now: a second request for one is refused before it touches anything. */
  private readonly arriving = new Set<string>();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly o: VmInventoryOptions,
  ) {
    this.driver = new SimDriver({ runtimeDir: o.simRuntimeDir });
    this.qemu = new QemuVms(nc, {
      site: o.site,
      dataDir: o.dataDir,
      runtimeDir: o.simRuntimeDir,
      accel: o.qemuAccel ?? 'auto',
    });
    this.network = new VmNetwork(nc);
  }

  static async open(nc: NatsConnection, options: VmInventoryOptions): Promise<VmInventory> {
    const js = jetstream(nc, options.domain ? { domain: options.domain } : {});
    const kv = await new Kvm(js).create(options.bucket ?? DEFAULT_VM_BUCKET, { history: 1 });
    return new VmInventory(nc, kv, options);
  }

  create(req: CreateVmRequest): Promise<VmView> {
    return this.arrive(req.vmId, () => (req.driver === 'qemu' ? this.createQemu(req) : this.createSim(req)));
  }

  /**
   * A QEMU someone else started becomes this site's VM (vm.import), as it runs: its image stays the user's. Refused
   * (nothing recorded, nothing started or stopped) when anything about it cannot be taken over.
   */
  importQemu(req: ImportVmRequest): Promise<VmView> {
    return this.arrive(req.vmId, async () => {
      if (req.addresses) {
        throw new WanmigError(ErrorCode.InvalidRequest, `addresses are not supported for qemu VMs yet`);
      }
      const { spec, diskBytes } = await this.qemu.import(req);
      try {
        const vm = { vmId: req.vmId, ramBytes: spec.ramMiB * MiB, diskBytes, workload: IMPORTED_WORKLOAD } as const;
        const record: VmRecord = {
          ...this.newRecord(vm, { serviceAddress: this.qemu.serviceAddress(spec), diskPath: spec.diskPath }),
          driver: 'qemu',
          userDisk: true,
        };
        await this.kv.create(req.vmId, JSON.stringify(record));
        return view(record);
      } catch (err) {
        await this.qemu.forget(req.vmId);
        throw err;
      }
    });
  }

  /** Runs the creation of `vmId` unless the id is taken or another creation of it runs (CONFLICT). */
  private async arrive(vmId: string, make: () => Promise<VmView>): Promise<VmView> {
    if (this.arriving.has(vmId))
      throw new WanmigError(ErrorCode.Conflict, `VM ${vmId} is being made at ${this.o.site}`);
    this.arriving.add(vmId);
    try {
      if (await this.get(vmId))
        throw new WanmigError(ErrorCode.Conflict, `VM ${vmId} already exists at ${this.o.site}`);
      return await make();
    } finally {
      this.arriving.delete(vmId);
    }
  }

  private async createSim(req: CreateVmRequest): Promise<VmView> {
    if (req.guest !== undefined || req.cpus !== undefined)
      throw new WanmigError(ErrorCode.InvalidRequest, `'guest' and 'cpus' are for qemu VMs`);
    const dir = join(this.o.dataDir, 'vms');
    await mkdir(dir, { recursive: true });
    const diskPath = join(dir, `${req.vmId}.img`);
    const seed = req.seed ?? 1;
    await generateSparseImage({
      path: diskPath,
      sizeBytes: req.diskBytes,
      writtenBytes: Math.floor(req.diskBytes * DISK_FILL),
      seed,
    });
    let exported: ExportDiskReply | undefined;
    try {
      exported = await this.exportDisk(req.vmId, diskPath);
      const vm = await this.driver.launch({
        vmId: req.vmId,
        ramBytes: req.ramBytes,
        workload: req.workload,
        seed,
        diskUri: exported.uri,
        detached: true,
      });
      const { serviceAddress, serviceSocket } = await vm.describe();
      await vm.detach();
      if (req.addresses) await this.connect(req.vmId, req.addresses, serviceSocket);
      const record = this.newRecord(req, { serviceAddress, diskUri: exported.uri, diskPath });
      await this.kv.create(req.vmId, JSON.stringify(record));
      return view(record);
    } catch (err) {
      if (req.addresses) await this.network.detach(this.o.site, req.vmId).catch(() => undefined);
      await this.stopGuest(req.vmId);
      if (exported) await this.unexport(req.vmId);
      await rm(diskPath, { force: true });
      throw err;
    }
  }

  /**
   * A QEMU VM: launched on a copy of its guest's image; its disk is served to nobody until a migration mirrors it.
   * Addresses (a tap on the site's network) are not offered for QEMU VMs yet.
   */
  private async createQemu(req: CreateVmRequest): Promise<VmView> {
    if (req.addresses) {
      throw new WanmigError(ErrorCode.InvalidRequest, `addresses are not supported for qemu VMs yet`);
    }
    const { spec, diskBytes } = await this.qemu.create(req);
    try {
      const record: VmRecord = {
        ...this.newRecord(
          { ...req, diskBytes },
          { serviceAddress: this.qemu.serviceAddress(spec), diskPath: spec.diskPath },
        ),
        driver: 'qemu',
      };
      await this.kv.create(req.vmId, JSON.stringify(record));
      return view(record);
    } catch (err) {
      await this.qemu.stop(req.vmId).catch(() => undefined);
      await rm(spec.diskPath, { force: true });
      throw err;
    }
  }

  async get(vmId: string): Promise<VmRecord | null> {
    const entry = await this.kv.get(vmId);
    if (entry === null || entry.operation !== 'PUT') return null;
    return entry.json<VmRecord>();
  }

  async require(vmId: string): Promise<VmRecord> {
    const record = await this.get(vmId);
    if (!record) throw new WanmigError(ErrorCode.NotFound, `no VM ${vmId} at ${this.o.site}`);
    return record;
  }

  /**
   * The VM's addresses at this site: its NIC here forwards them to the guest (`vm create`, or an arriving VM in
   * REDIRECT). The route is the caller's: at create it points here at once; in a migration, once both NICs stand.
   */
  async attachNetwork(vmId: string, addresses: string[]): Promise<VmNicStatus> {
    const vm = await this.driver.attach(vmId);
    try {
      const { serviceSocket } = await vm.describe();
      return await this.network.attach(this.o.site, vmId, addresses, requireSocket(vmId, serviceSocket));
    } finally {
      await vm.detach();
    }
  }

  private async connect(vmId: string, addresses: string[], serviceSocket: string | undefined): Promise<void> {
    await this.network.attach(this.o.site, vmId, addresses, requireSocket(vmId, serviceSocket));
    await this.network.moveRoute(this.o.site, randomUUID(), addresses, this.o.site);
  }

  /** The record with its state as the guest process shows it now. */
  async describe(vmId: string): Promise<VmView> {
    const record = await this.require(vmId);
    return view({ ...record, state: await this.liveState(record) });
  }

  async list(): Promise<VmView[]> {
    const keys: string[] = [];
    for await (const key of await this.kv.keys()) keys.push(key);
    const views: VmView[] = [];
    for (const key of keys.sort()) {
      const record = await this.get(key);
      if (record) views.push(view({ ...record, state: await this.liveState(record) }));
    }
    return views;
  }

  /**
   * Marks the VM as moving (or, with undefined, as back to plain running after a rollback: its `migrationId` is the
   * one that brought it here again, if any, never the move that was undone).
   */
  async setMigrating(vmId: string, migrationId: string | undefined): Promise<void> {
    const { migrationId: current, arrivedBy, ...rest } = await this.require(vmId);
    const arrival = rest.state === VmState.Migrating ? arrivedBy : current;
    const next: VmRecord = migrationId
      ? { ...rest, state: VmState.Migrating, migrationId, ...(arrival ? { arrivedBy: arrival } : {}) }
      : { ...rest, state: VmState.Running, ...(arrival ? { migrationId: arrival } : {}) };
    await this.kv.put(vmId, JSON.stringify(next));
  }

  /**
   * Stops the guest, unexports and deletes its disk (and RAM file), forgets it. A moving VM is refused. An imported
   * VM's image is the user's: it stays.
   */
  async remove(vmId: string, options: { force?: boolean } = {}): Promise<void> {
    const record = await this.require(vmId);
    if (record.state === VmState.Migrating && !options.force) {
      throw new WanmigError(ErrorCode.Conflict, `VM ${vmId} is being migrated (${record.migrationId}); abort it first`);
    }
    if (record.addresses) await this.network.detach(this.o.site, vmId);
    if (isQemu(record)) await this.qemu.stop(vmId);
    else await this.stopGuest(vmId);
    await this.unexport(record.exportName);
    if (!record.userDisk) await rm(record.diskPath, { force: true });
    if (record.ramPath) await rm(record.ramPath, { force: true });
    await this.kv.delete(vmId);
  }

  /** The source side after a commit: the guest (kept paused until now) goes, and its disk too (not a user's image). */
  async releaseMoved(vmId: string): Promise<void> {
    const record = await this.get(vmId);
    if (!record) return;
    // Kept paused since the destination ran (memory-precopy's keepSource): released now, as memory-precopy would.
    if (isQemu(record)) {
      await this.qemu.stop(vmId);
    } else {
      try {
        await (await this.driver.attach(vmId)).release();
      } catch {
        await this.stopGuest(vmId);
      }
    }
    await this.unexport(record.exportName);
    if (!record.userDisk) await rm(record.diskPath, { force: true });
    await this.kv.delete(vmId);
  }

  /** The destination side after a commit: the VM that delta-apply resumed here is ours now. Idempotent. */
  async adopt(req: AdoptVmRequest): Promise<VmView> {
    const existing = await this.get(req.vmId);
    if (existing) {
      if (existing.migrationId === req.migrationId) return view(existing);
      throw new WanmigError(ErrorCode.Conflict, `VM ${req.vmId} already exists at ${this.o.site}`);
    }
    if (req.driver === 'qemu') return this.adoptQemu(req);
    const exported = await this.exportDisk(req.vmId, req.diskPath);
    let serviceAddress: string | undefined;
    try {
      const vm = await this.driver.attach(req.vmId);
      serviceAddress = (await vm.describe()).serviceAddress;
      await vm.detach();
    } catch {
      // Recorded anyway: the VM's data is here; `vm list` shows it stopped.
    }
    const record: VmRecord = {
      ...this.newRecord(req, { serviceAddress, diskUri: exported.uri, diskPath: req.diskPath }),
      migrationId: req.migrationId,
      ...(req.ramPath ? { ramPath: req.ramPath } : {}),
      ...(req.addresses?.length ? { addresses: req.addresses } : {}),
    };
    await this.kv.put(req.vmId, JSON.stringify(record));
    return view(record);
  }

  private async adoptQemu(req: AdoptVmRequest): Promise<VmView> {
    if (!req.machine) throw new WanmigError(ErrorCode.InvalidRequest, `a qemu VM is adopted with its machine`);
    const spec = await this.qemu.adopt(req.vmId, req.migrationId, req.machine, req.diskPath);
    const record: VmRecord = {
      ...this.newRecord(req, { serviceAddress: this.qemu.serviceAddress(spec), diskPath: req.diskPath }),
      driver: 'qemu',
      migrationId: req.migrationId,
      ...(req.addresses?.length ? { addresses: req.addresses } : {}),
    };
    await this.kv.put(req.vmId, JSON.stringify(record));
    return view(record);
  }

  /** The VM's run state as its driver sees it: `running`, `paused`, ... or `stopped`. */
  async runState(vmId: string): Promise<string> {
    const record = await this.get(vmId);
    if (record && isQemu(record)) return this.qemu.state(vmId);
    try {
      const guest = await this.driver.attach(vmId);
      const { state } = await guest.describe().finally(() => guest.detach());
      return state;
    } catch (err) {
      if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return 'stopped';
      throw err;
    }
  }

  /**
   * A source VM left paused (a rollback after the pause) runs again: `running`, or `gone` when no guest is left to
   * run (its process ended). A guest that lives and cannot be made to run rejects: the caller tries again.
   */
  async ensureRunning(vmId: string): Promise<'running' | 'gone'> {
    const record = await this.get(vmId);
    if (record && isQemu(record)) return this.qemu.ensureRunning(vmId);
    let guest: SimSourceVm;
    try {
      guest = await this.driver.attach(vmId);
    } catch (err) {
      if (err instanceof GuestNotFoundError || err instanceof GuestDiedError) return 'gone';
      throw err;
    }
    try {
      if ((await guest.describe()).state === 'paused') await guest.resume();
      return 'running';
    } finally {
      await guest.detach();
    }
  }

  private newRecord(
    vm: { vmId: string; ramBytes: number; diskBytes: number; workload: VmRecord['workload']; addresses?: string[] },
    where: { serviceAddress?: string; diskUri?: string; diskPath: string },
  ): VmRecord {
    return {
      vmId: vm.vmId,
      site: this.o.site,
      state: VmState.Running,
      ramBytes: vm.ramBytes,
      diskBytes: vm.diskBytes,
      workload: vm.workload,
      ...(where.serviceAddress ? { serviceAddress: where.serviceAddress } : {}),
      ...(vm.addresses?.length ? { addresses: vm.addresses } : {}),
      ...(where.diskUri ? { diskUri: where.diskUri } : {}),
      diskPath: where.diskPath,
      exportName: vm.vmId,
      createdAt: new Date().toISOString(),
    };
  }

  /** Serves an image through this site's disk-transfer (idempotent for the same name and path). */
  async exportDisk(name: string, imagePath: string): Promise<ExportDiskReply> {
    return callControl<ExportDiskReply>(
      this.nc,
      controlSubject(this.o.site, ServiceName.DiskTransfer, DiskTransferVerb.Export),
      { name, imagePath, role: 'serve', port: 0 },
      30_000,
    );
  }

  async unexport(name: string): Promise<void> {
    await callControl(this.nc, controlSubject(this.o.site, ServiceName.DiskTransfer, DiskTransferVerb.Unexport), {
      name,
    }).catch((err: unknown) => {
      if (!(err instanceof WanmigError && err.code === ErrorCode.NotFound)) throw err;
    });
  }

  async count(): Promise<number> {
    let n = 0;
    for await (const key of await this.kv.keys()) if (key) n++;
    return n;
  }

  private async liveState(record: VmRecord): Promise<VmView['state']> {
    if (isQemu(record)) {
      if ((await this.qemu.state(record.vmId)) === 'stopped') return VmState.Stopped;
      return record.state === VmState.Migrating ? VmState.Migrating : VmState.Running;
    }
    try {
      const vm = await this.driver.attach(record.vmId);
      await vm.detach();
      return record.state === VmState.Migrating ? VmState.Migrating : VmState.Running;
    } catch {
      return VmState.Stopped;
    }
  }

  private async stopGuest(vmId: string): Promise<void> {
    try {
      const vm = await this.driver.attach(vmId);
      await vm.stop();
    } catch (err) {
      // Not there, or its process is gone already: nothing to stop.
      if (err instanceof WanmigError && (err.code === ErrorCode.NotFound || err.code === ErrorCode.Unavailable)) return;
      throw err;
    }
  }
}

export function isQemu(record: Pick<VmRecord, 'driver'>): boolean {
  return record.driver === 'qemu';
}

function requireSocket(vmId: string, serviceSocket: string | undefined): string {
  if (!serviceSocket) throw new WanmigError(ErrorCode.Unavailable, `VM ${vmId} offers no service socket for a NIC`);
  return serviceSocket;
}

function view(record: VmRecord): VmView {
  const {
    exportName: _exportName,
    ramPath: _ramPath,
    userDisk: _userDisk,
    arrivedBy: _arrivedBy,
    ...rest
  } = record;
  return rest;
}
