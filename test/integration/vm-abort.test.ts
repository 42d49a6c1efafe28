import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { SimDriver, SimServiceClient, type SimSourceVm } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  ErrorCode,
  MemoryPrecopyVerb,
  MemoryVerb,
  ServiceName,
  Subjects,
  type WanmigError,
} from '@wanmig/protocol';
import { LocalBed, Site } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

describe('aborting a memory migration before activation', () => {
  let bed: LocalBed;
  let vm: SimSourceVm;

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 20, bandwidthBps: 50e6, memory: true });
    const driver = new SimDriver({ runtimeDir: bed.runtimeDirA });
    vm = await driver.launch({ vmId: 'abort-me', ramBytes: 128 * 1024 * 1024, workload: 'web', seed: 5 });
  });

  afterAll(async () => {
    await vm?.stop().catch(() => undefined);
    await bed?.stop();
  });

  it('leaves the source guest running unchanged and removes what the destination had', async () => {
    const migrationId = randomUUID();
    const events = bed.nc.subscribe(Subjects.memoryEvents(migrationId));
    const source = await SimServiceClient.connect(vm.serviceAddress);
    const on = (verb: MemoryPrecopyVerb) => controlSubject(Site.A, ServiceName.MemoryPrecopy, verb);
    await callControl(bed.nc, on(MemoryPrecopyVerb.Migrate), { migrationId, vmId: vm.vmId, toSite: Site.B });
    let outcome: { type: string; error?: { code: string } } | undefined;
    for await (const msg of events) {
      const event = msg.json<{ type: string; phase?: string; rawBytesSent?: number; error?: { code: string } }>();
      if (event.type === 'progress' && event.phase === 'precopy' && (event.rawBytesSent ?? 0) > 16 * 2 ** 20) {
        await callControl(bed.nc, on(MemoryPrecopyVerb.Abort), { migrationId });
      }
      if (event.type === 'failed' || event.type === 'completed') {
        outcome = event;
        break;
      }
    }
    events.unsubscribe();
    expect(outcome?.type).toBe('failed');
    expect(outcome?.error?.code).toBe(ErrorCode.Conflict);

    // The source runs on: its counter keeps moving and it answers.
    const before = await source.ping();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await source.ping()).toBeGreaterThan(before);
    expect((await vm.describe()).state).toBe('running');
    source.close();

    // The destination forgot the migration and runs no guest for it.
    const status = callControl(bed.nc, controlSubject(Site.B, ServiceName.DeltaApply, MemoryVerb.Status), {
      migrationId,
    });
    await expect(status).rejects.toMatchObject({ code: ErrorCode.NotFound } satisfies Partial<WanmigError>);
    // The incoming guest started at prepare is gone (its log may stay, for the operator).
    const left = (await readdir(bed.runtimeDirB)).filter((f) => f.startsWith(vm.vmId) && !f.endsWith('.log'));
    expect(left).toEqual([]);
  });
});
