/**
 * The inventory's QEMU VMs: launched from a guest or imported (a QEMU someone else started), found by id under the
 * site's runtime dir (libs/hypervisor's qemu.vm), their disk mirrored into this site's disk-transfer for the length
 * of a migration.
 */
import { execFile } from 'node:child_process';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  Accelerator,
  connectQemuVm,
  ensureGuestImage,
  ensureRunning,
  findDiskMirror,
  GUEST_READY_MARKER,
  importQemuVm,
  launchQemuVm,
  probeAccelerator,
  qemuVmExists,
  qemuVmPaths,
  qemuVmState,
  readQemuVmSpec,
  registerQemuVm,
  startDiskMirror,
  stopQemuVm,
  testGuestAppend,
  unregisterQemuVm,
  type QemuVmSpec,
} from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DiskTransferVerb,
  ErrorCode,
  QemuIncomingVerb,
  ServiceName,
  WanmigError,
  type CreateVmRequest,
  type ImportVmRequest,
  type QemuIncomingStatusReply,
  type QemuMachineSpec,
} from '@wanmig/protocol';

const run = promisify(execFile);
const MiB = 2 ** 20;
/** delta-apply runs each destination QEMU under `<runtimeDir>/qemu/<migrationId>/`, its observers' monitor there. */
const INCOMING_MONITOR = 'monitor.qmp';
const INCOMING_SUBDIR = 'qemu';
const MIRROR_SOCKET = 'mirror.sock';

export interface QemuVmsOptions {
  site: string;
  dataDir: string;
  runtimeDir: string;
  accel: 'auto' | 'tcg' | 'kvm';
}

export class QemuVms {
  constructor(
    private readonly nc: NatsConnection,
    private readonly o: QemuVmsOptions,
  ) {}

  /** Launches `req`'s guest on a copy of its image; resolves once its service is up. Nothing is left on failure. */
  async create(req: CreateVmRequest): Promise<{ spec: QemuVmSpec; diskBytes: number }> {
    if (req.guest !== 'test') {
      throw new WanmigError(ErrorCode.InvalidRequest, `a qemu VM needs a guest to launch ('guest': 'test')`);
    }
    if (req.ramBytes % MiB !== 0)
      throw new WanmigError(ErrorCode.InvalidRequest, `ramBytes must be whole MiB for a qemu VM`);
    const image = await ensureGuestImage();
    const dir = join(this.o.dataDir, 'vms');
    await mkdir(dir, { recursive: true });
    const diskPath = join(dir, `${req.vmId}.img`);
    await run('cp', ['--sparse=always', image.disk, diskPath], { timeout: 300_000 });
    try {
      const spec = await launchQemuVm(this.o.runtimeDir, {
        vmId: req.vmId,
        kernel: image.kernel,
        initrd: image.initrd,
        append: testGuestAppend(),
        accel: await this.accel(image.kernel, image.initrd),
        ramMiB: req.ramBytes / MiB,
        cpus: req.cpus ?? 1,
        diskPath,
        readyMarker: GUEST_READY_MARKER,
      });
      return { spec, diskBytes: (await stat(diskPath)).size };
    } catch (err) {
      await rm(diskPath, { force: true });
      throw err;
    }
  }

  /** A QEMU someone else runs, taken over as it is (importQemuVm): its image stays where it is. */
  async import(req: ImportVmRequest): Promise<{ spec: QemuVmSpec; diskBytes: number }> {
    const spec = await importQemuVm(this.o.runtimeDir, req);
    try {
      return { spec, diskBytes: (await stat(spec.diskPath)).size };
    } catch (err) {
      await this.forget(req.vmId);
      throw err;
    }
  }

  /** Forgets an imported VM and leaves its QEMU running (an import that could not be recorded). */
  forget(vmId: string): Promise<void> {
    return unregisterQemuVm(this.o.runtimeDir, vmId);
  }

  spec(vmId: string): Promise<QemuVmSpec> {
    return readQemuVmSpec(this.o.runtimeDir, vmId);
  }

  /** The machine as a destination must start it (and as the adopting site records it). */
  async machine(vmId: string): Promise<QemuMachineSpec> {
    const s = await this.spec(vmId);
    return {
      kernel: s.kernel,
      initrd: s.initrd,
      append: s.append,
      machine: s.machine,
      accel: s.accel,
      ramMiB: s.ramMiB,
      cpus: s.cpus,
      guestPort: s.guestPort,
    };
  }

  serviceAddress(spec: QemuVmSpec): string {
    return `127.0.0.1:${spec.servicePort}`;
  }

