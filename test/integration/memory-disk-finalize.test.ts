import { randomBytes, randomUUID } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { SimDriver, SimServiceClient, type SimSourceVm } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DiskTransferVerb,
  ErrorCode,
  MemoryPrecopyVerb,
  ServiceName,
  Subjects,
  type DiskMigrationReport,
  type DiskProgress,
  type ExportDiskReply,
  type MemoryMigrationReport,
} from '@wanmig/protocol';
import { getFreePort, LocalBed, Site, waitUntil } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const disk = (verb: DiskTransferVerb) => controlSubject(Site.A, ServiceName.DiskTransfer, verb);
const mem = (verb: MemoryPrecopyVerb) => controlSubject(Site.A, ServiceName.MemoryPrecopy, verb);

type DiskState = DiskProgress & { report?: DiskMigrationReport; error?: { code: string; message: string } };
type MemoryEvent = { type: string; report?: MemoryMigrationReport; error?: { code: string; message: string } };

async function makeImage(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    for (let i = 0; i < 4; i++) await fh.write(randomBytes(MiB), 0, MiB, i * 8 * MiB);
  } finally {
    await fh.close();
  }
}

/** Exports an image through site A's disk-transfer and returns its NBD URI. */
async function exportImage(bed: LocalBed, name: string, imagePath: string): Promise<string> {
  const reply = await callControl<ExportDiskReply>(bed.nc, disk(DiskTransferVerb.Export), { name, imagePath, port: 0 });
  return reply.uri;
}

/** Starts a held disk migration of an export and waits until it holds. */
async function holdDisk(bed: LocalBed, exportName: string, destPath: string): Promise<string> {
  const migrationId = randomUUID();
  await callControl(bed.nc, disk(DiskTransferVerb.Migrate), {
    migrationId,
    exportName,
    toSite: Site.B,
    destPath,
    hold: true,
  });
  await waitUntil(
    async () =>
      (await callControl<DiskState>(bed.nc, disk(DiskTransferVerb.Progress), { migrationId })).phase === 'holding',
    { what: `disk migration ${migrationId} to hold`, timeoutMs: 30_000, intervalMs: 100 },
  );
  return migrationId;
}

/** Runs a memory migration through the service and returns its outcome event. */
async function migrateMemory(bed: LocalBed, request: Record<string, unknown>): Promise<MemoryEvent> {
  const migrationId = request.migrationId as string;
  const events = bed.nc.subscribe(Subjects.memoryEvents(migrationId));
  const timer = setTimeout(() => events.unsubscribe(), 60_000);
  try {
    await callControl(bed.nc, mem(MemoryPrecopyVerb.Migrate), request);
    for await (const msg of events) {
      const event = msg.json<MemoryEvent>();
      if (event.type === 'completed' || event.type === 'failed') return event;
    }
    throw new Error(`memory migration ${migrationId} did not finish within 60 s`);
  } finally {
    clearTimeout(timer);
    events.unsubscribe();
  }
}

async function counterMoves(serviceAddress: string): Promise<boolean> {
  const client = await SimServiceClient.connect(serviceAddress);
  try {
    const before = await client.ping();
    await new Promise((resolve) => setTimeout(resolve, 200));
    return (await client.ping()) > before;
  } finally {
    client.close();
  }
}

