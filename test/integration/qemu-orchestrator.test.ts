/**
 * A real QEMU VM through the product's one path: created at site A with `vm.create` (driver qemu, the test guest),
 * moved to B with `migration.create` and back, by a plain NATS client, through both sites' orchestrators and real
 * services. QEMU mirrors its disk into disk-transfer, migrates itself into memory-precopy's relay; delta-apply starts
 * the destination QEMU, checks the stream's digests, and runs it only on the orchestrator's go.
 */
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { ensureGuestImage, LocalBed, queryGuestCounter, Site } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiCall, apiOk, isFinished, waitMigration, type MigrationLike } from '../support/external.client.js';

const MIB = 1024 * 1024;
const SETUP_TIMEOUT_MS = 15 * 60_000; // the first guest build debootstraps Debian; later runs find it cached
const MOVE_TIMEOUT_MS = 240_000;
const TCG = { WANMIG_QEMU_ACCEL: 'tcg' };

interface VmLike {
  vmId: string;
  site: string;
  driver?: string;
  state: string;
  serviceAddress: string;
  diskBytes: number;
}

function portOf(address: string): number {
  return Number(address.split(':').pop());
}

describe('a QEMU VM through the orchestrators (two sites, real services, real QEMU)', () => {
  let bed: LocalBed;
  let nc: NatsConnection;

  beforeAll(async () => {
    await ensureGuestImage();
    bed = await LocalBed.start({
      delayMs: 10,
      bandwidthBps: 200e6,
      orchestrator: true,
      orchestratorEnv: { [Site.A]: TCG, [Site.B]: TCG },
    });
    nc = await connect({ servers: bed.sites.a.url });
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    await nc?.close();
    await bed?.stop();
  });

  it('refuses a qemu VM without a guest, and records nothing', async () => {
    const reply = await apiCall(nc, Site.A, 'vm.create', { vmId: 'no-guest', driver: 'qemu' });
    expect(reply).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    const missing = await apiCall(nc, Site.A, 'vm.get', { vmId: 'no-guest' });
    expect(missing).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    const unknown = await apiCall(nc, Site.A, 'vm.create', { vmId: 'bad-driver', driver: 'xen' });
    expect(unknown).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
  });

  it(
    'creates one at A, moves it to B and back: COMMITTED and verified each way, its counter carried on',
    async () => {
      const vm = await apiOk<VmLike>(
        nc,
        Site.A,
        'vm.create',
        { vmId: 'qvm', driver: 'qemu', guest: 'test', ramBytes: 256 * MIB },
        MOVE_TIMEOUT_MS,
      );
      expect(vm).toMatchObject({ vmId: 'qvm', site: Site.A, driver: 'qemu', state: 'running' });
      const before = await queryGuestCounter(portOf(vm.serviceAddress));

      let from: Site = Site.A;
      let to: Site = Site.B;
      let last = before;
      for (const leg of ['A→B', 'B→A']) {
        const client = from === Site.A ? nc : await connect({ servers: bed.sites.b.url });
        try {
          const created = await apiOk<MigrationLike>(client, from, 'migration.create', {
            vmId: 'qvm',
            toSite: to,
            verify: true,
          });
          const done = await waitMigration(client, from, created.id, isFinished, MOVE_TIMEOUT_MS);
          expect(done.phase, `${leg}: ${JSON.stringify(done.error)}`).toBe('COMMITTED');
          const phases = done.history.map((h) => h.phase);
          expect(phases).toEqual(expect.arrayContaining(['DISK_BULK', 'MEM_PRECOPY', 'STOP_AND_COPY', 'ACTIVATE']));
          expect(phases).not.toContain('ROLLING_BACK');
          const figures = done.figures as Record<string, unknown>;
          console.info(`[qemu-orchestrator] ${leg}: ${JSON.stringify(figures)}`);
          expect(figures.diskVerified, `${leg}: disk verified at pause`).toBe(true);
          expect(figures.ramVerified, `${leg}: stream digests matched before the resume`).toBe(true);
        } finally {
          if (client !== nc) await client.close();
        }
        const moved = await apiOk<VmLike>(nc, to, 'vm.get', { vmId: 'qvm' });
        expect(moved).toMatchObject({ site: to, driver: 'qemu', state: 'running' });
        const gone = await apiCall(nc, from, 'vm.get', { vmId: 'qvm' });
        expect(gone).toMatchObject({ ok: false, code: 'NOT_FOUND' });
        const counter = await queryGuestCounter(portOf(moved.serviceAddress));
        expect(counter, `${leg}: the guest's in-memory counter continues`).toBeGreaterThan(last);
        last = counter;
        [from, to] = [to, from];
      }
      await apiOk(nc, Site.A, 'vm.rm', { vmId: 'qvm' }, 30_000);
    },
    2 * MOVE_TIMEOUT_MS + 120_000,
  );
});
