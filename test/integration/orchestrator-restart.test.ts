import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalBed, Site } from '@wanmig/testing';
import { apiOk, isFinished, waitMigration, type MigrationLike } from '../support/external.client.js';

const MIB = 1024 * 1024;

interface EngineState {
  phase: string;
  round: number;
  bulkBytes?: number;
  rawBytesSent: number;
  elapsedSeconds: number;
}

/** A data-plane service's own progress, asked directly over NATS (plain JSON, as any client may). */
async function engine(nc: NatsConnection, service: string, verb: string, migrationId: string): Promise<EngineState> {
  const msg = await nc.request(`wanmig.v1.${Site.A}.${service}.${verb}`, JSON.stringify({ migrationId }), {
    timeout: 5000,
  });
  const reply = msg.json<{ response?: EngineState; err?: { message: string } }>();
  if (!reply.response) throw new Error(reply.err?.message ?? 'no response');
  return reply.response;
}

/**
 * Kill -9 of the orchestrator that drives a migration, then a restart: it reads the phase it wrote last and
 * re-attaches to the transfers, which went on meanwhile in their own services; nothing starts again from zero.
 */
describe('an orchestrator killed mid-migration resumes it', () => {
  let bed: LocalBed;
  let nc: NatsConnection;

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 20, bandwidthBps: 40e6, orchestrator: true });
    nc = await connect({ servers: bed.sites.a.url });
  }, 120_000);

  afterAll(async () => {
    await nc?.close();
    await bed?.stop();
  });

  it('during DISK_BULK', async () => {
    await apiOk(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'crash-disk', ramBytes: 128 * MIB, diskBytes: 256 * MIB, workload: 'db' },
      60_000,
    );
    const m = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId: 'crash-disk', toSite: Site.B });
    await waitMigration(nc, Site.A, m.id, (r) => r.phase === 'DISK_BULK' || isFinished(r), 60_000, 20);
    let atKill: EngineState;
    for (;;) {
      atKill = await engine(nc, 'disk-transfer', 'disk.progress', m.id).catch(() => ({
        phase: 'not started',
        round: 0,
        bulkBytes: 0,
        rawBytesSent: 0,
        elapsedSeconds: 0,
      }));
      if ((atKill.bulkBytes ?? 0) > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(atKill.phase).toBe('bulk');
    await bed.crashAndRestartOrchestrator(Site.A, 1000);
    // The copy went on while nobody drove it, and the restarted orchestrator did not start another.
    // Same engine (its clock ran through the outage), never back to the start.
    const after = await engine(nc, 'disk-transfer', 'disk.progress', m.id);
    expect(after.bulkBytes ?? 0).toBeGreaterThanOrEqual(atKill.bulkBytes ?? 0);
    expect(after.elapsedSeconds).toBeGreaterThan(atKill.elapsedSeconds + 1);
    const done = await waitMigration(nc, Site.A, m.id, isFinished, 180_000);
    expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
    expect(done.figures).toMatchObject({ diskVerified: true, ramVerified: true, answersMatch: true });
    expect(done.history.filter((h) => h.phase === 'DISK_BULK')).toHaveLength(1);
  }, 240_000);

  it('during MEM_PRECOPY', async () => {
    await apiOk(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'crash-mem', ramBytes: 256 * MIB, diskBytes: 64 * MIB, workload: 'web' },
      60_000,
    );
    const m = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId: 'crash-mem', toSite: Site.B });
    await waitMigration(nc, Site.A, m.id, (r) => r.phase === 'MEM_PRECOPY' || isFinished(r), 120_000, 20);
    let atKill: EngineState;
    for (;;) {
      // The runner asks memory-precopy to start just after it writes MEM_PRECOPY: not found until then.
      atKill = await engine(nc, 'memory-precopy', 'mem.progress', m.id).catch(() => ({
        phase: 'not started',
        round: 0,
        rawBytesSent: 0,
        elapsedSeconds: 0,
      }));
      if (atKill.rawBytesSent > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(atKill.phase).toBe('precopy');
    await bed.crashAndRestartOrchestrator(Site.A, 1000);
    const after = await engine(nc, 'memory-precopy', 'mem.progress', m.id);
    expect(after.rawBytesSent).toBeGreaterThanOrEqual(atKill.rawBytesSent);
    expect(after.round).toBeGreaterThanOrEqual(atKill.round);
    expect(after.elapsedSeconds).toBeGreaterThan(atKill.elapsedSeconds + 1);
    const done = await waitMigration(nc, Site.A, m.id, isFinished, 180_000);
    expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
    expect(done.figures).toMatchObject({ diskVerified: true, ramVerified: true, answersMatch: true });
    expect(done.history.filter((h) => h.phase === 'MEM_PRECOPY')).toHaveLength(1);
    const vm = await apiOk<{ state: string }>(nc, Site.B, 'vm.get', { vmId: 'crash-mem' });
    expect(vm.state).toBe('running');
  }, 240_000);
});
