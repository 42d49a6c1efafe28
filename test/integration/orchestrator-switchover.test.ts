/**
 * The switchover around its point of no return, the destination's resume, through the real services.
 *
 * Past it there is only forward recovery. Site B's orchestrator is away while the migration runs: everything up to
 * the destination's resume does without it, ACTIVATE's `vm.adopt` does not. The migration retries ACTIVATE with
 * backoff, publishing `stuck` events, refuses an abort, never rolls back, and ends COMMITTED once B answers again;
 * the VM runs at B all along and keeps what it did there.
 *
 * Before it, memory-precopy holds the paused guest for the orchestrator's go: an orchestrator killed during pre-copy
 * and started again while it holds finds the hold (nothing ran at B meanwhile) and gives the go.
 */
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { SimDriver } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  MemoryVerb,
  ServiceName,
  Subjects,
  type CloudEvent,
  type MemoryStatusReply,
  type StuckData,
} from '@wanmig/protocol';
import { LocalBed, Site, waitUntil } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestProber } from '../../apps/cli/src/vm/guest.prober.js';
import { apiCall, apiOk, isFinished, waitMigration, type MigrationLike } from '../support/external.client.js';
import { guestState } from '../support/guest.state.js';

const MIB = 1024 * 1024;
const BEFORE_THE_PAUSE = ['PLANNED', 'PREPARING', 'DISK_BULK', 'DISK_CATCHUP', 'MEM_PRECOPY'];

interface VmLike {
  vmId: string;
  state: string;
  serviceAddress: string;
}

