import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureRunning, QmpClient } from '@wanmig/hypervisor';
import { MigrationVerb, VmVerb, type MigrationView, type VmView } from '@wanmig/protocol';
import { bootGuest, ensureGuestImage, LocalBed, Site, trackDir, untrackDir, type GuestHandle } from '@wanmig/testing';
import { OrchestratorClient } from '../api/orchestrator.client.js';
import { followMigration } from '../commands/migration.follower.js';
import { runWanmigQemuMigration } from '../qemu/qemu-migration.runner.js';
import { startCpuBurners } from './cpu.burners.js';

export const IntegrityDriver = { Sim: 'sim', Qemu: 'qemu' } as const;
export type IntegrityDriver = (typeof IntegrityDriver)[keyof typeof IntegrityDriver];

export interface IntegrityBenchOptions {
  driver: IntegrityDriver;
  runs: number;
  burners: number;
  ramBytes: number;
  /** The sim guest's disk (a QEMU guest has the test image's). */
  diskBytes: number;
  delayMs: number;
  bandwidthBps: number;
}

export const DEFAULT_INTEGRITY_OPTIONS: Omit<IntegrityBenchOptions, 'driver'> = {
  runs: 10,
  burners: 2,
  ramBytes: 128 * 2 ** 20,
  diskBytes: 128 * 2 ** 20,
  delayMs: 20,
  bandwidthBps: 400e6,
};

/** What a comparison found: the same bytes at both ends, different bytes, or no comparison made (the move failed). */
export const Check = { Equal: 'equal', Differs: 'differs', Unchecked: 'unchecked' } as const;
export type Check = (typeof Check)[keyof typeof Check];

export interface IntegrityRun {
  run: number;
  from: string;
  to: string;
  migrationId: string;
  /** The guest runs at `to` (sim: COMMITTED). */
  moved: boolean;
  ram: Check;
  disk: Check;
  seconds: number;
  error?: string;
}

export interface IntegrityBenchResult {
  driver: IntegrityDriver;
  options: IntegrityBenchOptions;
  /** How each end was compared, in words. */
  method: string;
  runs: IntegrityRun[];
  moved: number;
  ramMismatches: number;
  diskMismatches: number;
  /** Moves where RAM or disk differed (a move with both counts once). */
  mismatches: number;
}

/**
 * Moves one guest again and again with `burners` CPU burners beside it, each time comparing its RAM and disk at the
 * source at pause with the destination's before it runs. The embedded guest goes back and forth through the
 * orchestrators (migration.create with verify: the source hashes its RAM file and disk regions at pause, the
 * destination its own before it resumes, and a difference refuses the resume). A QEMU guest moves from site A to B
 * through the QEMU runner, its RAM dumped at both ends (`pmemsave`) and both images hashed in the pause; the copy at
 * B is then stopped and the source resumed for the next run (the runner moves from A to B only, until the
 * orchestrator drives QEMU VMs).
 */
export async function runIntegrityBench(
  o: IntegrityBenchOptions,
  log: (line: string) => void,
): Promise<IntegrityBenchResult> {
  const burners = startCpuBurners(o.burners);
  log(`bench integrity: ${o.driver} guest, ${o.runs} moves, ${burners.count} CPU burners beside them`);
  try {
    const runs = o.driver === IntegrityDriver.Sim ? await simRuns(o, log) : await qemuRuns(o, log);
    const ramMismatches = runs.filter((r) => r.ram === Check.Differs).length;
    const diskMismatches = runs.filter((r) => r.disk === Check.Differs).length;
    return {
      driver: o.driver,
      options: o,
      method:
        o.driver === IntegrityDriver.Sim
          ? 'sha256 of the RAM file and of each disk region, at the source at pause and at the destination before it runs'
          : 'pmemsave of all RAM at both ends with both stopped, and sha256 of both disk images, before the destination runs',
      runs,
      moved: runs.filter((r) => r.moved).length,
      ramMismatches,
      diskMismatches,
      mismatches: runs.filter((r) => r.ram === Check.Differs || r.disk === Check.Differs).length,
    };
  } finally {
    burners.stop();
  }
}

/** The bench's verdict: every move made, nothing differed. */
export function integrityHolds(r: IntegrityBenchResult): boolean {
  return r.moved === r.options.runs && r.mismatches === 0 && r.runs.every((run) => run.ram === Check.Equal);
}

