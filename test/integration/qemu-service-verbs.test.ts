import { randomUUID } from 'node:crypto';
import { access, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findQemuBinary, QmpClient, startDiskMirror, type QmpStatus } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DiskVerb,
  ErrorCode,
  QemuIncomingVerb,
  ServiceName,
  type StartQemuIncomingReply,
} from '@wanmig/protocol';
import {
  bootGuest,
  ensureGuestImage,
  GUEST_DISK_NODE,
  LocalBed,
  queryGuestCounter,
  sha256File,
  Site,
  sleep,
  trackDir,
  untrackDir,
  waitUntil,
  type GuestHandle,
  type GuestImage,
} from '@wanmig/testing';
import { DiskPathClient } from '../../apps/cli/src/qemu/disk-path.client.js';
import { QemuServicesClient } from '../../apps/cli/src/qemu/qemu-services.client.js';

const SETUP_TIMEOUT_MS = 15 * 60_000; // the first guest build debootstraps Debian; later runs find it cached
const TEST_TIMEOUT_MS = 90_000;
/** The post-copy case boots its own source guest first. */
const POSTCOPY_TEST_TIMEOUT_MS = 180_000;
/** Pre-copy's time before the switch to post-copy (as the runner's post-copy test). */
const POSTCOPY_AFTER_MS = 500;
const RAM_MIB = 256;
/** bootGuest's kernel command line when neither hotMiB nor diskKiB is given: the destination gets the same. */
const APPEND = 'console=ttyS0 quiet panic=-1';
const MiB = 2 ** 20;

interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
  ram?: { transferred: number; 'postcopy-requests'?: number };
}

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