describe('the switchover around the destination’s resume (two sites, real services)', () => {
  let bed: LocalBed;
  let nc: NatsConnection;
  let prober: GuestProber | undefined;

  beforeAll(async () => {
    // Site A's switchover holds long enough for an orchestrator to start again.
    bed = await LocalBed.start({
      delayMs: 10,
      bandwidthBps: 200e6,
      orchestrator: true,
      orchestratorEnv: { [Site.A]: { WANMIG_SWITCHOVER_HOLD_MS: '60000' } },
    });
    nc = await connect({ servers: bed.sites.a.url });
  }, 120_000);

  afterAll(async () => {
    prober?.stop();
    await nc?.close();
    await bed?.stop();
  });

  async function stuckEvents(migrationId: string): Promise<StuckData[]> {
    const events = await apiOk<CloudEvent[]>(nc, Site.A, 'migration.events', { migrationId });
    return events.filter((e) => e.type === 'io.wanmig.migration.stuck').map((e) => e.data as StuckData);
  }

  it("ACTIVATE's adopt failing for a while: stuck events, abort refused, then COMMITTED with B's work kept", async () => {
    const vm = await apiOk<VmLike>(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'forward', ramBytes: 64 * MIB, diskBytes: 64 * MIB, workload: 'db', seed: 9 },
      120_000,
    );
    prober = new GuestProber(vm.serviceAddress, 5, 120);
    prober.start();
    await waitUntil(() => prober!.around(0).answersAfter >= 10, { timeoutMs: 10_000, what: 'the source answered' });

    const created = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId: 'forward', toSite: Site.B });
    // The pre-flight asked B's orchestrator; from here until ACTIVATE nothing needs it.
    await bed.stack(Site.B).orchestrator.stop();
    const early = await apiOk<MigrationLike>(nc, Site.A, 'migration.get', { migrationId: created.id });
    expect(BEFORE_THE_PAUSE, 'B’s orchestrator must be away before the pause').toContain(early.phase);

    await waitUntil(async () => (await stuckEvents(created.id)).length >= 3, {
      timeoutMs: 120_000,
      intervalMs: 250,
      what: 'three stuck events',
    });
    const stuckNow = await apiOk<MigrationLike>(nc, Site.A, 'migration.get', { migrationId: created.id });
    expect(stuckNow.phase).toBe('ACTIVATE');
    expect(stuckNow.history.map((h) => h.phase)).not.toContain('ROLLING_BACK');
    const abort = await apiCall(nc, Site.A, 'migration.abort', { migrationId: created.id });
    expect(abort).toMatchObject({ ok: false, code: 'CONFLICT' });
    expect(abort.ok ? '' : abort.message).toMatch(/point of no return/);

    // Meanwhile the VM runs at B: the client follows it there and it counts on from where it paused.
    const atB = stuckNow.figures!.serviceAddress as string;
    prober.switchTo(atB);
    const s1 = await guestState(atB);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const s2 = await guestState(atB);
    expect(s2.counter).toBeGreaterThan(s1.counter);
    expect(s2.diskWrites).toBeGreaterThan(s1.diskWrites);

    await bed.crashAndRestartOrchestrator(Site.B);
    const done = await waitMigration(nc, Site.A, created.id, isFinished, 120_000);
    expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
    expect(done.history.map((h) => h.phase)).not.toContain('ROLLING_BACK');

    const stuck = await stuckEvents(created.id);
    expect(stuck.length).toBeGreaterThanOrEqual(3);
    expect(stuck.every((d) => d.phase === 'ACTIVATE' && d.error.code === 'UNAVAILABLE')).toBe(true);
    expect(stuck.map((d) => d.attempt)).toEqual(stuck.map((_, i) => i + 1));
    expect(stuck.slice(0, 3).map((d) => d.nextRetryMs)).toEqual([500, 1000, 2000]);

    // The same guest at B, its counter and disk writes carried on: nothing it did was undone.
    const s3 = await guestState(atB);
    expect(s3.uptimeMs).toBeGreaterThan(s2.uptimeMs);
    expect(s3.counter).toBeGreaterThan(s2.counter);
    expect(s3.diskWrites).toBeGreaterThan(s2.diskWrites);
    expect(s3.diskErrors).toBe(0);
    await waitUntil(() => prober!.answersAfterSwitch >= 20, { timeoutMs: 10_000, what: 'answers at B' });
    const report = prober.stop();
    expect(report.counterWentBack).toBe(false);
    expect(report.firstCounterAfter).toBeGreaterThanOrEqual(report.lastCounterBefore);
    expect(await apiOk<VmLike>(nc, Site.B, 'vm.get', { vmId: 'forward' })).toMatchObject({ state: 'running' });
    expect(await apiCall(nc, Site.A, 'vm.get', { vmId: 'forward' })).toMatchObject({ ok: false, code: 'NOT_FOUND' });
  }, 300_000);

  it('an orchestrator killed in pre-copy, started again while the guest is held: it gives the go, COMMITTED', async () => {
    await apiOk<VmLike>(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'held', ramBytes: 64 * MIB, diskBytes: 64 * MIB, workload: 'web', seed: 10 },
      120_000,
    );
    const created = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId: 'held', toSite: Site.B });
    let memoryPhase = '';
    const memoryEvents = nc.subscribe(Subjects.memoryEvents(created.id), {
      callback: (_err, msg) => {
        const event = msg.json<{ type: string; phase?: string }>();
        if (event.type === 'progress' && event.phase) memoryPhase = event.phase;
      },
    });
    try {
      // memory-precopy runs the pre-copy on its own: the orchestrator goes away once it has started it.
      await waitUntil(() => memoryPhase === 'precopy', { timeoutMs: 120_000, intervalMs: 5, what: 'pre-copy' });
      await bed.stack(Site.A).orchestrator.kill9();
      await waitUntil(() => memoryPhase === 'holding', { timeoutMs: 120_000, intervalMs: 20, what: 'the hold' });
      // Held: the guest paused at A, everything checked at B, nothing running there.
      const source = await new SimDriver({ runtimeDir: bed.runtimeDirA }).attach('held');
      expect((await source.describe()).state).toBe('paused');
      await source.detach?.();
      const atB = await callControl<MemoryStatusReply>(
        nc,
        controlSubject(Site.B, ServiceName.DeltaApply, MemoryVerb.Status),
        { migrationId: created.id },
      );
      expect(atB).toMatchObject({ finished: true, running: false });
      await new Promise((resolve) => setTimeout(resolve, 1000));

      await bed.crashAndRestartOrchestrator(Site.A);
      const done = await waitMigration(nc, Site.A, created.id, isFinished, 120_000);
      expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
      expect(done.history.map((h) => h.phase)).not.toContain('ROLLING_BACK');
      const figures = done.figures as { holdMs: number; downtimeMs: number; serviceAddress: string };
      // Held through the orchestrator's absence (a second here, then its start).
      expect(figures.holdMs).toBeGreaterThanOrEqual(1000);
      expect(figures.downtimeMs).toBeGreaterThan(figures.holdMs);
      const s1 = await guestState(figures.serviceAddress);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect((await guestState(figures.serviceAddress)).counter).toBeGreaterThan(s1.counter);
    } finally {
      memoryEvents.unsubscribe();
    }
  }, 300_000);
});
