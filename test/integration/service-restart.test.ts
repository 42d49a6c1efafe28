import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalBed, Site, type StackService } from '@wanmig/testing';
import { apiCall, apiOk, isFinished, waitMigration, type MigrationLike } from '../support/external.client.js';
import { askOnce, LineProber } from '../support/line.prober.js';

const MIB = 1024 * 1024;
const DISK_BYTES = 64 * MIB;
/** How long the killed service stays down before its supervisor starts it again. */
const RESTART_AFTER_MS = 2000;
/** Killed in DISK_BULK once this much is covered: the copy that resumes shows it does not start from zero. */
const BULK_AT_KILL = DISK_BYTES / 4;

type Phase = 'DISK_BULK' | 'MEM_PRECOPY';

interface Progress {
  phase: string;
  bulkBytes?: number;
  rawBytesSent: number;
}

/** An engine's own progress at site A, asked over NATS as any client may (undefined while it does not know it). */
async function engine(nc: NatsConnection, service: string, verb: string, migrationId: string) {
  try {
    const msg = await nc.request(`wanmig.v1.${Site.A}.${service}.${verb}`, JSON.stringify({ migrationId }), {
      timeout: 5000,
    });
    return msg.json<{ response?: Progress }>().response;
  } catch {
    return undefined;
  }
}

/** Clean-up that must not hide the test's own failure. */
async function apiCallQuiet(nc: NatsConnection, site: Site, verb: string, body: unknown): Promise<void> {
  await apiCall(nc, site, verb, body).catch(() => undefined);
}

interface GuestState {
  diskWrites: number;
  diskErrors: number;
  diskReconnects: number;
  diskReissued: number;
}

/**
 * kill -9 of each data-plane service where it serves the migration (disk-transfer and memory-precopy at the source,
 * delta-apply at the destination), in DISK_BULK and in MEM_PRECOPY, started again 2 s later with the same arguments
 * as a supervisor would: the migration goes on and ends COMMITTED and verified, never rolled back, and the source VM
 * answers its client throughout. The client talks to the guest's own service port: none of the killed services is on
 * its path, so it keeps its one connection and no reconnect is allowed. The guest's disk is an NBD client of
 * disk-transfer: when that one is killed the guest reconnects to it and sends again what was not answered, and its
 * disk I/O never fails.
 */
