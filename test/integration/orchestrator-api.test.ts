import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORWARD_PHASES } from '@wanmig/protocol';
import { LocalBed, Site } from '@wanmig/testing';
import { apiCall, apiOk, isFinished, waitMigration, type MigrationLike } from '../support/external.client.js';

const MIB = 1024 * 1024;
const FORWARD = [...FORWARD_PHASES];

interface VmLike {
  vmId: string;
  site: string;
  state: string;
  serviceAddress?: string;
}

describe('the orchestrator NATS API, driven by a plain NATS client', () => {
  let bed: LocalBed;
  let nc: NatsConnection;

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 10, bandwidthBps: 400e6, orchestrator: true, http: true });
    nc = await connect({ servers: bed.sites.a.url });
  }, 120_000);

  afterAll(async () => {
    await nc?.close();
    await bed?.stop();
  });

  it('lists both sites as reachable', async () => {
    const { sites } = await apiOk<{ sites: Array<{ site: string; reachable: boolean; freeDiskBytes?: number }> }>(
      nc,
      Site.A,
      'site.list',
      {},
    );
    expect(sites.map((s) => [s.site, s.reachable])).toEqual([
      [Site.A, true],
      [Site.B, true],
    ]);
    expect(sites[1].freeDiskBytes).toBeGreaterThan(0);
  });

  it('serves the same operations over HTTP, described by its OpenAPI document', async () => {
    const base = bed.httpUrl(Site.A);
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const doc = (await (await fetch(`${base}/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    expect(doc.openapi).toMatch(/^3\.1/);
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/migrations', '/v1/vms', '/v1/sites']));
    const site = (await (await fetch(`${base}/v1/site`)).json()) as { site: string; httpUrl?: string };
    expect(site).toMatchObject({ site: Site.A, httpUrl: base });
    const refused = await fetch(`${base}/v1/migrations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ vmId: 'nope', toSite: Site.B }),
    });
    expect(refused.status).toBe(404);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
    const vms = (await (await fetch(`${base}/v1/vms`)).json()) as { vms: unknown[] };
    expect(Array.isArray(vms.vms)).toBe(true);
  });

  it('refuses bad requests with a typed error and changes nothing', async () => {
    await apiOk(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'bad-1', ramBytes: 64 * MIB, diskBytes: 16 * MIB, workload: 'idle' },
      60_000,
    );
    const cases: Array<[unknown, string]> = [
      [{ vmId: 'nope', toSite: Site.B }, 'NOT_FOUND'],
      [{ vmId: 'bad-1', toSite: Site.A }, 'INVALID_REQUEST'],
      [{ vmId: 'bad-1', toSite: 'site-z' }, 'NOT_FOUND'],
      [{ vmId: 'bad-1', toSite: Site.B, colour: 'blue' }, 'INVALID_REQUEST'],
      [{ vmId: 'bad-1', toSite: Site.B, downtimeMs: -5 }, 'INVALID_REQUEST'],
      ['not json at all', 'INVALID_REQUEST'],
    ];
    for (const [body, code] of cases) {
      const reply = await apiCall(nc, Site.A, 'migration.create', body);
      expect(reply.ok, JSON.stringify(body)).toBe(false);
      if (!reply.ok) {
        expect(reply.code, `${JSON.stringify(body)}: ${reply.message}`).toBe(code);
        expect(reply.message.length).toBeGreaterThan(5);
      }
    }
    const missing = await apiCall(nc, Site.A, 'migration.get', { migrationId: '6b0f4c9e-8a52-4a9e-9a4b-0d6a3e0f1a11' });
    expect(missing.ok === false && missing.code).toBe('NOT_FOUND');
    const { migrations } = await apiOk<{ migrations: unknown[] }>(nc, Site.A, 'migration.list', {});
    expect(migrations).toEqual([]);
    const vm = await apiOk<VmLike>(nc, Site.A, 'vm.get', { vmId: 'bad-1' });
    expect(vm.state).toBe('running');
    await apiOk(nc, Site.A, 'vm.rm', { vmId: 'bad-1' });
    const gone = await apiCall(nc, Site.A, 'vm.get', { vmId: 'bad-1' });
    expect(gone.ok === false && gone.code).toBe('NOT_FOUND');
  }, 120_000);

  it('moves a running VM to site B and back, through every phase, verified', async () => {
    const created = await apiOk<VmLike>(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'web-1', ramBytes: 64 * MIB, diskBytes: 64 * MIB, workload: 'db', seed: 7 },
      60_000,
    );
    expect(created).toMatchObject({ vmId: 'web-1', site: Site.A, state: 'running' });

    const started = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId: 'web-1', toSite: Site.B });
    expect(started.phase).toBe('PLANNED');
    const again = await apiCall(nc, Site.A, 'migration.create', { vmId: 'web-1', toSite: Site.B });
    expect(again.ok === false && again.code).toBe('CONFLICT');

    const done = await waitMigration(nc, Site.A, started.id, isFinished);
    expect(done.error, JSON.stringify(done.error)).toBeUndefined();
    expect(done.phase).toBe('COMMITTED');
    expect(done.history.map((h) => h.phase)).toEqual(FORWARD);
    expect(done.figures).toMatchObject({ diskVerified: true, ramVerified: true, answersMatch: true });
    expect(done.figures?.downtimeMs).toBeGreaterThan(0);

    const atB = await apiOk<{ vms: VmLike[] }>(nc, Site.B, 'vm.list', {});
    expect(atB.vms.map((v) => [v.vmId, v.state])).toEqual([['web-1', 'running']]);
    const atA = await apiOk<{ vms: VmLike[] }>(nc, Site.A, 'vm.list', {});
    expect(atA.vms).toEqual([]);

    const events = await apiOk<Array<{ type: string; subject: string; data: { to?: string } }>>(
      nc,
      Site.A,
      'migration.events',
      { migrationId: started.id },
    );
    expect(events.every((e) => e.subject === started.id)).toBe(true);
    const types = events.map((e) => e.type.replace('io.wanmig.migration.', ''));
    expect(types).toContain('downtime-measured');
    expect(types.at(-1)).toBe('completed');
    expect(events.filter((e) => e.type.endsWith('phase-changed')).map((e) => e.data.to)).toEqual(FORWARD);

    const late = await apiCall(nc, Site.A, 'migration.abort', { migrationId: started.id });
    expect(late.ok === false && late.code).toBe('CONFLICT');

    // And back, driven by site B's orchestrator (reached through site A's server: the sites are one namespace).
    const back = await apiOk<MigrationLike>(nc, Site.B, 'migration.create', { vmId: 'web-1', toSite: Site.A });
    const home = await waitMigration(nc, Site.B, back.id, isFinished);
    expect(home.phase, JSON.stringify(home.error)).toBe('COMMITTED');
    expect(home.figures).toMatchObject({ diskVerified: true, ramVerified: true, answersMatch: true });
    const vm = await apiOk<VmLike>(nc, Site.A, 'vm.get', { vmId: 'web-1' });
    expect(vm.state).toBe('running');
  }, 300_000);

  it('keeps disk and memory together within the bandwidth budget of the migration', async () => {
    await apiOk(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'budget-1', ramBytes: 64 * MIB, diskBytes: 128 * MIB, workload: 'db' },
      60_000,
    );
    const budgetBps = 60e6;
    const before = bed.sites.wan.stats();
    const m = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', {
      vmId: 'budget-1',
      toSite: Site.B,
      bandwidthBps: budgetBps,
    });
    const done = await waitMigration(nc, Site.A, m.id, isFinished);
    expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
    const after = bed.sites.wan.stats();
    const at = (phase: string) => Date.parse(done.history.find((h) => h.phase === phase)!.at);
    // From the first data to the end of the pause: everything the engines sent crossed in that time.
    const seconds = (at('REDIRECT') - at('DISK_BULK')) / 1000;
    const bitsPerSecond = ((after.aToB - before.aToB) * 8) / seconds;
    // Within the budget is asserted; how much of it a loaded machine uses is a speed, printed.
    console.log(`budget ${budgetBps / 1e6} Mbit/s, used ${(bitsPerSecond / 1e6).toFixed(1)} Mbit/s over ${seconds} s`);
    expect(bitsPerSecond).toBeLessThan(budgetBps * 1.1);
    await apiOk(nc, Site.B, 'vm.rm', { vmId: 'budget-1' }, 60_000);
  }, 180_000);
});
