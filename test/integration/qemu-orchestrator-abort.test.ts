/**
 * A real QEMU VM's migration cut short, through the orchestrators' NATS API with a plain client only.
 *
 * Aborted in PREPARING, DISK_BULK, MEM_PRECOPY and STOP_AND_COPY (one VM, moved and rolled back four times): it ends
 * ROLLED_BACK, the source QEMU runs on (its in-memory counter keeps growing) and nothing of it stays at B (no VM, no
 * destination QEMU, no image). Then two VMs are moved for real with site A's orchestrator killed (-9) and started
 * again, in DISK_BULK and in MEM_PRECOPY: the move ends COMMITTED and verified, and the counter carries on at B.
 *
 * Each phase is aimed at by polling migration.get every few ms and aborting once it shows. STOP_AND_COPY has no
 * handle to hold it by (the go follows the hold at once, and nothing a test may stall lies between): it is made long
 * the way an operator would, with a downtime budget of 30 s for that move (QEMU gets a third of it: it stops
 * iterating with seconds of memory left on this 40 Mbit/s link), against an abort sent within milliseconds of the
 * phase showing.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { ensureGuestImage, LocalBed, queryGuestCounter, Site } from '@wanmig/testing';
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
const MOVE_TIMEOUT_MS = 300_000;
const CREATE_TIMEOUT_MS = 240_000;
/** How long the source's counter is given to move on once it runs again (it counts every 100 ms). */
const COUNTER_GAP_MS = 1000;
const TCG = QEMU_TCG_ENV;
/** A downtime budget that makes the pause seconds long on this link: STOP_AND_COPY is there to be aborted. */
const LONG_PAUSE_DOWNTIME_MS = 30_000;
/** Site A's switchover holds up to a minute for the go: an orchestrator killed in pre-copy has that long to return. */
const SOURCE_ENV = { ...TCG, WANMIG_SWITCHOVER_HOLD_MS: '60000' };
const PHASES = [
  'PLANNED',
  'PREPARING',
  'DISK_BULK',
  'DISK_CATCHUP',
  'MEM_PRECOPY',
  'STOP_AND_COPY',
  'REDIRECT',
  'ACTIVATE',
  'COMMITTED',
];

interface Progress {
  phase: string;
  bulkBytes?: number;
  rawBytesSent: number;
}

/** The phase shows, or the migration went past it (the caller's expectation then says which it was). */
const reached = (phase: string) => (m: MigrationLike) =>
  isFinished(m) || PHASES.indexOf(m.phase) >= PHASES.indexOf(phase);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** qemu-system processes whose command line names `dir` (a destination QEMU keeps its sockets there). */
async function qemuProcessesUnder(dir: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('qemu-system') && cmdline.includes(dir)) found.push(Number(name));
  }
  return found;
}