describe('a service killed and restarted mid-migration does not end it', () => {
  let bed: LocalBed;
  let nc: NatsConnection;
  /** What a disk-transfer restarted mid-migration said it must send again. */
  const resumed = new Map<string, { bytes: number; unsure: number }>();

  beforeAll(async () => {
    bed = await LocalBed.start({
      delayMs: 10,
      bandwidthBps: 40e6,
      orchestrator: true,
      log: (line: string) => {
        const m = /migration (\S+) resumed: (\d+) bytes to send again \((\d+) unsure/.exec(line);
        if (m) resumed.set(m[1], { bytes: Number(m[2]), unsure: Number(m[3]) });
        if (process.env.WANMIG_TEST_LOG) process.stderr.write(`${line}\n`);
      },
    });
    nc = await connect({ servers: bed.sites.a.url });
  }, 120_000);

  afterAll(async () => {
    await nc?.close();
    await bed?.stop();
  });

  const cases: Array<[StackService, Site, Phase]> = [
    ['diskTransfer', Site.A, 'DISK_BULK'],
    ['diskTransfer', Site.A, 'MEM_PRECOPY'],
    ['memoryPrecopy', Site.A, 'DISK_BULK'],
    ['memoryPrecopy', Site.A, 'MEM_PRECOPY'],
    ['deltaApply', Site.B, 'DISK_BULK'],
    ['deltaApply', Site.B, 'MEM_PRECOPY'],
  ];

  it.each(cases)(
    '%s at %s killed in %s',
    async (service, site, phase) => {
      const t0 = Date.now();
      const vmId = `k-${service}-${phase === 'DISK_BULK' ? 'bulk' : 'mem'}`;
      const vm = await apiOk<{ serviceAddress: string }>(
        nc,
        Site.A,
        'vm.create',
        { vmId, ramBytes: 64 * MIB, diskBytes: DISK_BYTES, workload: 'db' },
        60_000,
      );
      const prober = await LineProber.start(vm.serviceAddress);
      try {
        const m = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', {
          vmId,
          toSite: Site.B,
          serviceDeadlineMs: 60_000,
        });
        await waitMigration(nc, Site.A, m.id, (r) => r.phase === phase || isFinished(r), 120_000, 20);
        // Under way in that phase: the bulk pass has sent something, or pre-copy's first round has.
        for (;;) {
          const p =
            phase === 'DISK_BULK'
              ? await engine(nc, 'disk-transfer', 'disk.progress', m.id)
              : await engine(nc, 'memory-precopy', 'mem.progress', m.id);
          if (phase === 'DISK_BULK' ? (p?.bulkBytes ?? 0) >= BULK_AT_KILL : (p?.rawBytesSent ?? 0) > 0) break;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        const killedAt = Date.now();
        const atKill = await apiOk<MigrationLike>(nc, Site.A, 'migration.get', { migrationId: m.id });
        expect(atKill.phase).toBe(phase);
        await bed.crashAndRestart(site, service, RESTART_AFTER_MS);
        const readyAt = Date.now();

        let guest: GuestState | undefined;
        if (service === 'diskTransfer') {
          // The guest's disk went away with disk-transfer and came back: reconnected, nothing failed.
          for (let i = 0; i < 100 && !(guest && guest.diskReconnects > 0); i++) {
            guest = JSON.parse(await askOnce(vm.serviceAddress, 'STATE')) as GuestState;
            if (guest.diskReconnects === 0) await new Promise((resolve) => setTimeout(resolve, 100));
          }
          expect(guest).toMatchObject({ diskErrors: 0 });
          expect(guest!.diskReconnects).toBeGreaterThanOrEqual(1);
        }

        const done = await waitMigration(nc, Site.A, m.id, isFinished, 180_000);
        expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
        expect(done.figures).toMatchObject({ diskVerified: true, ramVerified: true, answersMatch: true });
        // Went on, never started again from an earlier phase, never rolled back.
        expect(done.history.map((h) => h.phase)).toEqual([
          'PLANNED',
          'PREPARING',
          'DISK_BULK',
          'DISK_CATCHUP',
          'MEM_PRECOPY',
          'STOP_AND_COPY',
          'REDIRECT',
          'ACTIVATE',
          'COMMITTED',
        ]);
        const moved = await apiOk<{ state: string }>(nc, Site.B, 'vm.get', { vmId });
        expect(moved.state).toBe('running');
        const resend = resumed.get(m.id);
        if (service === 'diskTransfer') {
          // Resumed from the destination's present map and the activity log, not from zero: in DISK_BULK what the
          // bulk pass had not covered (plus what was written meanwhile), in MEM_PRECOPY (holding in step) what the
          // guest wrote since the last checkpoint.
          expect(resend, 'disk-transfer logged no resume').toBeDefined();
          expect(resend!.bytes).toBeLessThan(phase === 'DISK_BULK' ? DISK_BYTES : DISK_BYTES / 2);
        }

        // The source answered its client throughout: on its one connection, while the service was away too, and
        // lost at most the request in flight when it paused.
        const pausedAt = done.figures!.pausedAt as number;
        prober.stop();
        expect(prober.malformed).toEqual([]);
        expect(prober.closedAt === undefined || prober.closedAt >= pausedAt).toBe(true);
        expect(prober.unanswered).toBeLessThanOrEqual(1);
        expect(prober.answersBetween(killedAt, readyAt).length).toBeGreaterThan(0);
        expect(prober.answersBetween(readyAt, pausedAt).length).toBeGreaterThan(0);
        expect(prober.counterIncreasing).toBe(true);
        process.stderr.write(
          `${service}@${site} killed in ${phase}: away ${readyAt - killedAt} ms, ` +
            `committed after ${((Date.now() - t0) / 1000).toFixed(1)} s, paused ${String(done.figures!.downtimeMs)} ms ` +
            `(disk finalize ${String(done.figures!.diskFinalizeMs)} ms, RAM check ${String(done.figures!.ramCheckMs)} ms), ` +
            `${prober.answers.length} answers (${prober.answersBetween(killedAt, readyAt).length} while away), ` +
            `longest silence before the pause ${prober.longestGapBefore(pausedAt)} ms` +
            (guest ? `, guest disk reconnects ${guest.diskReconnects}, re-sent ${guest.diskReissued}` : '') +
            (resend
              ? `, disk resumed sending ${resend.bytes} bytes (${resend.unsure} unsure in the activity log)`
              : '') +
            '\n',
        );
      } finally {
        prober.stop();
        // Lean: the next case does not share the CPU with this one's guest.
        for (const at of [Site.B, Site.A]) await apiCallQuiet(nc, at, 'vm.rm', { vmId });
      }
    },
    240_000,
  );

  it('a service that stays away past the service deadline ends the migration, naming it and for how long', async () => {
    const vmId = 'k-deadline';
    const vm = await apiOk<{ serviceAddress: string }>(
      nc,
      Site.A,
      'vm.create',
      { vmId, ramBytes: 64 * MIB, diskBytes: DISK_BYTES, workload: 'db' },
      60_000,
    );
    const prober = await LineProber.start(vm.serviceAddress);
    try {
      const m = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', {
        vmId,
        toSite: Site.B,
        serviceDeadlineMs: 3000,
      });
      await waitMigration(nc, Site.A, m.id, (r) => r.phase === 'DISK_BULK' || isFinished(r), 120_000, 20);
      // Killed, and its supervisor does not bring it back within the deadline.
      await bed.crash(Site.A, 'memoryPrecopy');
      try {
        await waitMigration(nc, Site.A, m.id, (r) => r.phase === 'ROLLING_BACK' || isFinished(r), 120_000, 50);
      } finally {
        // The rollback asks it to stop the migration it may still run: it waits for it too.
        await bed.restart(Site.A, 'memoryPrecopy');
      }
      const done = await waitMigration(nc, Site.A, m.id, isFinished, 120_000);
      expect(done.phase).toBe('ROLLED_BACK');
      expect(done.error?.code).toBe('UNAVAILABLE');
      expect(done.error?.message).toMatch(
        /^memory-precopy at site-a did not answer for \d+\.\d s \(service deadline 3 s\)$/,
      );
      const source = await apiOk<{ state: string }>(nc, Site.A, 'vm.get', { vmId });
      expect(source.state).toBe('running');
      prober.stop();
      expect(prober.closedAt).toBeUndefined();
      expect(prober.unanswered).toBeLessThanOrEqual(1);
      expect(prober.counterIncreasing).toBe(true);
      process.stderr.write(`deadline: ${done.error!.message}\n`);
    } finally {
      prober.stop();
      await apiCallQuiet(nc, Site.A, 'vm.rm', { vmId });
    }
  }, 240_000);
});
