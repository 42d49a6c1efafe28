import { randomUUID } from 'node:crypto';
import { access, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient, type QmpStatus } from '@wanmig/hypervisor';
import { callControl, controlSubject, DiskTransferVerb, DiskVerb, ErrorCode, ServiceName } from '@wanmig/protocol';
import {
  bootGuest,
  ensureGuestImage,
  LocalBed,
  queryGuestCounter,
  readGuestDiskCounter,
  Site,
  sleep,
  trackDir,
  untrackDir,
  waitUntil,
  type GuestHandle,
  type GuestImage,
} from '@wanmig/testing';
import {
  QemuMigrationInterruptedError,
  QemuMigrationStage,
  QemuVmMigrationError,
  runWanmigQemuMigration,
  type QemuWanmigResult,
} from '../../apps/cli/src/qemu/qemu-migration.runner.js';

// The first guest build debootstraps Debian; later runs find it cached.
const BUILD_TIMEOUT_MS = 15 * 60_000;
const BOOT_TIMEOUT_MS = 120_000;
const MIGRATION_TEST_TIMEOUT_MS = 240_000;
const WORKLOAD_MS = 4_000;
const MiB = 2 ** 20;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/** Asks the guest through QMP (the runner has closed its own connection: QEMU serves one client at a time). */
async function runState(qmpSocket: string): Promise<string> {
  const qmp = await QmpClient.connect(qmpSocket);
  try {
    return (await qmp.execute<QmpStatus>('query-status')).status;
  } finally {
    await qmp.close();
  }
}

/**
 * Issue 6, acceptance 1: a running QEMU guest (TCG, 256 MiB, a 2 GiB disk it keeps writing) moves from site A to
 * site B through wanmig's pieces — disk through disk-transfer (QEMU's write-blocking mirror into a mirror-target
 * export) and delta-apply, RAM and devices through QEMU's own stream relayed over NATS — across the WAN emulator.
 */
