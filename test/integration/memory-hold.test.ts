/**
 * memory-precopy's held switchover (`holdBeforeResume`), through the real services of the two-site bed: the guest
 * pauses, the rest goes, the destination checks it (`mem.check`), and the engine holds in `holding` with nothing run
 * at the destination, until `mem.proceed` (the destination runs the VM), `mem.abort` or the hold's time limit (both
 * roll back: the source runs on).
 */
import { randomUUID } from 'node:crypto';
import { SimDriver, SimServiceClient, type SimSourceVm } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  ErrorCode,
  MemoryPrecopyVerb,
  MemoryVerb,
  ServiceName,
  Subjects,
  type MemoryMigrationReport,
  type MemoryStatusReply,
} from '@wanmig/protocol';
import { LocalBed, Site } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const mem = (verb: MemoryPrecopyVerb) => controlSubject(Site.A, ServiceName.MemoryPrecopy, verb);

interface MemoryEvent {
  type: string;
  phase?: string;
  report?: MemoryMigrationReport;
  error?: { code: string; message: string };
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

describe('a held switchover: nothing runs at the destination until the go (two-site bed, real services)', () => {
  let bed: LocalBed;
  const vms: SimSourceVm[] = [];

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 10, bandwidthBps: 200e6, memory: true });
  });

  afterAll(async () => {
    for (const vm of vms) await vm.stop().catch(() => undefined);
    await bed?.stop();
  });

  async function launch(vmId: string): Promise<SimSourceVm> {
    const vm = await new SimDriver({ runtimeDir: bed.runtimeDirA }).launch({
      vmId,
      ramBytes: 64 * MiB,
      workload: 'web',
      seed: 7,
    });
    vms.push(vm);
    return vm;
  }

  function destinationStatus(migrationId: string): Promise<MemoryStatusReply> {
    return callControl<MemoryStatusReply>(bed.nc, controlSubject(Site.B, ServiceName.DeltaApply, MemoryVerb.Status), {
      migrationId,
    });
  }

  /** Starts a held migration, runs `whileHolding` once it holds, and returns its outcome event. */
  async function migrateHeld(
    vm: SimSourceVm,
    options: Record<string, unknown>,
    whileHolding: (migrationId: string) => Promise<void>,
  ): Promise<{ migrationId: string; outcome: MemoryEvent; held: boolean }> {
    const migrationId = randomUUID();
    const events = bed.nc.subscribe(Subjects.memoryEvents(migrationId));
    const timer = setTimeout(() => events.unsubscribe(), 60_000);
    let held = false;
    try {
      await callControl(bed.nc, mem(MemoryPrecopyVerb.Migrate), {
        migrationId,
        vmId: vm.vmId,
        toSite: Site.B,
        verifyRam: true,
        queriesAtPause: ['COUNTER', 'GET k3', 'PAGE 1'],
        holdBeforeResume: true,
        ...options,
      });
      for await (const msg of events) {
        const event = msg.json<MemoryEvent>();
        if (event.type === 'progress' && event.phase === 'holding' && !held) {
          held = true;
          await whileHolding(migrationId);
        }
        if (event.type === 'completed' || event.type === 'failed') return { migrationId, outcome: event, held };
      }
      throw new Error(`memory migration ${migrationId} did not finish within 60 s`);
    } finally {
      clearTimeout(timer);
      events.unsubscribe();
    }
  }

  /** While it holds: the source is paused and the destination, checked, runs nothing. */
  async function expectHolding(vm: SimSourceVm, migrationId: string): Promise<void> {
    expect((await vm.describe()).state).toBe('paused');
    const status = await destinationStatus(migrationId);
    expect(status.running).toBe(false);
    expect(status.finished).toBe(true);
  }

  it('runs the VM at the destination only after mem.proceed; a repeated go answers the same', async () => {
    const vm = await launch('held-go');
    const { migrationId, outcome, held } = await migrateHeld(vm, {}, async (id) => {
      await expectHolding(vm, id);
      // Held for as long as the caller takes: nothing moves meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await expectHolding(vm, id);
      await callControl(bed.nc, mem(MemoryPrecopyVerb.Proceed), { migrationId: id });
    });
    expect(held).toBe(true);
    expect(outcome.type, JSON.stringify(outcome.error)).toBe('completed');
    const report = outcome.report!;
    expect(report.holdMs).toBeGreaterThanOrEqual(300);
    expect(report.pausedMs).toBeGreaterThan(report.holdMs!);
    expect(report.ramVerified).toBe(true);
    expect(Object.keys(report.answersAtDestination).length).toBeGreaterThan(0);
    expect(report.answersAtDestination).toEqual(report.answersAtPause);
    expect((await destinationStatus(migrationId)).running).toBe(true);
    expect(await counterMoves(report.destination.serviceAddress)).toBe(true);
    vms.push(await new SimDriver({ runtimeDir: bed.runtimeDirB }).attach(vm.vmId));
    await expect(callControl(bed.nc, mem(MemoryPrecopyVerb.Proceed), { migrationId })).resolves.toMatchObject({
      phase: 'done',
    });
    await expect(callControl(bed.nc, mem(MemoryPrecopyVerb.Abort), { migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
    });
  });

  it('rolls back on an abort while holding: the source runs on, the go is refused, nothing stays at B', async () => {
    const vm = await launch('held-abort');
    const { migrationId, outcome } = await migrateHeld(vm, {}, async (id) => {
      await expectHolding(vm, id);
      await callControl(bed.nc, mem(MemoryPrecopyVerb.Abort), { migrationId: id });
    });
    expect(outcome.type).toBe('failed');
    expect(outcome.error?.message).toMatch(/aborted during holding/);
    await expect(callControl(bed.nc, mem(MemoryPrecopyVerb.Proceed), { migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
    });
    expect((await vm.describe()).state).toBe('running');
    expect(await counterMoves(vm.serviceAddress)).toBe(true);
    await expect(destinationStatus(migrationId)).rejects.toMatchObject({ code: ErrorCode.NotFound });
  });

  it('rolls back when no go comes within the hold time limit', async () => {
    const vm = await launch('held-timeout');
    const { migrationId, outcome, held } = await migrateHeld(vm, { holdTimeoutMs: 500 }, (id) => expectHolding(vm, id));
    expect(held).toBe(true);
    expect(outcome.type).toBe('failed');
    expect(outcome.error?.code).toBe(ErrorCode.Unavailable);
    expect(outcome.error?.message).toMatch(/no go \(mem\.proceed\) within 500 ms/);
    await expect(callControl(bed.nc, mem(MemoryPrecopyVerb.Proceed), { migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
    });
    expect((await vm.describe()).state).toBe('running');
    expect(await counterMoves(vm.serviceAddress)).toBe(true);
  });
});
