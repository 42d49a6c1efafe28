import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient, startDiskMirror, type DiskMirror } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DiskTransferVerb,
  ServiceName,
  type DiskMigrationReport,
  type DiskProgress,
  type ExportDiskReply,
} from '@wanmig/protocol';
import {
  bootGuest,
  ensureGuestImage,
  GUEST_DISK_NODE,
  LocalBed,
  readGuestDiskCounter,
  sha256File,
  Site,
  sleep,
  trackDir,
  untrackDir,
  waitUntil,
  type GuestHandle,
} from '@wanmig/testing';

// The first guest build debootstraps Debian; later runs find it cached.
const BUILD_TIMEOUT_MS = 15 * 60_000;
const BOOT_TIMEOUT_MS = 120_000;
/** The bulk reads the whole 2 GiB image (mostly holes) while a TCG guest takes one of the 2 cores. */
const HOLDING_TIMEOUT_MS = 240_000;
const EXPORT_NAME = 'guest-disk';
const MiB = 2 ** 20;

type State = DiskProgress & { report?: DiskMigrationReport; error?: { code: string; message: string } };
const on = (verb: DiskTransferVerb) => controlSubject(Site.A, ServiceName.DiskTransfer, verb);

describe('qemu driver, disk path: a running guest mirrors its writes into disk-transfer (two-site bed)', () => {
  let bed: LocalBed | undefined;
  let dir: string | undefined;
  let guest: GuestHandle | undefined;
  let qmp: QmpClient | undefined;
  let mirror: DiskMirror | undefined;
  let exported = false;
  const migrationId = randomUUID();

  beforeAll(async () => {
    const image = await ensureGuestImage();
    bed = await LocalBed.start({ delayMs: 20, bandwidthBps: 200e6 });
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qemu-mirror-'));
    trackDir(dir);
    guest = await bootGuest({
      disk: image.disk,
      diskMode: 'copy',
      workDir: dir,
      qmpSocket: join(dir, 'qmp.sock'),
      ramMiB: 256,
      readyTimeoutMs: BOOT_TIMEOUT_MS,
    });
    qmp = await QmpClient.connect(guest.qmpSocket!);
    console.log(`guest pid ${guest.pid} ready after ${guest.readyAfterMs} ms, disk ${guest.disk}`);
  }, BUILD_TIMEOUT_MS + BOOT_TIMEOUT_MS);

  afterAll(async () => {
    // Mirror first (QEMU then leaves the export), then QEMU, then the export and the bed.
    await mirror?.cancel().catch((err: unknown) => console.warn(`mirror cancel: ${String(err)}`));
    await qmp?.close();
    await guest?.stop();
    if (bed) {
      if (exported) {
        await callControl(bed.nc, on(DiskTransferVerb.Abort), { migrationId }).catch(() => undefined);
        await callControl(bed.nc, on(DiskTransferVerb.Unexport), { name: EXPORT_NAME }).catch(() => undefined);
      }
      await bed.stop();
    }
    if (dir) {
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
  }, 60_000);

  it('keeps the destination in step while the guest writes; at pause the destination disk equals the source (sha256)', async () => {
    const nc = bed!.nc;
    const disk = guest!.disk;

    // disk-transfer serves the guest's own image as a mirror target: QEMU writes the image, the export only learns
    // which blocks changed.
    const reply = await callControl<ExportDiskReply>(nc, on(DiskTransferVerb.Export), {
      name: EXPORT_NAME,
      imagePath: disk,
      role: 'mirror-target',
      port: 0,
    });
    exported = true;
    const uri = new URL(reply.uri);
    const started = performance.now();
    mirror = await startDiskMirror(qmp!, {
      device: GUEST_DISK_NODE,
      nbd: { host: uri.hostname, port: Number(uri.port) },
      exportName: EXPORT_NAME,
    });
    console.log(`mirror ${mirror.jobId} ready in ${(performance.now() - started).toFixed(0)} ms (${reply.uri})`);

    const wanBefore = bed!.sites.wan.stats().aToB;
    await callControl(nc, on(DiskTransferVerb.Migrate), {
      migrationId,
      exportName: EXPORT_NAME,
      toSite: Site.B,
      hold: true,
      verify: true,
    });
    const progress = () => callControl<State>(nc, on(DiskTransferVerb.Progress), { migrationId });
    const holding = await waitUntil(
      async () => {
        const state = await progress();
        return state.phase === 'holding' || state.error ? state : undefined;
      },
      { what: 'the disk migration to hold', timeoutMs: HOLDING_TIMEOUT_MS, intervalMs: 250 },
    );
    expect(holding.error).toBeUndefined();
    console.log(`holding after ${holding.elapsedSeconds.toFixed(1)} s at round ${holding.round}`);

    // The guest keeps writing (fsync'ed) while the migration holds: its counter on the source disk advances.
    const counterAtHold = await readGuestDiskCounter(disk);
    await sleep(4_000);
    const counterLater = await waitUntil(
      async () => {
        const counter = await readGuestDiskCounter(disk);
        return counter > counterAtHold ? counter : undefined;
      },
      { what: 'the guest to write its disk while holding', timeoutMs: 15_000, intervalMs: 500 },
    );
    const inStep = await progress();
    expect(inStep.phase).toBe('holding');
    expect(inStep.round).toBeGreaterThan(holding.round);
    expect(mirror.error).toBeUndefined();

    // Pause: QEMU drains the guest's in-flight I/O, every write of which has reached the export (write-blocking).
    const stopped = qmp!.waitForEvent('STOP');
    await qmp!.execute('stop');
    await stopped;
    const counterAtPause = await readGuestDiskCounter(disk);
    const beforeFinalize = await progress();
    const t0 = performance.now();
    const report = await callControl<DiskMigrationReport>(nc, on(DiskTransferVerb.Finalize), { migrationId }, 120_000);
    const finalizeMs = performance.now() - t0;
    const wanBytes = bed!.sites.wan.stats().aToB - wanBefore;
    expect(report.verified).toBe(true);
    expect(mirror.error).toBeUndefined();

    const [sourceSha, destSha] = [await sha256File(disk), await sha256File(report.destPath)];
    expect(destSha).toBe(sourceSha);
    const destCounter = await readGuestDiskCounter(report.destPath);
    expect(destCounter).toBeGreaterThanOrEqual(counterAtPause);
    expect(destCounter).toBeGreaterThan(counterAtHold);

    const holdingRounds = beforeFinalize.round - report.rounds.length;
    console.log(
      [
        `disk ${report.sizeBytes / MiB} MiB (block ${report.blockSize / 1024} KiB); sha256 ${sourceSha.slice(0, 16)}… on both`,
        `on the wire: ${(report.frameBytesSent / MiB).toFixed(1)} MiB of frames for ${(report.rawBytesSent / MiB).toFixed(1)} MiB of disk` +
          ` (${(wanBytes / MiB).toFixed(1)} MiB A→B through the WAN emulator, control traffic included)`,
        `bulk ${report.bulkSeconds.toFixed(1)} s; catch-up rounds ${report.rounds.length} (converged ${report.converged});` +
          ` holding rounds ${holdingRounds}`,
        `final drain ${(report.finalDrainBytes / 1024).toFixed(0)} KiB, writes frozen ${report.downtimeMs.toFixed(0)} ms;` +
          ` verify ${report.verifyMs.toFixed(0)} ms; finalize answered in ${finalizeMs.toFixed(0)} ms; total ${report.totalSeconds.toFixed(1)} s`,
        `guest counter on disk: ${counterAtHold} at hold, ${counterLater} later, ${counterAtPause} at pause, ${destCounter} at the destination`,
      ].join('\n'),
    );

    // The guest stays paused (its memory is not moved here): the mirror goes, QEMU leaves the export.
    await mirror.cancel();
    expect(mirror.error).toBeUndefined();
    const nodes = await qmp!.execute<Array<{ 'node-name': string }>>('query-named-block-nodes');
    expect(nodes.map((n) => n['node-name'])).not.toContain(mirror.targetNode);
    expect(await qmp!.execute('query-block-jobs')).toEqual([]);

    // The switch-over is not carried out here: the abort thaws the export's writes, then the export goes.
    const aborted = await callControl<State>(nc, on(DiskTransferVerb.Abort), { migrationId });
    expect(aborted.phase).toBe('done');
    await expect(callControl(nc, on(DiskTransferVerb.Unexport), { name: EXPORT_NAME })).resolves.toEqual({
      name: EXPORT_NAME,
    });
    exported = false;
  });
});
