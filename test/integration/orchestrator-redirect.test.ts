/**
 * Network redirection through the orchestrators, with the embedded guest, in network namespaces (NetBed): a VM with
 * its own address, a client in its own namespace behind the router holding ONE connection to that address. The VM's
 * NIC at B is made during pre-copy; inside the pause, once B has checked what it received, the router's /32 moves,
 * then B runs the VM; REDIRECT turns A's NIC into the relay and publishes `net.moved`. The client never connects
 * again and its counter goes on; a new connection reaches B directly. A route agent that cannot move the route rolls
 * the migration back before B ever ran the VM: the client still talks to the VM at A and nothing it wrote is lost.
 * Controllers that refuse `net.moved` at first only delay REDIRECT (retried, `stuck` events): never a rollback.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { SimDriver } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  GUEST_SERVICE_PORT,
  MemoryVerb,
  NetRedirectSubjects,
  NetRedirectVerb,
  ServiceName,
  type CloudEvent,
  type StuckData,
  type VmNicStatus,
} from '@wanmig/protocol';
import {
  LocalBed,
  NetBed,
  netAvailable,
  netRedirectEnv,
  netUnavailableMessage,
  openNsPort,
  Site,
  waitUntil,
  type NetnsProcess,
} from '@wanmig/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { GuestProber } from '../../apps/cli/src/vm/guest.prober.js';
import { apiOk, isFinished, waitMigration, type MigrationLike } from '../support/external.client.js';
import { guestState } from '../support/guest.state.js';

const MIB = 1024 * 1024;
const skipped = netUnavailableMessage(await netAvailable());
if (skipped) console.warn(`orchestrator redirect: ${skipped}`);

interface VmLike {
  vmId: string;
  site: string;
  state: string;
  addresses?: string[];
  serviceAddress?: string;
  diskPath: string;
}

const DISK_BLOCK = 64 * 1024;

describe.skipIf(skipped !== undefined)('REDIRECT moves the VM’s address with it (embedded guest, namespaces)', () => {
  let netBed: NetBed | undefined;
  let bed: LocalBed | undefined;
  let nc: NatsConnection | undefined;
  const doors: NetnsProcess[] = [];
  const probers: GuestProber[] = [];
  let dir: string | undefined;

  afterEach(async () => {
    for (const p of probers.splice(0)) p.stop();
    for (const d of doors.splice(0)) await d.stop();
    await nc?.close();
    await bed?.stop();
    await netBed?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
    nc = bed = netBed = dir = undefined;
  });

  async function start(
    env: (nb: NetBed) => ReturnType<typeof netRedirectEnv>,
    orchestratorEnv?: Partial<Record<Site, Record<string, string>>>,
  ): Promise<{ nb: NetBed; b: LocalBed }> {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-redirect-'));
    netBed = await NetBed.create();
    bed = await LocalBed.start({
      delayMs: 10,
      bandwidthBps: 200e6,
      orchestrator: true,
      net: { env: env(netBed) },
      orchestratorEnv,
    });
    nc = await connect({ servers: bed.sites.a.url });
    return { nb: netBed, b: bed };
  }

  /** A client in the client namespace, holding one connection to `address` (through a door on a unix socket). */
  async function client(nb: NetBed, address: string, name: string): Promise<GuestProber> {
    const path = join(dir!, `${name}.sock`);
    doors.push(await openNsPort(nb, 'client', { path, host: address, port: GUEST_SERVICE_PORT, lifetimeMs: 120_000 }));
    const prober = new GuestProber(`unix:${path}`, 5, 120);
    probers.push(prober);
    prober.start();
    await waitUntil(() => prober.around(0).answersAfter >= 10, { timeoutMs: 10_000, what: `${name} answered` });
    return prober;
  }

  function nicStatus(site: Site, vmId: string): Promise<VmNicStatus> {
    return callControl<VmNicStatus>(nc!, controlSubject(site, ServiceName.NetRedirect, NetRedirectVerb.VmStatus), {
      vmId,
    });
  }

  function events(migrationId: string): Promise<CloudEvent[]> {
    return apiOk<CloudEvent[]>(nc!, Site.A, 'migration.events', { migrationId });
  }

  /**
   * With the guest paused (no write in flight): each 64 KiB block of its disk as the guest reads it back equals the
   * image file at its site. What it wrote and was told was written is on the disk.
   */
  async function diskHoldsWhatTheGuestWrote(vm: VmLike, runtimeDir: string): Promise<number> {
    const guest = await new SimDriver({ runtimeDir }).attach(vm.vmId);
    const image = await open(vm.diskPath, 'r');
    await guest.pause();
    try {
      const blocks = Math.ceil((await image.stat()).size / DISK_BLOCK);
      for (let block = 0; block < blocks; block++) {
        const { buffer, bytesRead } = await image.read(Buffer.alloc(DISK_BLOCK), 0, DISK_BLOCK, block * DISK_BLOCK);
        const onFile = createHash('sha256').update(buffer.subarray(0, bytesRead)).digest('hex');
        expect(await guest.query(`DISK ${block}`), `block ${block}`).toBe(onFile);
      }
      return blocks;
    } finally {
      await guest.resume();
      await image.close();
      await guest.detach?.();
    }
  }

  it('the client keeps its one connection across the move; a new one reaches B directly', async () => {
    const { nb } = await start(netRedirectEnv);
    const address = nb.vmAddress(1);
    const vm = await apiOk<VmLike>(
      nc!,
      Site.A,
      'vm.create',
      { vmId: 'moves', ramBytes: 64 * MIB, diskBytes: 64 * MIB, workload: 'web', seed: 3, addresses: [address] },
      120_000,
    );
    expect(vm.addresses).toEqual([address]);
    expect(await nb.routedTo(address)).toBe('siteA');
    const prober = await client(nb, address, 'held');

    const created = await apiOk<MigrationLike>(nc!, Site.A, 'migration.create', { vmId: 'moves', toSite: Site.B });
    const done = await waitMigration(nc!, Site.A, created.id, isFinished, 180_000);
    expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
    expect(await nb.routedTo(address)).toBe('siteB');

    const figures = done.figures as { pausedAt: number; resumedAt: number; downtimeMs: number; routeMovedAt: number };
    const { pausedAt } = figures;
    await waitUntil(() => prober.around(pausedAt).answersAfter >= 20, { timeoutMs: 10_000, what: 'answers after' });
    const around = prober.around(pausedAt, figures.resumedAt);
    const relayedByA = (await nicStatus(Site.A, 'moves')).connections.relayed;
    console.log(
      `redirect: first answer ${around.firstAnswerMs} ms after the pause, engine pause ${figures.downtimeMs} ms, ` +
        `route moved +${figures.routeMovedAt - pausedAt} ms, relayed by A ${relayedByA}, ` +
        `counter ${around.lastCounterBefore} → ${around.firstCounterAfter}`,
    );
    expect(prober.reconnects).toBe(0);
    expect(around.firstCounterAfter).toBeGreaterThanOrEqual(around.lastCounterBefore);
    expect(relayedByA).toBeGreaterThanOrEqual(1);

    // A new connection goes to B by the route alone: B's NIC accepts it, A's relay does not see it.
    const acceptedAtB = (await nicStatus(Site.B, 'moves')).connections.accepted;
    const acceptedAtA = (await nicStatus(Site.A, 'moves')).connections.accepted;
    const fresh = await client(nb, address, 'fresh');
    expect(fresh.reconnects).toBe(0);
    expect((await nicStatus(Site.B, 'moves')).connections.accepted).toBeGreaterThan(acceptedAtB);
    expect((await nicStatus(Site.A, 'moves')).connections.accepted).toBe(acceptedAtA);

    const atB = await apiOk<VmLike>(nc!, Site.B, 'vm.get', { vmId: 'moves' });
    expect(atB.addresses).toEqual([address]);
  }, 300_000);

  it('a route agent that refuses rolls back before B runs the VM: the client is served at A, nothing lost', async () => {
    // Site A's route agent knows only its own next hop: the move to B is refused, inside the pause.
    const { nb } = await start((b) => {
      const env = netRedirectEnv(b);
      env[Site.A] = { ...env[Site.A], WANMIG_ROUTE_VIA: `${Site.A}=${b.nextHop('siteA')}` };
      return env;
    });
    const address = nb.vmAddress(2);
    const vm = await apiOk<VmLike>(
      nc!,
      Site.A,
      'vm.create',
      { vmId: 'stays', ramBytes: 64 * MIB, diskBytes: 64 * MIB, workload: 'db', seed: 4, addresses: [address] },
      120_000,
    );
    const prober = await client(nb, address, 'held');
    const before = await guestState(vm.serviceAddress!);
    const created = await apiOk<MigrationLike>(nc!, Site.A, 'migration.create', { vmId: 'stays', toSite: Site.B });
    const done = await waitMigration(nc!, Site.A, created.id, isFinished, 180_000);
    expect(done.phase).toBe('ROLLED_BACK');
    // Failed in the pause, before the destination ran anything: no REDIRECT, no resume, no downtime measured.
    expect(done.history.map((h) => h.phase).slice(-3)).toEqual(['STOP_AND_COPY', 'ROLLING_BACK', 'ROLLED_BACK']);
    expect(done.error?.message).toMatch(/site-b/);
    expect(done.figures?.resumedAt).toBeUndefined();
    const kinds = (await events(created.id)).map((e) => e.type);
    expect(kinds).toContain('io.wanmig.migration.failed');
    expect(kinds).not.toContain('io.wanmig.migration.downtime-measured');
    expect(kinds).not.toContain('io.wanmig.migration.stuck');
    expect(await nb.routedTo(address)).toBe('siteA');
    await expect(
      callControl(nc!, controlSubject(Site.B, ServiceName.DeltaApply, MemoryVerb.Status), { migrationId: created.id }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });

    // The client's one connection is served by A again, its counter going on from where it was.
    const pausedAt = Date.parse(done.history.find((h) => h.phase === 'STOP_AND_COPY')!.at);
    const rolledBackAt = Date.parse(done.history.at(-1)!.at);
    await waitUntil(() => prober.around(rolledBackAt).answersAfter >= 20, {
      timeoutMs: 10_000,
      what: 'answers at A after the rollback',
    });
    const around = prober.around(pausedAt);
    expect(around.firstCounterAfter).toBeGreaterThanOrEqual(around.lastCounterBefore);
    expect(prober.reconnects).toBe(0);

    // The same guest process at A, counting on and writing its disk without an error.
    const s1 = await guestState(vm.serviceAddress!);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const s2 = await guestState(vm.serviceAddress!);
    expect(s1.uptimeMs).toBeGreaterThan(before.uptimeMs);
    expect(s1.counter).toBeGreaterThanOrEqual(before.counter);
    expect(s2.counter).toBeGreaterThan(s1.counter);
    expect(s1.diskWrites).toBeGreaterThanOrEqual(before.diskWrites);
    expect(s2.diskWrites).toBeGreaterThan(s1.diskWrites);
    expect(s2.diskErrors).toBe(0);
    expect(await diskHoldsWhatTheGuestWrote(vm, bed!.runtimeDirA)).toBe((64 * MIB) / DISK_BLOCK);
    expect(prober.stop().counterWentBack).toBe(false);

    const still = await apiOk<VmLike>(nc!, Site.A, 'vm.get', { vmId: 'stays' });
    expect(still.state).toBe('running');
    expect((await nicStatus(Site.A, 'stays')).state).toBe('attached');
    const atB = await nicStatus(Site.B, 'stays').then(
      (s) => s.state,
      (err: { code?: string }) => err.code,
    );
    expect(['detached', 'NOT_FOUND']).toContain(atB);
  }, 300_000);

  it('controllers that refuse net.moved at first: REDIRECT is retried with stuck events, and ends COMMITTED', async () => {
    // Site A's orchestrator requires one controller to confirm each move on the hook.
    const { nb } = await start(netRedirectEnv, {
      [Site.A]: { WANMIG_NET_MOVED_CONTROLLERS: '1', WANMIG_NET_MOVED_TIMEOUT_MS: '2000' },
    });
    const REFUSALS = 2;
    let asked = 0;
    const controller = nc!.subscribe(NetRedirectSubjects.movedHook(), {
      callback: (_err, msg) => {
        asked++;
        msg.respond(
          JSON.stringify(
            asked <= REFUSALS
              ? { applied: false, reason: 'load balancer not ready', controller: 'test-lb' }
              : { applied: true, controller: 'test-lb' },
          ),
        );
      },
    });
    await nc!.flush();
    const address = nb.vmAddress(3);
    await apiOk<VmLike>(
      nc!,
      Site.A,
      'vm.create',
      { vmId: 'confirmed', ramBytes: 64 * MIB, diskBytes: 64 * MIB, workload: 'db', seed: 5, addresses: [address] },
      120_000,
    );
    const prober = await client(nb, address, 'held');
    const created = await apiOk<MigrationLike>(nc!, Site.A, 'migration.create', { vmId: 'confirmed', toSite: Site.B });
    const done = await waitMigration(nc!, Site.A, created.id, isFinished, 180_000);
    controller.unsubscribe();
    expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
    expect(done.history.map((h) => h.phase)).not.toContain('ROLLING_BACK');
    expect(asked).toBe(REFUSALS + 1);

    // One stuck event per refused attempt, in REDIRECT, saying what failed and when the next attempt comes.
    const stuck = (await events(created.id))
      .filter((e) => e.type === 'io.wanmig.migration.stuck')
      .map((e) => e.data as StuckData);
    expect(stuck.map((d) => [d.phase, d.attempt, d.nextRetryMs])).toEqual([
      ['REDIRECT', 1, 500],
      ['REDIRECT', 2, 1000],
    ]);
    expect(stuck[0].error.message).toMatch(/test-lb refused: load balancer not ready/);

    // The VM ran at B all along: the client's one connection kept, its counter on from the pause and still counting.
    const figures = done.figures as { pausedAt: number; resumedAt: number };
    const committedAt = Date.parse(done.history.at(-1)!.at);
    await waitUntil(() => prober.around(committedAt).answersAfter >= 20, {
      timeoutMs: 10_000,
      what: 'answers after the commit',
    });
    const around = prober.around(figures.pausedAt, figures.resumedAt);
    expect(around.firstCounterAfter).toBeGreaterThanOrEqual(around.lastCounterBefore);
    expect(prober.reconnects).toBe(0);
    expect(prober.stop().counterWentBack).toBe(false);
    expect(await nb.routedTo(address)).toBe('siteB');
    const atB = await apiOk<VmLike>(nc!, Site.B, 'vm.get', { vmId: 'confirmed' });
    expect(atB.state).toBe('running');
    const s1 = await guestState(atB.serviceAddress!);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const s2 = await guestState(atB.serviceAddress!);
    expect(s2.counter).toBeGreaterThan(s1.counter);
    expect(s2.diskWrites).toBeGreaterThan(s1.diskWrites);
    expect(s2.diskErrors).toBe(0);
    expect(await diskHoldsWhatTheGuestWrote(atB, bed!.runtimeDirB)).toBe((64 * MIB) / DISK_BLOCK);
  }, 300_000);
});
