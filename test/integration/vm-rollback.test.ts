import { randomUUID } from 'node:crypto';
import { SimDriver, SimServiceClient, type SimSourceVm, type SourceVm } from '@wanmig/hypervisor';
import { ErrorCode } from '@wanmig/protocol';
import { LocalBed, Site } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryMigration } from '../../apps/memory-precopy/src/memory.migration.js';

/** The real guest, except that the device state it hands over is damaged in transit. */
function withDamagedState(vm: SimSourceVm): SourceVm {
  return {
    describe: () => vm.describe(),
    memory: () => vm.memory(),
    pause: () => vm.pause(),
    resume: () => vm.resume(),
    throttle: (percent) => vm.throttle(percent),
    release: () => vm.release(),
    query: (command) => vm.query(command),
    deviceState: async () => {
      const state = await vm.deviceState();
      const blob = Buffer.from(state.blob);
      blob[blob.length - 1] ^= 0xff;
      return { blob, sha256: state.sha256 };
    },
  };
}

describe('a failure during stop-and-copy rolls back to the source', () => {
  let bed: LocalBed;
  let vm: SimSourceVm;

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 10, bandwidthBps: 200e6, memory: true });
    vm = await new SimDriver({ runtimeDir: bed.runtimeDirA }).launch({
      vmId: 'rollback-me',
      ramBytes: 64 * 1024 * 1024,
      workload: 'web',
      seed: 9,
    });
  });

  afterAll(async () => {
    await vm?.stop().catch(() => undefined);
    await bed?.stop();
  });

  it('refuses the damaged state at the destination; the source resumes and keeps serving', async () => {
    const client = await SimServiceClient.connect(vm.serviceAddress);
    const atStart = await client.ping();
    const migration = new MemoryMigration({
      migrationId: randomUUID(),
      nc: bed.nc,
      destSite: Site.B,
      vmId: vm.vmId,
      vm: withDamagedState(vm),
    });
    await expect(migration.run()).rejects.toMatchObject({ code: ErrorCode.InvalidRequest });
    expect(migration.progress().phase).toBe('rolled-back');
    // Paused for stop-and-copy, then resumed by the rollback: it runs and its counter moves on.
    expect((await vm.describe()).state).toBe('running');
    const after = await client.ping();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await client.ping()).toBeGreaterThan(after);
    expect(after).toBeGreaterThanOrEqual(atStart);
    client.close();
  });
});