/** Polls the source's `query-migrate` until `until` holds for it; a failed or cancelled migration rejects at once. */
async function waitMigrate(
  qmp: QmpClient,
  until: (info: MigrateInfo) => boolean,
  what: string,
  timeoutMs = 60_000,
): Promise<MigrateInfo> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<MigrateInfo>('query-migrate');
    if (until(info)) return info;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new Error(`waiting for ${what}: the source migration is ${info.status}: ${info['error-desc'] ?? ''}`);
    }
    if (performance.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms (${info.status})`);
    await sleep(20);
  }
}

/** When the guest does not answer at B: its consoles, from the first oops (a guest that panicked says why there). */
async function dumpConsoles(runDir: string, source: GuestHandle): Promise<void> {
  const fromOops = (text: string) =>
    text.slice(Math.max(0, text.search(/BUG|Oops|WARNING|panic/) - 2000)).slice(0, 6000);
  for (const file of ['serial.log', 'qemu.log']) {
    const text = await readFile(join(runDir, file), 'utf8').catch((e: unknown) => String(e));
    console.log(`--- B ${file} ---\n${fromOops(text)}`);
  }
  console.log(`--- A serial (tail) ---\n${source.serialText().slice(-3000)}`);
}

/**
 * The qemu driver's memory path as service verbs: a running TCG guest at site A moves to site B with its RAM relayed
 * by memory-precopy (`mem.qemu.relay`) into a QEMU that delta-apply starts (`mem.qemu.incoming`) and runs
 * (`mem.qemu.resume`); its disk through disk-transfer's verbs as the runner does. No class of another app runs in
 * this process: the test plays only the source host's part (its QEMU, over QMP).
 */
describe('qemu memory verbs: a guest migrates through memory-precopy and delta-apply (two-site bed)', () => {
  let image: GuestImage;
  let bed: LocalBed | undefined;
  let dir: string | undefined;
  let source: GuestHandle | undefined;
  let sourceQmp: QmpClient | undefined;
  let services: QemuServicesClient;
  let disks: DiskPathClient;
  /** Destination QEMUs that may still run: stopped through the verb, killed as a last resort. */
  const destinations = new Map<string, number>();

  const launch = () => ({
    ramMiB: RAM_MIB,
    kernel: image.kernel,
    initrd: image.initrd,
    append: APPEND,
    accel: 'tcg' as const,
  });

  /** The guest's RAM at A and at B (loaded, not yet running), dumped with `pmemsave` and hashed. */
  async function ramAtBothEnds(
    from: QmpClient,
    monitorSocket: string,
    prefix: string,
  ): Promise<{ source: string; destination: string }> {
    const monitor = await QmpClient.connect(monitorSocket);
    try {
      await waitUntil(
        async () => ((await monitor.execute<QmpStatus>('query-status')).status === 'paused' ? true : undefined),
        { what: 'the destination to load the stream', timeoutMs: 30_000, intervalMs: 5 },
      );
      const size = RAM_MIB * MiB;
      await from.execute('pmemsave', { val: 0, size, filename: `${prefix}-a.dump` });
      await monitor.execute('pmemsave', { val: 0, size, filename: `${prefix}-b.dump` });
    } finally {
      await monitor.close();
    }
    const [source, destination] = await Promise.all([sha256File(`${prefix}-a.dump`), sha256File(`${prefix}-b.dump`)]);
    await Promise.all([rm(`${prefix}-a.dump`, { force: true }), rm(`${prefix}-b.dump`, { force: true })]);
    return { source, destination };
  }

  beforeAll(async () => {
    await findQemuBinary(); // QemuNotFoundError: install qemu-system-x86 (deploy/bootstrap.sh does)
    image = await ensureGuestImage();
    bed = await LocalBed.start({ delayMs: 20, bandwidthBps: 400e6, memory: true });
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qverbs-'));
    trackDir(dir);
    services = new QemuServicesClient(bed.nc, Site.A, Site.B);
    disks = new DiskPathClient(bed.nc, Site.A, Site.B);
    await mkdir(join(dir, 'source'));
    source = await bootGuest({
      disk: image.disk,
      workDir: join(dir, 'source'),
      qmpSocket: join(dir, 'source.qmp'),
      ramMiB: RAM_MIB,
      accel: 'tcg',
    });
    console.log(`source guest pid ${source.pid} ready after ${source.readyAfterMs} ms, port ${source.servicePort}`);
    sourceQmp = await QmpClient.connect(source.qmpSocket!);
    await sourceQmp.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'events', state: true },
        { capability: 'postcopy-ram', state: false },
      ],
    });
    // The relay paces QEMU: its own rate limit must never bind.
    await sourceQmp.execute('migrate-set-parameters', { 'downtime-limit': 100, 'max-bandwidth': 8 * 1024 ** 3 });
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    for (const [migrationId, pid] of destinations) {
      await services?.abortIncoming(migrationId, { stopRunning: true }).catch(() => undefined);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    await sourceQmp?.close();
    await source?.stop();
    await bed?.stop();
    if (dir) {
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
  }, 60_000);

  it(
    'refuses what it cannot do; an abort mid-stream leaves no QEMU at B and the source runs on',
    async () => {
      const unknown = randomUUID();
      for (const call of [
        () => services.relayStatus(unknown),
        () => services.closeRelay(unknown),
        () => services.incomingStatus(unknown),
        () => services.resume(unknown),
        // delta-apply holds no disk of that migration: no QEMU to start on it.
        () => services.startIncoming(unknown, launch()),
        () => services.abortIncoming(unknown),
      ]) {
        await expect(call()).rejects.toMatchObject({ code: ErrorCode.NotFound });
      }
      // ... and a start after its abort is refused: a destination aborted first never runs.
      await expect(services.startIncoming(unknown, launch())).rejects.toMatchObject({ code: ErrorCode.Conflict });
      // No receiver for the stream: the relay says so rather than wait.
      await expect(services.openRelay(randomUUID())).rejects.toMatchObject({ code: ErrorCode.Unavailable });

      // A migration whose disk delta-apply holds (prepared directly: the disk's own path is the next test's).
      const migrationId = randomUUID();
      await callControl(bed!.nc, controlSubject(Site.B, ServiceName.DeltaApply, DiskVerb.Prepare), {
        migrationId,
        sizeBytes: 2 * 1024 * MiB,
      });
      await expect(services.startIncoming(migrationId, { ...launch(), kernel: 'vmlinuz' })).rejects.toMatchObject({
        code: ErrorCode.InvalidRequest,
      });
      await expect(
        services.startIncoming(migrationId, { ...launch(), kernel: join(dir!, 'no-such-kernel') }),
      ).rejects.toMatchObject({ code: ErrorCode.InvalidRequest, message: /is not readable/ });
      await expect(
        callControl(bed!.nc, controlSubject(Site.B, ServiceName.DeltaApply, QemuIncomingVerb.Start), {
          migrationId,
          ...launch(),
          accel: 'hvf',
        }),
      ).rejects.toMatchObject({ code: ErrorCode.InvalidRequest });

      const started = await services.startIncoming(migrationId, launch());
      destinations.set(migrationId, started.pid);
      expect(started.status).toBe('inmigrate');
      expect(alive(started.pid)).toBe(true);
      // The same request again is the same destination; another is refused.
      expect(await services.startIncoming(migrationId, launch())).toEqual(started);
      await expect(services.startIncoming(migrationId, { ...launch(), ramMiB: 512 })).rejects.toMatchObject({
        code: ErrorCode.Conflict,
      });

      const relay = await services.openRelay(migrationId);
      const counterBefore = await queryGuestCounter(source!.servicePort);
      await sourceQmp!.execute('migrate', { uri: `unix:${relay.socketPath}` });
      await waitUntil(async () => (await services.relayStatus(migrationId)).qemuBytes >= 4 * MiB, {
        what: 'QEMU to stream 4 MiB',
        timeoutMs: 30_000,
        intervalMs: 50,
      });

      const aborted = await services.abortIncoming(migrationId);
      expect(aborted).toEqual({ migrationId, stopped: true, wasRunning: false });
      expect(alive(started.pid)).toBe(false);
      expect(await services.abortIncoming(migrationId)).toEqual({ ...aborted, stopped: false });
      expect(await services.incomingStatus(migrationId)).toMatchObject({ status: 'aborted', running: false });
      await expect(services.resume(migrationId)).rejects.toMatchObject({ code: ErrorCode.Conflict });
      await expect(services.startIncoming(migrationId, launch())).rejects.toMatchObject({ code: ErrorCode.Conflict });

      // The source QEMU's migration fails (the relay can no longer deliver); close the relay as a rollback would.
      const closed = await services.closeRelay(migrationId);
      expect(closed).toMatchObject({ closed: true, done: false });
      expect(await services.closeRelay(migrationId)).toEqual(closed);
      expect(await exists(relay.socketPath)).toBe(false);
      const failed = await waitUntil(
        async () => {
          const info = await sourceQmp!.execute<MigrateInfo>('query-migrate');
          return info.status === 'failed' || info.status === 'cancelled' ? info : undefined;
        },
        { what: 'the source migration to fail', timeoutMs: 30_000, intervalMs: 50 },
      );
      console.log(`source migration ${failed.status} after the abort: ${failed['error-desc'] ?? ''}`);
      // The guest at A runs on and counts on.
      expect((await sourceQmp!.execute<QmpStatus>('query-status')).status).toBe('running');
      const c1 = await queryGuestCounter(source!.servicePort);
      expect(c1).toBeGreaterThan(counterBefore);
      await sleep(500);
      expect(await queryGuestCounter(source!.servicePort)).toBeGreaterThan(c1);

      await callControl(bed!.nc, controlSubject(Site.B, ServiceName.DeltaApply, DiskVerb.Release), {
        migrationId,
        deleteImage: true,
      });
      destinations.delete(migrationId);
    },
    TEST_TIMEOUT_MS,
  );

  it('moves the running guest: disk via disk-transfer, memory via mem.qemu.relay + mem.qemu.incoming, switch via mem.qemu.resume', async () => {
    const migrationId = randomUUID();
    const exportName = `qverbs-${migrationId.slice(0, 8)}`;
    const destPath = join(bed!.dir, Site.B, `qverbs-${migrationId.slice(0, 8)}`, 'disk.img');
    await mkdir(join(destPath, '..'), { recursive: true });
    const t0 = performance.now();

    // Disk: export, mirror, held migration until the destination is kept in step.
    const exported = await disks.exportMirrorTarget(exportName, source!.disk);
    const uri = new URL(exported.uri);
    const mirror = await startDiskMirror(sourceQmp!, {
      device: GUEST_DISK_NODE,
      nbd: { host: uri.hostname, port: Number(uri.port) },
      exportName,
    });
    let started: StartQemuIncomingReply | undefined;
    try {
      await disks.migrateHeld({ migrationId, exportName, destPath, downtimeMs: 300, verify: false });
      await disks.waitHolding(migrationId, 60_000);
      console.log(`disk holds in step after ${((performance.now() - t0) / 1000).toFixed(1)} s`);

      // Memory: the destination QEMU on the image delta-apply holds, then the relay, then QEMU's migrate.
      started = await services.startIncoming(migrationId, { ...launch(), diskPath: destPath });
      destinations.set(migrationId, started.pid);
      expect(started).toMatchObject({ migrationId, diskPath: destPath, status: 'inmigrate' });
      // The destination's observer monitor: another QMP connection, beside the one delta-apply holds.
      expect(started.monitorSocket).toBe(join(bed!.runtimeDirB, 'qemu', migrationId, 'monitor.qmp'));
      const monitor = await QmpClient.connect(started.monitorSocket);
      try {
        expect(await monitor.execute<QmpStatus>('query-status')).toMatchObject({ status: 'inmigrate' });
        expect(await services.incomingStatus(migrationId)).toMatchObject({
          status: 'inmigrate',
          monitorSocket: started.monitorSocket,
          postcopy: false,
        });
        expect(await monitor.execute<QmpStatus>('query-status')).toMatchObject({ status: 'inmigrate' });
      } finally {
        await monitor.close();
      }
      const relay = await services.openRelay(migrationId);
      await sourceQmp!.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'pause-before-switchover', state: true }],
      });
      const lastAtA = await queryGuestCounter(source!.servicePort);
      await sourceQmp!.execute('migrate', { uri: `unix:${relay.socketPath}` });
      await waitMigrate(sourceQmp!, (info) => info.status === 'pre-switchover', 'pre-switchover');

      // The pause: the disk's final drain, the mirror goes, QEMU finishes, the destination runs.
      const pausedAt = performance.now();
      const report = await disks.finalize(migrationId);
      await mirror.cancel();
      await sourceQmp!.execute('migrate-continue', { state: 'pre-switchover' });
      const completed = await waitMigrate(sourceQmp!, (info) => info.status === 'completed', 'completed');
      // Both ends stopped, the destination loaded: its RAM must be the source's before it runs. (QEMU before 9.0
      // lost TCG guest writes here now and then, one to a dozen pages of kernel stack under CPU load: the
      // dirty-bitmap sync left TCG's TLB stale. deploy/bootstrap.sh installs a QEMU with the fix.)
      const ram = await ramAtBothEnds(sourceQmp!, started.monitorSocket, join(dir!, 'ram'));
      expect(ram.destination).toBe(ram.source);
      const resumed = await services.resume(migrationId);
      const pauseMs = performance.now() - pausedAt;
      expect(resumed).toMatchObject({ migrationId, status: 'running' });
      console.log(
        `switched in ${pauseMs.toFixed(0)} ms (load wait ${resumed.loadWaitMs} ms, cont ${resumed.contMs} ms, ` +
          `warnings ${JSON.stringify(resumed.warnings)}); disk final drain ${report.finalDrainBytes} bytes; ` +
          `QEMU sent ${((completed.ram?.transferred ?? 0) / MiB).toFixed(1)} MiB of RAM; ` +
          `total ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );

      // B runs the guest, whose counter goes on from where A's was.
      const atB = await services.incomingStatus(migrationId);
      expect(atB).toMatchObject({ status: 'running', running: true, loaded: true, resumed: true, aborted: false });
      expect(atB.sink).toMatchObject({ connected: true, ended: true, done: true });
      expect(atB.sink.error).toBeUndefined();
      const relayed = await waitUntil(
        async () => {
          const status = await services.relayStatus(migrationId);
          return status.done ? status : undefined;
        },
        { what: 'the relay to report the stream delivered', timeoutMs: 10_000, intervalMs: 50 },
      );
      expect(relayed).toMatchObject({ failed: false, closed: false, qemuClosed: true, returnBytes: 0 });
      expect(atB.sink.bytesWritten).toBe(relayed.qemuBytes);
      // End to end: every segment the relay read from QEMU matched what the feed handed the destination QEMU.
      expect(atB.sink).toMatchObject({ endVerified: true, verifiedBytes: relayed.qemuBytes });
      expect(relayed.digestSegments).toBeGreaterThan(1);
      expect(atB.sink.streamSha256).toBe(relayed.streamSha256);
      expect(atB.sink.returnBytes).toBe(0);
      expect((await sourceQmp!.execute<QmpStatus>('query-status')).status).toBe('postmigrate');

      const first = await waitUntil(() => queryGuestCounter(started!.servicePort).catch(() => undefined), {
        what: 'the guest to answer at B',
        timeoutMs: 15_000,
        intervalMs: 50,
      }).catch(async (err: unknown) => {
        await dumpConsoles(join(bed!.runtimeDirB, 'qemu', migrationId), source!);
        throw err;
      });
      expect(first).toBeGreaterThanOrEqual(lastAtA);
      const later = await waitUntil(
        async () => {
          const counter = await queryGuestCounter(started!.servicePort);
          return counter > first ? counter : undefined;
        },
        { what: 'the counter at B to advance', timeoutMs: 10_000, intervalMs: 100 },
      );
      expect(later).toBeGreaterThan(first);
      console.log(`counter ${lastAtA} at A before the move, ${first} then ${later} at B`);

      // Running: an abort without stopRunning is refused; with it, the destination goes.
      await expect(services.abortIncoming(migrationId)).rejects.toMatchObject({ code: ErrorCode.Conflict });
      expect(alive(started.pid)).toBe(true);
      expect(await services.abortIncoming(migrationId, { stopRunning: true })).toEqual({
        migrationId,
        stopped: true,
        wasRunning: true,
      });
      expect(alive(started.pid)).toBe(false);
      destinations.delete(migrationId);
    } finally {
      await mirror.cancel().catch(() => undefined);
      await disks.unexport(exportName).catch(() => undefined);
      await disks.release(migrationId, true).catch(() => undefined);
    }
  });
  it(
    'post-copy through the verbs: the guest runs at B once it holds the device state, its pages follow or are asked for over the relayed return path',
    async () => {
      // A source of its own, running (the one above has moved away).
      await mkdir(join(dir!, 'postcopy'));
      const guest = await bootGuest({
        disk: image.disk,
        workDir: join(dir!, 'postcopy'),
        qmpSocket: join(dir!, 'postcopy.qmp'),
        ramMiB: RAM_MIB,
        accel: 'tcg',
      });
      console.log(`post-copy source guest pid ${guest.pid} ready after ${guest.readyAfterMs} ms`);
      const qmp = await QmpClient.connect(guest.qmpSocket!);
      const migrationId = randomUUID();
      const exportName = `qverbs-${migrationId.slice(0, 8)}`;
      const destPath = join(bed!.dir, Site.B, `qverbs-${migrationId.slice(0, 8)}`, 'disk.img');
      await mkdir(join(destPath, '..'), { recursive: true });
      const t0 = performance.now();
      let mirror: Awaited<ReturnType<typeof startDiskMirror>> | undefined;
      let monitor: QmpClient | undefined;
      try {
        const exported = await disks.exportMirrorTarget(exportName, guest.disk);
        const uri = new URL(exported.uri);
        mirror = await startDiskMirror(qmp, {
          device: GUEST_DISK_NODE,
          nbd: { host: uri.hostname, port: Number(uri.port) },
          exportName,
        });
        await disks.migrateHeld({ migrationId, exportName, destPath, downtimeMs: 300, verify: false });
        await disks.waitHolding(migrationId, 60_000);

        // The destination ready for post-copy, the relay carrying its return path back.
        const started = await services.startIncoming(migrationId, { ...launch(), diskPath: destPath, postcopy: true });
        destinations.set(migrationId, started.pid);
        expect(started).toMatchObject({ migrationId, status: 'inmigrate' });
        monitor = await QmpClient.connect(started.monitorSocket);
        const capabilities =
          await monitor.execute<Array<{ capability: string; state: boolean }>>('query-migrate-capabilities');
        expect(capabilities.find((c) => c.capability === 'postcopy-ram')?.state).toBe(true);
        const relay = await services.openRelay(migrationId, { returnPath: true });

        // The source as configureQemuMigration({ postcopy: true }) leaves it; a downtime it cannot meet, so that
        // pre-copy does not converge before the switch to post-copy.
        await qmp.execute('migrate-set-capabilities', {
          capabilities: [
            { capability: 'events', state: true },
            { capability: 'return-path', state: false },
            { capability: 'postcopy-ram', state: true },
            { capability: 'pause-before-switchover', state: true },
          ],
        });
        await qmp.execute('migrate-set-parameters', { 'downtime-limit': 1, 'max-bandwidth': 8 * 1024 ** 3 });
        const lastAtA = await queryGuestCounter(guest.servicePort);
        await qmp.execute('migrate', { uri: `unix:${relay.socketPath}` });
        await sleep(POSTCOPY_AFTER_MS);
        await qmp.execute('migrate-start-postcopy');

        // The guest stops at pre-switchover, as in pre-copy: the disk's final drain, the mirror goes, then on.
        await waitMigrate(qmp, (info) => info.status === 'pre-switchover', 'pre-switchover');
        const pausedAt = performance.now();
        await disks.finalize(migrationId);
        await mirror.cancel();
        await qmp.execute('migrate-continue', { state: 'pre-switchover' });
        const switched = await waitMigrate(
          qmp,
          (info) => info.status === 'postcopy-active' || info.status === 'completed',
          'postcopy-active',
        );
        const resumed = await services.resume(migrationId);
        const pauseMs = performance.now() - pausedAt;
        expect(resumed).toMatchObject({ migrationId, status: 'running' });
        // The observer sees what delta-apply did over its own connection.
        expect(await monitor.execute<QmpStatus>('query-status')).toMatchObject({ status: 'running', running: true });
        const atB = await services.incomingStatus(migrationId);
        expect(atB).toMatchObject({ postcopy: true, running: true, loaded: true, resumed: true });
        console.log(
          `post-copy: source ${switched.status} after the switch; B runs ${pauseMs.toFixed(0)} ms after the pause ` +
            `(load wait ${resumed.loadWaitMs} ms), incoming ${atB.migrationStatus}, ` +
            `return path ${atB.sink.returnBytes} bytes so far`,
        );

        // B runs the guest while the rest of its RAM arrives; its counter goes on from where A's was.
        const first = await waitUntil(() => queryGuestCounter(started.servicePort).catch(() => undefined), {
          what: 'the guest to answer at B',
          timeoutMs: 15_000,
          intervalMs: 50,
        }).catch(async (err: unknown) => {
          await dumpConsoles(join(bed!.runtimeDirB, 'qemu', migrationId), guest);
          throw err;
        });
        expect(first).toBeGreaterThanOrEqual(lastAtA);

        // The source sends the rest, and completes once the destination has all of it.
        const completed = await waitMigrate(qmp, (info) => info.status === 'completed', 'completed');
        const later = await waitUntil(
          async () => {
            const counter = await queryGuestCounter(started.servicePort);
            return counter > first ? counter : undefined;
          },
          { what: 'the counter at B to advance', timeoutMs: 10_000, intervalMs: 100 },
        );
        expect(later).toBeGreaterThan(first);

        // Both ends of the return path agree on what crossed back.
        const relayed = await waitUntil(
          async () => {
            const status = await services.relayStatus(migrationId);
            return status.done ? status : undefined;
          },
          { what: 'the relay to report the stream delivered', timeoutMs: 10_000, intervalMs: 50 },
        );
        expect(relayed).toMatchObject({ failed: false, closed: false, qemuClosed: true });
        expect(relayed.returnBytes).toBeGreaterThan(0);
        const fed = await waitUntil(
          async () => {
            const status = await services.incomingStatus(migrationId);
            return status.sink.done && status.sink.returnBytes === relayed.returnBytes ? status : undefined;
          },
          { what: 'the sink to count the return path as the relay did', timeoutMs: 10_000, intervalMs: 50 },
        ).catch(async (err: unknown) => {
          console.log(`sink: ${JSON.stringify((await services.incomingStatus(migrationId)).sink)}`);
          throw err;
        });
        expect(fed.sink).toMatchObject({ ended: true, done: true, bytesWritten: relayed.qemuBytes });
        expect(fed.sink.error).toBeUndefined();
        expect(fed.sink.returnPathError).toBeUndefined();
        console.log(
          `counter ${lastAtA} at A, ${first} then ${later} at B; QEMU sent ` +
            `${((completed.ram?.transferred ?? 0) / MiB).toFixed(1)} MiB, ` +
            `${completed.ram?.['postcopy-requests'] ?? '?'} page requests; return path ${relayed.returnBytes} bytes; ` +
            `total ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        );

        expect(await services.abortIncoming(migrationId, { stopRunning: true })).toMatchObject({ stopped: true });
        destinations.delete(migrationId);
      } finally {
        await monitor?.close();
        await mirror?.cancel().catch(() => undefined);
        await disks.unexport(exportName).catch(() => undefined);
        await disks.release(migrationId, true).catch(() => undefined);
        await qmp.close();
        await guest.stop();
      }
    },
    POSTCOPY_TEST_TIMEOUT_MS,
  );
});