async function simRuns(o: IntegrityBenchOptions, log: (line: string) => void): Promise<IntegrityRun[]> {
  const bed = await LocalBed.start({ delayMs: o.delayMs, bandwidthBps: o.bandwidthBps, orchestrator: true });
  const client = await OrchestratorClient.connect({ nats: bed.sites.a.url });
  const vmId = 'integrity';
  const runs: IntegrityRun[] = [];
  try {
    await client.call<VmView>(
      Site.A,
      VmVerb.Create,
      { vmId, ramBytes: o.ramBytes, diskBytes: o.diskBytes, workload: 'db', seed: 7 },
      120_000,
    );
    let at: string = Site.A;
    for (let run = 1; run <= o.runs; run++) {
      const to = at === Site.A ? Site.B : Site.A;
      const t0 = performance.now();
      let m: MigrationView | undefined;
      let error: string | undefined;
      try {
        const created = await client.call<MigrationView>(at, MigrationVerb.Create, { vmId, toSite: to, verify: true });
        m = await followMigration(client, at, created.id, { log: () => undefined, timeoutMs: 10 * 60_000 });
        if (m.error) error = `${m.error.code}: ${m.error.message}`;
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
      }
      const f = m?.figures ?? {};
      const moved = m?.phase === 'COMMITTED';
      const result: IntegrityRun = {
        run,
        from: at,
        to,
        migrationId: m?.id ?? '',
        moved,
        ram: f.ramVerified === true ? Check.Equal : /RAM .*differs/.test(error ?? '') ? Check.Differs : Check.Unchecked,
        disk:
          f.diskVerified === true ? Check.Equal : /image differs/.test(error ?? '') ? Check.Differs : Check.Unchecked,
        seconds: (performance.now() - t0) / 1000,
        ...(error ? { error } : {}),
      };
      if (moved && f.answersMatch !== true) result.error = 'the guest answered differently at the destination';
      runs.push(result);
      log(formatRun(result));
      if (moved) at = to;
    }
    return runs;
  } finally {
    await client.close();
    await bed.stop();
  }
}

async function qemuRuns(o: IntegrityBenchOptions, log: (line: string) => void): Promise<IntegrityRun[]> {
  const image = await ensureGuestImage({ log });
  const dir = await mkdtemp(join(tmpdir(), 'wanmig-integrity-'));
  trackDir(dir);
  const bed = await LocalBed.start({ delayMs: o.delayMs, bandwidthBps: o.bandwidthBps, memory: true });
  let source: GuestHandle | undefined;
  let qmp: QmpClient | undefined;
  const runs: IntegrityRun[] = [];
  try {
    await mkdir(join(dir, 'source'));
    const ramMiB = Math.round(o.ramBytes / 2 ** 20);
    source = await bootGuest({
      disk: image.disk,
      workDir: join(dir, 'source'),
      qmpSocket: join(dir, 'source.qmp'),
      ramMiB,
    });
    log(`source guest ready after ${source.readyAfterMs} ms (${ramMiB} MiB, TCG)`);
    qmp = await QmpClient.connect(source.qmpSocket!);
    for (let run = 1; run <= o.runs; run++) {
      const t0 = performance.now();
      let result: IntegrityRun;
      try {
        const r = await runWanmigQemuMigration(bed, source, {
          sourceQmp: qmp,
          verifyRamInPause: true,
          verifyDiskInPause: true,
          stopSource: false,
        });
        await r.destination.stop();
        result = {
          run,
          from: Site.A,
          to: Site.B,
          migrationId: r.migrationId,
          moved: true,
          ram: r.ramAtPause ? (r.ramAtPause.equal ? Check.Equal : Check.Differs) : Check.Unchecked,
          disk: r.diskEqualAtPause === undefined ? Check.Unchecked : r.diskEqualAtPause ? Check.Equal : Check.Differs,
          seconds: (performance.now() - t0) / 1000,
        };
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err);
        // A stream whose digest differed is a mismatch caught before the destination ran: counted, not hidden.
        const streamDiffered = /DIGEST_MISMATCH|migration stream differs/.test(error);
        result = {
          run,
          from: Site.A,
          to: Site.B,
          migrationId: '',
          moved: false,
          ram: streamDiffered ? Check.Differs : Check.Unchecked,
          disk: Check.Unchecked,
          seconds: (performance.now() - t0) / 1000,
          error,
        };
      }
      runs.push(result);
      log(formatRun(result));
      // The next move starts from the same guest: it runs on at A (the copy at B is gone).
      await ensureRunning(qmp, 30_000);
    }
    return runs;
  } finally {
    await qmp?.close();
    await source?.stop();
    await bed.stop();
    await rm(dir, { recursive: true, force: true });
    untrackDir(dir);
  }
}

function formatRun(r: IntegrityRun): string {
  return (
    `run ${String(r.run).padStart(2)}: ${r.from} → ${r.to} ${r.moved ? 'moved' : 'NOT MOVED'} in ` +
    `${r.seconds.toFixed(1)} s; RAM ${r.ram}, disk ${r.disk}${r.error ? `; ${r.error}` : ''}`
  );
}

export function formatIntegrityBench(r: IntegrityBenchResult): string {
  return [
    `bench integrity (${r.driver}): ${r.moved} of ${r.options.runs} moves made with ${r.options.burners} CPU burners; ` +
      `${r.ramMismatches} RAM and ${r.diskMismatches} disk mismatches`,
    `compared: ${r.method}`,
    integrityHolds(r) ? 'every move exact' : 'NOT every move exact',
  ].join('\n');
}