describe('qemu driver: a whole VM migrates through wanmig across the WAN (two-site bed)', () => {
  let image: GuestImage;
  let bed: LocalBed | undefined;
  let dir: string | undefined;
  const guests: Array<{ stop(): Promise<void> }> = [];

  const bootSource = async (label: string): Promise<GuestHandle> => {
    await mkdir(join(dir!, label), { recursive: true });
    const guest = await bootGuest({
      disk: image.disk,
      diskMode: 'copy',
      workDir: join(dir!, label),
      qmpSocket: join(dir!, `${label}.qmp`),
      ramMiB: 256,
      accel: 'tcg',
      readyTimeoutMs: BOOT_TIMEOUT_MS,
    });
    guests.push(guest);
    console.log(`[${label}] guest pid ${guest.pid} ready after ${guest.readyAfterMs} ms, port ${guest.servicePort}`);
    return guest;
  };

  beforeAll(async () => {
    image = await ensureGuestImage();
    bed = await LocalBed.start({ delayMs: 20, bandwidthBps: 200e6, memory: true });
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qemu-vm-'));
    trackDir(dir);
  }, BUILD_TIMEOUT_MS);

  afterEach(async () => {
    for (const guest of guests.splice(0)) await guest.stop();
  }, 30_000);

  afterAll(async () => {
    await bed?.stop();
    if (dir) {
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
  }, 60_000);

  it(
    'moves the running guest: it runs at B and counts on, its disk equalled the source at pause (sha256)',
    async () => {
      const source = await bootSource('plain');
      await sleep(WORKLOAD_MS);
      const before = await queryGuestCounter(source.servicePort);

      const r: QemuWanmigResult = await runWanmigQemuMigration(bed!, source, {
        verifyDiskInPause: true,
        verifyRamInPause: true,
        log: (line) => console.log(line),
      });
      guests.push(r.destination);
      report(r);

      // The destination runs, and the guest's in-memory counter went on from where the source left it.
      expect(r.warnings).toEqual([]);
      expect(await runState(r.destination.qmpSocket)).toBe('running');
      expect(r.probe.lastSourceCounter).toBeGreaterThan(before);
      const atB = await queryGuestCounter(r.destination.servicePort);
      expect(atB).toBeGreaterThan(r.probe.lastSourceCounter!);
      // The first answer at B continues A's count (the counter ticks every 100 ms of guest time: it may not have yet).
      expect(r.probe.firstDestinationCounter).toBeGreaterThanOrEqual(r.probe.lastSourceCounter!);
      expect(r.probe.firstDestinationCounter).toBeLessThanOrEqual(r.probe.lastSourceCounter! + 5);
      expect(r.probe.counterWentBack).toBe(false);
      const later = await waitUntil(
        async () => {
          const counter = await queryGuestCounter(r.destination.servicePort);
          return counter > atB ? counter : undefined;
        },
        { what: 'the counter at B to advance', timeoutMs: 10_000, intervalMs: 200 },
      );
      expect(later).toBeGreaterThan(atB);

      // Before the destination ran, its RAM was the source's, byte for byte (through the zstd stream).
      expect(r.ramAtPause).toMatchObject({ equal: true, bytes: 256 * MiB });

      // At pause, after the final drain, the destination image equalled the source disk.
      expect(r.diskEqualAtPause).toBe(true);
      expect(r.disk.report.verified).toBe(true);
      expect(r.diskAtPause!.destinationCounter).toBeGreaterThanOrEqual(r.diskAtPause!.sourceCounter!);
      // ... and the guest at B goes on writing it.
      const onDisk = await waitUntil(
        async () => {
          const counter = await readGuestDiskCounter(r.destPath);
          return counter > r.diskAtPause!.sourceCounter! ? counter : undefined;
        },
        { what: 'the guest at B to write its disk', timeoutMs: 15_000, intervalMs: 500 },
      );
      expect(onDisk).toBeGreaterThan(r.diskAtPause!.sourceCounter!);

      // The source is done with: postmigrate when the guest ran at B, then stopped.
      expect(r.sourceStatusAfter).toBe('postmigrate');
      expect(r.sourceStopped).toBe(true);
      expect(alive(source.pid)).toBe(false);

      // Bytes crossed the WAN: at least the frames of both streams.
      expect(r.disk.report.frameBytesSent).toBeGreaterThan(0);
      expect(r.memory.relay.frameBytes).toBeGreaterThan(0);
      expect(r.wan.aToB).toBeGreaterThanOrEqual(r.disk.report.frameBytesSent + r.memory.senderBytes);
      expect(r.memory.sink.bytesWritten).toBe(r.memory.relay.qemuBytes);
      // QEMU's own figures are read once it has computed them (not zeros read right after `completed`).
      expect(r.qemu.downtimeMs).toBeGreaterThan(0);
      expect(r.qemu.totalTimeMs).toBeGreaterThanOrEqual(r.qemu.downtimeMs!);
    },
    MIGRATION_TEST_TIMEOUT_MS,
  );

  it(
    'switches to post-copy when pre-copy takes too long: the guest runs at B while its pages arrive or are asked for',
    async () => {
      const source = await bootSource('postcopy');
      await sleep(WORKLOAD_MS / 2);
      // Half a second of pre-copy, far from converged: post-copy moves the rest with the guest running at B.
      const r = await runWanmigQemuMigration(bed!, source, {
        verifyDiskInPause: true,
        steering: { postcopyAfterMs: 500, autoConverge: false },
        log: (line) => console.log(line),
      });
      guests.push(r.destination);
      report(r);
      expect(r.postcopy).toBe(true);
      expect(r.warnings).toEqual([]);
      expect(await runState(r.destination.qmpSocket)).toBe('running');
      // The destination QEMU spoke back through the relayed return path, and the source QEMU heard it.
      expect(r.memory.sink.returnBytes).toBeGreaterThan(0);
      expect(r.memory.relay.returnBytes).toBe(r.memory.sink.returnBytes);
      expect(r.memory.sink.bytesWritten).toBe(r.memory.relay.qemuBytes);
      // Its RAM arrived whole: the counter went on from the source's, and keeps going.
      expect(r.probe.counterWentBack).toBe(false);
      expect(r.probe.firstDestinationCounter).toBeGreaterThanOrEqual(r.probe.lastSourceCounter!);
      const atB = await queryGuestCounter(r.destination.servicePort);
      const later = await waitUntil(
        async () => {
          const counter = await queryGuestCounter(r.destination.servicePort);
          return counter > atB ? counter : undefined;
        },
        { what: 'the counter at B to advance', timeoutMs: 10_000, intervalMs: 200 },
      );
      expect(later).toBeGreaterThan(atB);
      expect(r.diskEqualAtPause).toBe(true);
      expect(r.sourceStatusAfter).toBe('postmigrate');
    },
    MIGRATION_TEST_TIMEOUT_MS,
  );

  it(
    'a destination QEMU killed during the memory stream fails the migration; the source runs on, nothing is left at B',
    async () => {
      const source = await bootSource('killed');
      await sleep(WORKLOAD_MS / 2);
      const migrationId = randomUUID();
      let killedPid: number | undefined;
      let killing: Promise<void> | undefined;
      const err = await runWanmigQemuMigration(bed!, source, {
        migrationId,
        log: (line) => console.log(line),
        onStage: (view) => {
          if (view.stage !== QemuMigrationStage.MemoryPrecopy) return;
          killing = waitUntil(() => view.memoryBytes() >= 8 * MiB, {
            what: 'QEMU to stream 8 MiB',
            timeoutMs: 60_000,
            intervalMs: 5,
          }).then(() => {
            killedPid = view.destination!.pid;
            process.kill(killedPid, 'SIGKILL');
          });
        },
      }).catch((e: unknown) => e);
      await killing;

      expect(err).toBeInstanceOf(QemuVmMigrationError);
      const failure = err as QemuVmMigrationError;
      console.log(`failed as expected: ${failure.message}`);
      expect(failure).toMatchObject({ migrationId, stage: QemuMigrationStage.MemoryPrecopy, rolledBack: true });
      expect(failure.cleanupErrors).toEqual([]);
      expect(failure.cause).toBeInstanceOf(QemuMigrationInterruptedError);
      expect(['destination-qemu', 'memory-sink']).toContain((failure.cause as QemuMigrationInterruptedError).what);

      // The source guest runs on: QEMU says so and its counter advances.
      expect(await runState(source.qmpSocket!)).toBe('running');
      const c1 = await queryGuestCounter(source.servicePort);
      await sleep(1_000);
      expect(await queryGuestCounter(source.servicePort)).toBeGreaterThan(c1);

      // Nothing is left at B: no QEMU, no image, no receiving session; at A no export.
      expect(killedPid).toBeDefined();
      expect(alive(killedPid!)).toBe(false);
      const destDir = join(bed!.dir, Site.B, `qemu-${migrationId.slice(0, 8)}`);
      expect(await exists(destDir)).toBe(false);
      await expect(
        callControl(bed!.nc, controlSubject(Site.B, ServiceName.DeltaApply, DiskVerb.Status), { migrationId }),
      ).rejects.toMatchObject({ code: ErrorCode.NotFound });
      await expect(
        callControl(bed!.nc, controlSubject(Site.A, ServiceName.DiskTransfer, DiskTransferVerb.Unexport), {
          name: `qemu-${migrationId.slice(0, 8)}`,
        }),
      ).rejects.toMatchObject({ code: ErrorCode.NotFound });
    },
    MIGRATION_TEST_TIMEOUT_MS,
  );
});

function report(r: QemuWanmigResult): void {
  const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;
  const p = r.pause;
  console.log(
    [
      `migration ${r.migrationId}: total ${r.totalSeconds.toFixed(1)} s (disk held in step after ` +
        `${r.disk.holdingAfterSeconds.toFixed(1)} s)`,
      `pause as the client saw it ${r.clientPauseMs.toFixed(0)} ms (counter ${r.probe.lastSourceCounter} at A -> ` +
        `${r.probe.firstDestinationCounter} at B; ${r.probe.answers} answers, ${r.probe.misses} misses)`,
      `pause by step: mirror cancel ${p.mirrorCancelMs.toFixed(0)} ms, then finalize ${p.finalizeMs.toFixed(0)} ms ` +
        `beside completion ${p.completionMs.toFixed(0)} ms (both ${p.loadedMs.toFixed(0)} ms), sha256 check ` +
        `${p.verifyMs.toFixed(0)} ms, activate ${p.activateMs.toFixed(0)} ms; total ${p.totalMs.toFixed(0)} ms` +
        (r.postcopy ? ' (post-copy)' : ''),
      `QEMU: total-time ${r.qemu.totalTimeMs} ms, downtime ${r.qemu.downtimeMs} ms, setup ${r.qemu.setupTimeMs} ms, ` +
        `ram transferred ${mib(r.qemu.ramTransferred ?? 0)} of ${mib(r.qemu.ramTotal ?? 0)}, ` +
        `${r.qemu.dirtySyncCount} dirty syncs`,
      `WAN: ${mib(r.wan.aToB)} A->B, ${mib(r.wan.bToA)} B->A`,
      `disk: ${mib(r.disk.report.frameBytesSent)} of frames for ${mib(r.disk.report.rawBytesSent)} raw ` +
        `(final drain ${(r.disk.report.finalDrainBytes / 1024).toFixed(0)} KiB, writes frozen ` +
        `${r.disk.report.downtimeMs.toFixed(0)} ms, verify ${r.disk.report.verifyMs.toFixed(0)} ms)`,
      `memory: QEMU stream ${mib(r.memory.relay.qemuBytes)}, frame payloads ${mib(r.memory.relay.frameBytes)} ` +
        `(${r.memory.relay.frames} frames, ${r.memory.relay.compressedFrames} zstd), sender ${mib(r.memory.senderBytes)} ` +
        `(${mib(r.memory.resentBytes)} re-sent), window ${mib(r.memory.windowBytes)}, tail ${r.memory.relay.tailMs} ms`,
      `disk at pause: sha256 ${r.diskAtPause?.sourceSha256.slice(0, 16)}… equal ${r.diskEqualAtPause}; counter file ` +
        `${r.diskAtPause?.sourceCounter} at A, ${r.diskAtPause?.destinationCounter} at B`,
    ].join('\n'),
  );
}