  state(vmId: string): Promise<string> {
    return qemuVmState(this.o.runtimeDir, vmId);
  }

  stop(vmId: string): Promise<void> {
    return stopQemuVm(this.o.runtimeDir, vmId);
  }

  /**
   * A source left paused (a rollback after the pause) runs again; `gone` when its QEMU has ended. A QEMU that lives
   * and does not run (yet) is UNAVAILABLE, its monitor's silence too: a QEMU that stops its guest drains the disk's
   * writes first, holding its monitor meanwhile.
   */
  async ensureRunning(vmId: string): Promise<'running' | 'gone'> {
    if (!(await qemuVmExists(this.o.runtimeDir, vmId))) return 'gone';
    const qmp = await connectQemuVm(this.o.runtimeDir, vmId);
    try {
      const state = await ensureRunning(qmp, 15_000);
      if (state !== 'running') throw new WanmigError(ErrorCode.Unavailable, `QEMU VM ${vmId} is ${state}`);
      return 'running';
    } finally {
      await qmp.close();
    }
  }

  /**
   * PREPARING: this site's disk-transfer serves the VM's image as a `mirror-target` export, and QEMU mirrors every
   * write into it (write-blocking) from now on, so the export's dirty map tracks the disk while it is copied.
   * Idempotent: a mirror already running is kept.
   */
  async startMirror(vmId: string, exportName: string): Promise<void> {
    const spec = await this.spec(vmId);
    const socket = join(qemuVmPaths(this.o.runtimeDir, vmId).dir, MIRROR_SOCKET);
    await callControl(
      this.nc,
      controlSubject(this.o.site, ServiceName.DiskTransfer, DiskTransferVerb.Export),
      { name: exportName, imagePath: spec.diskPath, role: 'mirror-target', socket },
      30_000,
    );
    const qmp = await connectQemuVm(this.o.runtimeDir, vmId);
    try {
      const found = await findDiskMirror(qmp, spec.diskNode);
      if (found?.ready) return;
      if (found) await found.mirror.cancel();
      await startDiskMirror(qmp, { device: spec.diskNode, nbd: { path: socket }, exportName });
    } catch (err) {
      throw new WanmigError(
        ErrorCode.Unavailable,
        `the disk of QEMU VM ${vmId} cannot be mirrored: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    } finally {
      await qmp.close();
    }
  }

  /** Rollback or release: the mirror stops (the guest writes only its own image again), the export goes. */
  async stopMirror(vmId: string, exportName: string): Promise<void> {
    const spec = await this.spec(vmId).catch(() => undefined);
    if (spec && (await this.state(vmId)) !== 'stopped') {
      const qmp = await connectQemuVm(this.o.runtimeDir, vmId);
      try {
        const found = await findDiskMirror(qmp, spec.diskNode);
        if (found) await found.mirror.cancel();
      } finally {
        await qmp.close();
      }
    }
    await callControl(this.nc, controlSubject(this.o.site, ServiceName.DiskTransfer, DiskTransferVerb.Unexport), {
      name: exportName,
    }).catch((err: unknown) => {
      if (!(err instanceof WanmigError && err.code === ErrorCode.NotFound)) throw err;
    });
  }

  /**
   * The destination side after a commit: the QEMU delta-apply started and resumed for `migrationId` becomes this
   * site's VM `vmId` (its observers' monitor linked as the VM's).
   */
  async adopt(vmId: string, migrationId: string, machine: QemuMachineSpec, diskPath: string): Promise<QemuVmSpec> {
    const status = await callControl<QemuIncomingStatusReply>(
      this.nc,
      controlSubject(this.o.site, ServiceName.DeltaApply, QemuIncomingVerb.Status),
      { migrationId },
    );
    if (!status.resumed) {
      throw new WanmigError(ErrorCode.Conflict, `the QEMU of migration ${migrationId} does not run here`);
    }
    const monitor = join(this.o.runtimeDir, INCOMING_SUBDIR, migrationId, INCOMING_MONITOR);
    return registerQemuVm(
      this.o.runtimeDir,
      {
        vmId,
        ...machine,
        diskPath,
        diskNode: 'disk0',
        servicePort: status.servicePort,
      },
      monitor,
      status.pid,
    );
  }

  private async accel(kernel: string, initrd: string): Promise<Accelerator> {
    if (this.o.accel !== 'auto') return this.o.accel === 'kvm' ? Accelerator.Kvm : Accelerator.Tcg;
    return (await probeAccelerator({ kernel, initrd, marker: 'Linux version' })).accel;
  }
}
