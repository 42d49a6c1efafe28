/**
 * Network redirection through the orchestrators, with the embedded guest, in network namespaces (NetBed): a VM with
 * its own address, a client in its own namespace behind the router holding ONE connection to that address. The
 * migration's REDIRECT gives the VM its NIC at B, moves the router's /32 and turns A's NIC into the relay. The client
 * never connects again and its counter goes on; a new connection reaches B directly. A route agent that cannot move
 * the route fails the migration before ACTIVATE: it rolls back, and the client still talks to the VM at A.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  GUEST_SERVICE_PORT,
  NetRedirectVerb,
  ServiceName,
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

const MIB = 1024 * 1024;
const skipped = netUnavailableMessage(await netAvailable());
if (skipped) console.warn(`orchestrator redirect: ${skipped}`);

interface VmLike {
  vmId: string;
  site: string;
  state: string;
  addresses?: string[];
}

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

  async function start(env: (nb: NetBed) => ReturnType<typeof netRedirectEnv>): Promise<{ nb: NetBed; b: LocalBed }> {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-redirect-'));
    netBed = await NetBed.create();
    bed = await LocalBed.start({
      delayMs: 10,
      bandwidthBps: 200e6,
      orchestrator: true,
      net: { env: env(netBed) },
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

  it('a route agent that cannot move the route fails REDIRECT: rolled back, the client still served at A', async () => {
    // Site A's route agent knows only its own next hop: the move to B is refused.
    const { nb } = await start((b) => {
      const env = netRedirectEnv(b);
      env[Site.A] = { ...env[Site.A], WANMIG_ROUTE_VIA: `${Site.A}=${b.nextHop('siteA')}` };
      return env;
    });
    const address = nb.vmAddress(2);
    await apiOk<VmLike>(
      nc!,
      Site.A,
      'vm.create',
      { vmId: 'stays', ramBytes: 64 * MIB, diskBytes: 64 * MIB, workload: 'web', seed: 4, addresses: [address] },
      120_000,
    );
    const prober = await client(nb, address, 'held');
    const created = await apiOk<MigrationLike>(nc!, Site.A, 'migration.create', { vmId: 'stays', toSite: Site.B });
    const done = await waitMigration(nc!, Site.A, created.id, isFinished, 180_000);
    expect(done.phase).toBe('ROLLED_BACK');
    expect(done.history.map((h) => h.phase)).toContain('REDIRECT');
    expect(done.error?.message).toMatch(/site-b/);
    expect(await nb.routedTo(address)).toBe('siteA');

    const rolledBackAt = Date.parse(done.history.at(-1)!.at);
    await waitUntil(() => prober.around(rolledBackAt).answersAfter >= 20, {
      timeoutMs: 10_000,
      what: 'answers at A after the rollback',
    });
    expect(prober.reconnects).toBe(0);
    const vm = await apiOk<VmLike>(nc!, Site.A, 'vm.get', { vmId: 'stays' });
    expect(vm.state).toBe('running');
    expect((await nicStatus(Site.A, 'stays')).state).toBe('attached');
    const atB = await nicStatus(Site.B, 'stays').then(
      (s) => s.state,
      (err: { code?: string }) => err.code,
    );
    expect(['detached', 'NOT_FOUND']).toContain(atB);
  }, 300_000);
});
