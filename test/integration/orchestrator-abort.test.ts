import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalBed, Site } from '@wanmig/testing';
import { apiCall, apiOk, isFinished, waitMigration, type MigrationLike } from '../support/external.client.js';
import { guestState } from '../support/guest.state.js';

const MIB = 1024 * 1024;

interface VmLike {
  vmId: string;
  state: string;
  serviceAddress: string;
}

/**
 * An abort in each phase before ACTIVATE: the source VM keeps running its workload (its counter keeps going and its
 * disk takes writes) and nothing of the migration stays at the destination.
 */
describe('aborting a migration in each phase before ACTIVATE', () => {
  let bed: LocalBed;
  let nc: NatsConnection;

  beforeAll(async () => {
    // A slow link keeps each phase long enough to abort in it.
    bed = await LocalBed.start({ delayMs: 50, bandwidthBps: 40e6, orchestrator: true });
    nc = await connect({ servers: bed.sites.a.url });
  }, 120_000);

  afterAll(async () => {
    await nc?.close();
    await bed?.stop();
  });

  async function destinationLeftovers(): Promise<string[]> {
    const found: string[] = [];
    for (const dir of ['data', 'sim']) {
      const names = await readdir(join(bed.dir, Site.B, dir)).catch(() => [] as string[]);
      found.push(...names.filter((n) => !n.endsWith('.log')).map((n) => `${dir}/${n}`));
    }
    const vms = await apiOk<{ vms: unknown[] }>(nc, Site.B, 'vm.list', {});
    if (vms.vms.length > 0) found.push(`vm.list: ${JSON.stringify(vms.vms)}`);
    return found;
  }

  // A failed case must not leave its VM where the next case looks for leftovers.
  afterEach(async () => {
    for (const site of [Site.A, Site.B]) {
      const { vms } = await apiOk<{ vms: Array<{ vmId: string }> }>(nc, site, 'vm.list', {});
      for (const vm of vms) await apiCall(nc, site, 'vm.rm', { vmId: vm.vmId }, 60_000);
    }
  });

  const phases = ['PLANNED', 'PREPARING', 'DISK_BULK', 'DISK_CATCHUP', 'MEM_PRECOPY', 'STOP_AND_COPY'];
  for (const [i, phase] of phases.entries()) {
    it(`in ${phase}`, async () => {
      const vmId = `abort-${i}`;
      const vm = await apiOk<VmLike>(
        nc,
        Site.A,
        'vm.create',
        { vmId, ramBytes: 128 * MIB, diskBytes: 128 * MIB, workload: 'db', seed: i + 1 },
        60_000,
      );
      const before = await guestState(vm.serviceAddress);

      const m = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', {
        vmId,
        toSite: Site.B,
        // STOP_AND_COPY is short: checks in the pause and a tight budget make it last long enough to hit.
        downtimeMs: 300,
      });
      if (phase !== 'PLANNED')
        await waitMigration(nc, Site.A, m.id, (r) => r.phase === phase || isFinished(r), 120_000, 5);
      const abort = await apiCall<MigrationLike>(nc, Site.A, 'migration.abort', { migrationId: m.id });
      const end = await waitMigration(nc, Site.A, m.id, isFinished, 120_000);

      if (abort.ok) {
        expect(end.phase).toBe('ROLLED_BACK');
        // The abort landed in the phase aimed at (PLANNED lasts only until the runner's first write: the abort
        // sent right after the create may find PREPARING).
        const [at, ...rest] = end.history.map((h) => h.phase).slice(-3);
        expect(phase === 'PLANNED' ? ['PLANNED', 'PREPARING'] : [phase]).toContain(at);
        expect(rest).toEqual(['ROLLING_BACK', 'ROLLED_BACK']);
        // The source still runs its workload, writes to its disk included.
        const s1 = await guestState(vm.serviceAddress);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const s2 = await guestState(vm.serviceAddress);
        expect(s1.state).toBe('running');
        expect(s1.counter).toBeGreaterThanOrEqual(before.counter);
        expect(s2.counter).toBeGreaterThan(s1.counter);
        expect(s2.diskWrites).toBeGreaterThan(s1.diskWrites);
        expect(s2.diskErrors).toBe(0);
        const still = await apiOk<VmLike>(nc, Site.A, 'vm.get', { vmId });
        expect(still.state).toBe('running');
        expect(await destinationLeftovers()).toEqual([]);
        // Not moving any more: it can be migrated again later (here: removed).
        await apiOk(nc, Site.A, 'vm.rm', { vmId }, 60_000);
      } else {
        // Only when the destination already ran the VM: the switchover is past its point of no return.
        expect(phase).toBe('STOP_AND_COPY');
        expect(abort.code).toBe('CONFLICT');
        expect(end.phase).toBe('COMMITTED');
        await apiOk(nc, Site.B, 'vm.rm', { vmId }, 60_000);
      }
    }, 180_000);
  }
});