describe('memory migration finalizing a held disk during the pause (two-site bed, real services)', () => {
  let bed: LocalBed;
  const vms: SimSourceVm[] = [];

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 10, bandwidthBps: 200e6, memory: true });
  });

  afterAll(async () => {
    for (const vm of vms) await vm.stop().catch(() => undefined);
    await bed?.stop();
  });

  /** A guest at site A whose disk is a fresh image exported by site A's disk-transfer, writing it. */
  async function launchGuest(name: string): Promise<{ vm: SimSourceVm; destPath: string }> {
    const imagePath = join(bed.dir, `${name}.img`);
    await makeImage(imagePath, 64 * MiB);
    const diskUri = await exportImage(bed, name, imagePath);
    const vm = await new SimDriver({ runtimeDir: bed.runtimeDirA }).launch({
      vmId: name,
      ramBytes: 64 * MiB,
      workload: 'db',
      seed: 11,
      diskUri,
    });
    vms.push(vm);
    await waitUntil(async () => (await vm.stats()).diskWrites > 5, {
      what: `${name} writing its disk`,
      timeoutMs: 10_000,
    });
    return { vm, destPath: join(bed.dir, 'site-b', `${name}-dest.img`) };
  }

  it('moves the VM with its disk: the disk report is verified and the destination VM runs on the moved disk', async () => {
    const { vm, destPath } = await launchGuest('with-disk');
    const diskMigrationId = await holdDisk(bed, 'with-disk', destPath);
    // The destination's disk is the moved image; in this one-host bed site A's disk-transfer serves it.
    const destinationDiskUri = await exportImage(bed, 'with-disk-dest', destPath);

    const migrationId = randomUUID();
    const outcome = await migrateMemory(bed, {
      migrationId,
      vmId: vm.vmId,
      toSite: Site.B,
      diskUri: destinationDiskUri,
      diskMigrationId,
      verifyRam: true,
    });
    expect(outcome.type, JSON.stringify(outcome.error)).toBe('completed');
    const report = outcome.report!;
    expect(report.ramVerified).toBe(true);
    expect(report.disk?.migrationId).toBe(diskMigrationId);
    expect(report.disk?.verified).toBe(true);
    expect(report.disk?.destPath).toBe(destPath);
    expect(report.diskFinalizeMs).toBeGreaterThan(0);
    expect(report.diskFinalizeMs).toBeLessThan(report.pausedMs);
    const diskState = await callControl<DiskState>(bed.nc, disk(DiskTransferVerb.Progress), {
      migrationId: diskMigrationId,
    });
    expect(diskState.phase).toBe('done');

    // The destination VM runs, and writes its (moved) disk without errors.
    expect(await counterMoves(report.destination.serviceAddress)).toBe(true);
    const moved = await new SimDriver({ runtimeDir: bed.runtimeDirB }).attach(vm.vmId);
    vms.push(moved);
    const first = await moved.stats();
    await waitUntil(async () => (await moved.stats()).diskWrites > first.diskWrites, {
      what: 'the destination VM writing its disk',
      timeoutMs: 10_000,
    });
    expect((await moved.stats()).diskErrors).toBe(0);

    // Too late to abort: the destination runs the VM.
    await expect(callControl(bed.nc, mem(MemoryPrecopyVerb.Abort), { migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: expect.stringMatching(/the destination is resuming\/has resumed/) as unknown,
    });
  });

  it('a failure after the disk was finalized rolls back: the source VM runs and writes its disk again', async () => {
    const { vm, destPath } = await launchGuest('rolls-back');
    const diskMigrationId = await holdDisk(bed, 'rolls-back', destPath);
    // Nothing serves this disk: the destination VM cannot start, after the disk's final drain.
    const nowhere = `nbd://127.0.0.1:${await getFreePort()}/nothing`;

    const migrationId = randomUUID();
    const outcome = await migrateMemory(bed, {
      migrationId,
      vmId: vm.vmId,
      toSite: Site.B,
      diskUri: nowhere,
      diskMigrationId,
    });
    expect(outcome.type).toBe('failed');
    // The disk had been finalized (its writes frozen); memory-precopy's rollback thawed them.
    const diskState = await callControl<DiskState>(bed.nc, disk(DiskTransferVerb.Progress), {
      migrationId: diskMigrationId,
    });
    expect(diskState.report?.verified).toBe(true);
    expect((await vm.describe()).state).toBe('running');
    expect(await counterMoves(vm.serviceAddress)).toBe(true);
    const before = await vm.stats();
    await waitUntil(async () => (await vm.stats()).diskWrites > before.diskWrites + 5, {
      what: 'the source VM writing its disk after the rollback',
      timeoutMs: 10_000,
    });
    expect((await vm.stats()).diskErrors).toBe(0);
    // A rolled-back migration can still be "aborted" (nothing to do): no CONFLICT.
    await expect(callControl(bed.nc, mem(MemoryPrecopyVerb.Abort), { migrationId })).resolves.toMatchObject({
      phase: 'rolled-back',
    });
  });
});