describe('a QEMU VM’s migration aborted, and its orchestrator killed (two sites, real services, real QEMU)', () => {
  let bed: LocalBed;
  let nc: NatsConnection;

  beforeAll(async () => {
    await ensureGuestImage();
    // A few tens of Mbit/s: the disk's bulk copy and the memory's pre-copy last long enough to abort in.
    bed = await LocalBed.start({
      delayMs: 20,
      bandwidthBps: 40e6,
      orchestrator: true,
      orchestratorEnv: { [Site.A]: SOURCE_ENV, [Site.B]: TCG },
    });
    nc = await connect({ servers: bed.sites.a.url });
    const vm = await apiOk<VmLike>(
      nc,
      Site.A,
      'vm.create',
      { vmId: 'qab', driver: 'qemu', guest: 'test', ramBytes: 256 * MIB },
      CREATE_TIMEOUT_MS,
    );
    expect(vm).toMatchObject({ site: Site.A, state: 'running' });
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    await nc?.close();
    await bed?.stop();
  });

  /** A request to a data-plane service, plain JSON as any client may send it. */
  async function service<T>(site: Site, name: string, verb: string, body: unknown): Promise<T> {
    const msg = await nc.request(`wanmig.v1.${site}.${name}.${verb}`, JSON.stringify(body), { timeout: 10_000 });
    const reply = msg.json<{ response?: T; err?: { code: string; message: string } }>();
    if (reply.err) throw Object.assign(new Error(reply.err.message), { code: reply.err.code });
    return reply.response as T;
  }

  /** The engine of `phase` at work (not merely asked to start), where there is one to look at. */
  async function engineAtWork(phase: string, migrationId: string): Promise<boolean> {
    const ref = { migrationId };
    if (phase === 'DISK_BULK') {
      const p = await service<Progress>(Site.A, 'disk-transfer', 'disk.progress', ref).catch(() => undefined);
      return (p?.bulkBytes ?? 0) > 0;
    }
    if (phase === 'MEM_PRECOPY') {
      const p = await service<Progress>(Site.A, 'memory-precopy', 'mem.progress', ref).catch(() => undefined);
      return (p?.rawBytesSent ?? 0) > 0;
    }
    return true;
  }

  /** Waits for the migration to show `phase` with its engine at work; fails if it went past first. */
  async function untilInPhase(migrationId: string, phase: string, pollMs: number): Promise<void> {
    const seen = await waitMigration(nc, Site.A, migrationId, reached(phase), MOVE_TIMEOUT_MS, pollMs);
    expect(seen.phase, 'the phase aimed at shows').toBe(phase);
    while (!(await engineAtWork(phase, migrationId))) {
      const now = await apiOk<MigrationLike>(nc, Site.A, 'migration.get', { migrationId });
      expect(now.phase, `${phase} ended before its engine was seen at work`).toBe(phase);
      await sleep(pollMs);
    }
  }

  /** What the migration left at B: nothing, when it rolled back. */
  async function leftoversAtB(m: MigrationLike & { destination?: { diskPath?: string } }): Promise<string[]> {
    const found: string[] = [];
    const { vms } = await apiOk<{ vms: VmLike[] }>(nc, Site.B, 'vm.list', {});
    if (vms.length > 0) found.push(`vm.list: ${JSON.stringify(vms)}`);
    const runDir = join(bed.runtimeDirB, 'qemu', m.id);
    if (await stat(runDir).catch(() => undefined)) found.push(`run dir ${runDir}`);
    const pids = await qemuProcessesUnder(runDir);
    if (pids.length > 0) found.push(`qemu-system running from ${runDir}: ${pids.join(', ')}`);
    const disk = await service(Site.B, 'delta-apply', 'disk.status', { migrationId: m.id }).then(
      (status) => `disk.status: ${JSON.stringify(status)}`,
      (err: { code?: string; message: string }) => (err.code === 'NOT_FOUND' ? undefined : err.message),
    );
    if (disk) found.push(disk);
    const image = m.destination?.diskPath;
    if (image && (await stat(image).catch(() => undefined))) found.push(`image ${image}`);
    const data = await readdir(join(bed.dir, Site.B, 'data')).catch(() => [] as string[]);
    found.push(...data.filter((name) => name.includes(m.id)).map((name) => `data/${name}`));
    return found;
  }

  for (const phase of ['PREPARING', 'DISK_BULK', 'MEM_PRECOPY', 'STOP_AND_COPY']) {
    it(
      `aborted in ${phase}: ROLLED_BACK, the source runs on, nothing left at B`,
      async () => {
        const vm = await apiOk<VmLike>(nc, Site.A, 'vm.get', { vmId: 'qab' });
        const before = await queryGuestCounter(portOf(vm.serviceAddress));
        const created = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', {
          vmId: 'qab',
          toSite: Site.B,
          verify: true,
          ...(phase === 'STOP_AND_COPY' ? { downtimeMs: LONG_PAUSE_DOWNTIME_MS } : {}),
        });
        await untilInPhase(created.id, phase, 5);
        const abort = await apiCall<MigrationLike>(nc, Site.A, 'migration.abort', { migrationId: created.id });
        expect(abort, 'the abort is accepted').toMatchObject({ ok: true });
        const end = await waitMigration(nc, Site.A, created.id, isFinished, MOVE_TIMEOUT_MS);
        expect(end.phase, JSON.stringify(end.error)).toBe('ROLLED_BACK');
        expect(end.history.map((h) => h.phase).slice(-3)).toEqual([phase, 'ROLLING_BACK', 'ROLLED_BACK']);

        // The source QEMU runs, no longer moving, and counts on from where it was.
        const source = await apiOk<VmLike>(nc, Site.A, 'vm.get', { vmId: 'qab' });
        expect(source).toMatchObject({ site: Site.A, state: 'running' });
        expect(source.migrationId).toBeUndefined();
        const c1 = await queryGuestCounter(portOf(source.serviceAddress));
        await sleep(COUNTER_GAP_MS);
        const c2 = await queryGuestCounter(portOf(source.serviceAddress));
        expect(c1).toBeGreaterThan(before);
        expect(c2).toBeGreaterThan(c1);
        expect(await leftoversAtB(end)).toEqual([]);
      },
      MOVE_TIMEOUT_MS + 60_000,
    );
  }

  /** Moves `vmId` A→B with site A's orchestrator killed in `phase` (its engine at work): COMMITTED and verified. */
  async function moveThroughCrash(vmId: string, phase: string) {
    const vm = await apiOk<VmLike>(nc, Site.A, 'vm.get', { vmId });
    const before = await queryGuestCounter(portOf(vm.serviceAddress));
    const created = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', { vmId, toSite: Site.B, verify: true });
    await untilInPhase(created.id, phase, 20);
    await bed.crashAndRestartOrchestrator(Site.A, 1000);

    const done = await waitMigration(nc, Site.A, created.id, isFinished, MOVE_TIMEOUT_MS);
    expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
    const phases = done.history.map((h) => h.phase);
    expect(phases).not.toContain('ROLLING_BACK');
    expect(phases.filter((p) => p === phase)).toHaveLength(1);
    const figures = done.figures as Record<string, unknown>;
    console.info(`[qemu-orchestrator-abort] crash in ${phase}: ${JSON.stringify(figures)}`);
    expect(figures.diskVerified, 'disk verified at pause').toBe(true);
    expect(figures.ramVerified, 'stream digests matched before the resume').toBe(true);

    const moved = await apiOk<VmLike>(nc, Site.B, 'vm.get', { vmId });
    expect(moved).toMatchObject({ site: Site.B, state: 'running' });
    expect(await apiCall(nc, Site.A, 'vm.get', { vmId })).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    const c1 = await queryGuestCounter(portOf(moved.serviceAddress));
    await sleep(COUNTER_GAP_MS);
    const c2 = await queryGuestCounter(portOf(moved.serviceAddress));
    expect(c1, 'the guest’s in-memory counter continues at B').toBeGreaterThan(before);
    expect(c2).toBeGreaterThan(c1);
  }

  it(
    'site A’s orchestrator killed in DISK_BULK and started again: COMMITTED, verified, the counter carries on',
    async () => {
      await moveThroughCrash('qab', 'DISK_BULK');
      await apiOk(nc, Site.B, 'vm.rm', { vmId: 'qab' }, 60_000);
    },
    MOVE_TIMEOUT_MS + 60_000,
  );

  it(
    'site A’s orchestrator killed in MEM_PRECOPY and started again: COMMITTED, verified, the counter carries on',
    async () => {
      await apiOk<VmLike>(
        nc,
        Site.A,
        'vm.create',
        { vmId: 'qcd', driver: 'qemu', guest: 'test', ramBytes: 256 * MIB },
        CREATE_TIMEOUT_MS,
      );
      await moveThroughCrash('qcd', 'MEM_PRECOPY');
      await apiOk(nc, Site.B, 'vm.rm', { vmId: 'qcd' }, 60_000);
    },
    CREATE_TIMEOUT_MS + MOVE_TIMEOUT_MS + 60_000,
  );
});
