/**
 * A real QEMU VM through the product's one path: created at site A with `vm.create` (driver qemu, the test guest),
 * moved to B with `migration.create` and back, by a plain NATS client, through both sites' orchestrators and real
 * services. QEMU mirrors its disk into disk-transfer, migrates itself into memory-precopy's relay; delta-apply starts
 * the destination QEMU, checks the stream's digests, and runs it only on the orchestrator's go.
 */
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { callControl, controlSubject, MemoryPrecopyVerb, ServiceName, type MemoryProgress } from '@wanmig/protocol';
import { ensureGuestImage, LocalBed, queryGuestCounter, Site, waitUntil } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  apiCall,
  apiOk,
  isFinished,
  waitMigration,
  type MigrationLike,
  portOf,
  QEMU_TCG_ENV,
  type VmLike,
} from '../support/external.client.js';

const MIB = 1024 * 1024;
const SETUP_TIMEOUT_MS = 15 * 60_000; // the first guest build debootstraps Debian; later runs find it cached
const MOVE_TIMEOUT_MS = 240_000;
const TCG = QEMU_TCG_ENV;
/** QEMU's stream is under way (of a 256 MiB guest's) once this much of it went through the relay. */
const STREAM_FLOWING_BYTES = 32 * MIB;

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

  /**
   * What a kill -9 of a stream's engine costs once QEMU's stream flows: it cannot be taken up again half way (the
   * destination QEMU holds a prefix of it and QEMU's parser state; a new stream would not continue it), so the
   * migration rolls back, the source running on with nothing lost, and a new migration moves the VM.
   */
  for (const [service, site] of [
    ['memoryPrecopy', Site.A],
    ['deltaApply', Site.B],
  ] as const) {
    it(
      `kill -9 of ${service} while QEMU's stream flows: rolled back, the source runs on, the next move commits`,
      async () => {
        const vmId = `kill-${service.toLowerCase()}`;
        const vm = await apiOk<VmLike>(
          nc,
          Site.A,
          'vm.create',
          { vmId, driver: 'qemu', guest: 'test', ramBytes: 256 * MIB },
          MOVE_TIMEOUT_MS,
        );
        const port = portOf(vm.serviceAddress);
        const before = await queryGuestCounter(port);
        const created = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId, toSite: Site.B });
        // Killed once QEMU's stream flows (its bytes are at the destination QEMU already), not before it starts.
        await waitUntil(
          async () => {
            const m = await apiOk<MigrationLike>(nc, Site.A, 'migration.get', { migrationId: created.id });
            if (isFinished(m)) throw new Error(`migration ended ${m.phase} before the stream flowed`);
            if (m.phase !== 'MEM_PRECOPY') return false;
            const progress = await callControl<MemoryProgress>(
              nc,
              controlSubject(Site.A, ServiceName.MemoryPrecopy, MemoryPrecopyVerb.Progress),
              { migrationId: created.id },
            ).catch(() => undefined);
            return (progress?.rawBytesSent ?? 0) > STREAM_FLOWING_BYTES;
          },
          { timeoutMs: MOVE_TIMEOUT_MS, intervalMs: 50, what: "QEMU's stream to flow" },
        );
        await bed.crashAndRestart(site, service, 2000);
        const done = await waitMigration(nc, Site.A, created.id, isFinished, MOVE_TIMEOUT_MS);
        console.info(`[qemu-orchestrator] ${service} killed mid-stream: ${done.phase}: ${JSON.stringify(done.error)}`);
        expect(done.phase).toBe('ROLLED_BACK');
        expect(done.history.map((h) => h.phase)).not.toContain('REDIRECT');
        const after = await queryGuestCounter(port);
        expect(after, 'the source runs on, its counter grew').toBeGreaterThan(before);
        const listed = await apiOk<{ vms: VmLike[] }>(nc, Site.B, 'vm.list', {});
        expect(listed.vms.map((v) => v.vmId)).not.toContain(vmId);
        const again = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId, toSite: Site.B });
        const moved = await waitMigration(nc, Site.A, again.id, isFinished, MOVE_TIMEOUT_MS);
        expect(moved.phase, JSON.stringify(moved.error)).toBe('COMMITTED');
        expect(moved.figures?.ramVerified).toBe(true);
        const atB = await apiOk<VmLike>(nc, Site.B, 'vm.get', { vmId });
        expect(atB.state).toBe('running');
        expect(await queryGuestCounter(portOf(atB.serviceAddress))).toBeGreaterThan(before);
        await apiOk(nc, Site.B, 'vm.rm', { vmId }, 30_000);
      },
      3 * MOVE_TIMEOUT_MS,
    );
  }
});
