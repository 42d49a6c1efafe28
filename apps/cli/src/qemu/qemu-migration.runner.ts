import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  completedFigures,
  configureQemuMigration,
  ensureRunning,
  POSTCOPY_ACTIVE,
  PRE_SWITCHOVER,
  QemuMigrationFailedError,
  QemuMigrationStatus,
  QmpClient,
  startDiskMirror,
  startQemuMigration,
  testGuestAppend,
  waitForMigrationIdle,
  waitForMigrationStatus,
  type DiskMirror,
  type QemuMigrationInfo,
  type QmpStatus,
} from '@wanmig/hypervisor';
import {
  ErrorCode,
  WanmigError,
  type QemuIncomingStatusReply,
  type QemuRelayStatusReply,
  type StartQemuIncomingReply,
} from '@wanmig/protocol';
import {
  ensureGuestImage,
  GUEST_DISK_NODE,
  readGuestDiskCounter,
  sha256File,
  Site,
  waitUntil,
  type GuestHandle,
  type LocalBed,
} from '@wanmig/testing';
import { CounterProber, emptyProbeReport } from './counter.prober.js';
import { DiskPathClient } from './disk-path.client.js';
import { FailureTripwire } from './failure.tripwire.js';
import { QemuServicesClient, type QemuIncomingLaunch } from './qemu-services.client.js';
import { QemuMigrationInterruptedError, QemuMigrationStage, QemuVmMigrationError } from './qemu-migration.errors.js';
import {
  DEFAULT_QEMU_DOWNTIME_MS,
  DEFAULT_QEMU_MIGRATION_TIMEOUTS,
  DISK_SHARE_DURING_MEMORY,
  type QemuDestination,
  type QemuWanmigOptions,
  type QemuWanmigResult,
} from './qemu-migration.types.js';

export * from './qemu-migration.types.js';
export { QemuMigrationInterruptedError, QemuMigrationStage, QemuVmMigrationError } from './qemu-migration.errors.js';

const MiB = 2 ** 20;
const MEMORY_WATCH_MS = 250;
/** How long a failed migration waits for the services to say what broke, before rolling back regardless. */
const EXPLAIN_TIMEOUT_MS = 2_000;
/** The mirror-target export's socket in the source-side dir. */
const MIRROR_SOCKET = 'mirror.sock';

/**
 * Migrates a running QEMU guest from site A to site B of the bed through wanmig's pieces: its disk through
 * disk-transfer (QEMU mirrors its writes into a `mirror-target` export; the migration holds the destination in step)
 * and delta-apply, its RAM and device state through QEMU's own migration stream relayed over NATS
 * (memory-precopy's relay at A, delta-apply's sink at B, feeding a QEMU started with `-incoming ... -S`). The switch
 * happens in the pause QEMU makes with `pause-before-switchover`: the disk's final drain, the mirror goes, then QEMU
 * finishes; the destination runs once it has loaded everything.
 *
 * Any failure before the destination runs rolls back (see QemuVmMigrationError) and rejects with
 * QemuVmMigrationError; the source guest runs on.
 */
export async function runWanmigQemuMigration(
  bed: LocalBed,
  source: GuestHandle,
  options: QemuWanmigOptions = {},
): Promise<QemuWanmigResult> {
  return new QemuVmMigration(bed, source, options).run();
}

class QemuVmMigration {
  readonly migrationId: string;
  private stage: QemuMigrationStage = QemuMigrationStage.DiskExport;
  private readonly timeouts: typeof DEFAULT_QEMU_MIGRATION_TIMEOUTS;
  private readonly tripwire = new FailureTripwire();
  private readonly disks: DiskPathClient;
  private readonly services: QemuServicesClient;
  private readonly exportName: string;
  private readonly sourceDir: string;
  private readonly destDir: string;
  private readonly destPath: string;
  private sourceQmp?: QmpClient;
  private sourceWasRunning = false;
  private prober?: CounterProber;
  private exported = false;
  private diskStarted = false;
  private diskWatch?: NodeJS.Timeout;
  private memoryWatch?: NodeJS.Timeout;
  private mirror?: DiskMirror;
  private incoming?: StartQemuIncomingReply;
  private destination?: QemuDestination;
  private relayOpened = false;
  private lastRelay?: QemuRelayStatusReply;
  private lastIncoming?: QemuIncomingStatusReply;
  private switchoverCapability = false;
  private migrateStarted = false;
  /** QEMU was told to switch to post-copy. */
  private postcopy = false;

  constructor(
    private readonly bed: LocalBed,
    private readonly source: GuestHandle,
    private readonly o: QemuWanmigOptions,
  ) {
    this.migrationId = o.migrationId ?? randomUUID();
    this.timeouts = { ...DEFAULT_QEMU_MIGRATION_TIMEOUTS, ...o.timeouts };
    this.disks = new DiskPathClient(bed.nc, Site.A, Site.B);
    this.services = new QemuServicesClient(bed.nc, Site.A, Site.B);
    const short = this.migrationId.slice(0, 8);
    this.exportName = `qemu-${short}`;
    this.sourceDir = join(bed.dir, Site.A, `qemu-${short}`);
    this.destDir = join(bed.dir, Site.B, `qemu-${short}`);
    this.destPath = join(this.destDir, 'disk.img');
  }

  private log(line: string): void {
    this.o.log?.(`[qemu ${this.migrationId.slice(0, 8)}] ${line}`);
  }

  private enter(stage: QemuMigrationStage): void {
    this.stage = stage;
    this.log(`stage ${stage}`);
    this.o.onStage?.({
      migrationId: this.migrationId,
      stage,
      destination: this.destination,
      memoryBytes: () => this.lastRelay?.qemuBytes ?? 0,
    });
  }

  async run(): Promise<QemuWanmigResult> {
    const { migrationId } = this;
    if (!this.source.qmpSocket) {
      throw new QemuVmMigrationError({
        migrationId,
        stage: this.stage,
        rolledBack: true,
        code: ErrorCode.InvalidRequest,
        cause: new Error('the source guest was booted without a QMP socket'),
      });
    }
    const downtimeMs = this.o.downtimeMs ?? DEFAULT_QEMU_DOWNTIME_MS;
    const budget = this.o.bandwidthBps;
    const verify = this.o.verifyDiskInPause ?? false;
    const postcopyAfterMs = this.o.steering?.postcopyAfterMs;
    let result: Omit<QemuWanmigResult, 'probe' | 'clientPauseMs' | 'wan' | 'sourceStatusAfter' | 'sourceStopped'>;
    const wanBefore = this.bed.sites.wan.stats();
    const t0 = performance.now();
    try {
      // Source: QMP, its state and RAM size; a client starts asking the guest its counter.
      await mkdir(this.sourceDir, { recursive: true });
      await mkdir(this.destDir, { recursive: true });
      this.sourceQmp = this.o.sourceQmp ?? (await QmpClient.connect(this.source.qmpSocket));
      const sourceQmp = this.sourceQmp;
      this.tripwire.watch(sourceQmp.closed, ({ value }) => this.interrupted('source-qemu', value?.message ?? 'closed'));
      this.sourceWasRunning = (await sourceQmp.execute<QmpStatus>('query-status')).running;
      const memory = await sourceQmp.execute<{ 'base-memory': number }>('query-memory-size-summary');
      const ramBytes = memory['base-memory'];
      if (this.o.probeCounter ?? true) {
        this.prober = new CounterProber(this.source.servicePort, { intervalMs: this.o.probeIntervalMs });
        this.prober.start();
      }

      // a. Disk: export, mirror, held migration until it keeps the destination in step. The export listens on a
      // unix socket: QEMU reaches it wherever it runs, inside a network namespace too (which has its own loopback).
      this.enter(QemuMigrationStage.DiskExport);
      const mirrorSocket = join(this.sourceDir, MIRROR_SOCKET);
      await this.disks.exportMirrorTarget(this.exportName, this.source.disk, mirrorSocket);
      this.exported = true;
      this.enter(QemuMigrationStage.DiskMirror);
      this.mirror = await startDiskMirror(sourceQmp, {
        device: GUEST_DISK_NODE,
        nbd: { path: mirrorSocket },
        exportName: this.exportName,
      });
      this.tripwire.watch(this.mirror.failed, ({ value }) =>
        this.interrupted('disk-mirror', value?.message ?? 'failed', value),
      );
      this.enter(QemuMigrationStage.DiskCopy);
      this.diskStarted = true;
      await this.tripwire.guard(
        this.disks.migrateHeld({
          migrationId,
          exportName: this.exportName,
          destPath: this.destPath,
          downtimeMs,
          verify,
          bandwidthBps: budget,
        }),
      );
      const holding = await this.tripwire.guard(this.disks.waitHolding(migrationId, this.timeouts.holdingMs));
      const holdingAfterSeconds = (performance.now() - t0) / 1000;
      this.log(`disk holds in step after ${holdingAfterSeconds.toFixed(1)} s (round ${holding.round})`);
      if (budget) await this.disks.setBandwidth(migrationId, budget * DISK_SHARE_DURING_MEMORY);
      this.watchDisk();

      // b. The destination QEMU, started by delta-apply at B on the image it built, paused on `-incoming`; the
      // relay at A (memory-precopy), which QEMU migrates into.
      this.enter(QemuMigrationStage.Destination);
      this.incoming = await this.tripwire.guard(
        this.services.startIncoming(migrationId, await this.launchSpec(ramBytes)),
      );
      this.destination = this.destinationOf(this.incoming);
      const relay = await this.tripwire.guard(
        this.services.openRelay(migrationId, {
          windowBytes: this.o.windowBytes,
          bandwidthBps: budget ? budget * (1 - DISK_SHARE_DURING_MEMORY) : undefined,
          returnPath: postcopyAfterMs !== undefined,
        }),
      );
      this.relayOpened = true;
      this.watchMemory();
      await configureQemuMigration(sourceQmp, {
        downtimeLimitMs: this.o.qemuDowntimeLimitMs ?? qemuShareOf(downtimeMs),
        autoConverge: this.o.steering?.autoConverge ?? true,
        xbzrleCacheBytes: this.o.steering?.xbzrleCacheBytes,
        postcopy: postcopyAfterMs !== undefined,
      });
      await sourceQmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'pause-before-switchover', state: true }],
      });
      this.switchoverCapability = true;

      // QEMU's pre-copy, paced by the relay, until it stops the guest and waits for us.
      this.enter(QemuMigrationStage.MemoryPrecopy);
      this.migrateStarted = true;
      await this.tripwire.guard(startQemuMigration(sourceQmp, relay.socketPath));
      // Post-copy, when allowed, once pre-copy has had its time: QEMU then stops the guest at once (at
      // pre-switchover, as for pre-copy) and the destination runs with the memory still arriving.
      const postcopyTimer =
        postcopyAfterMs === undefined
          ? undefined
          : setTimeout(() => {
              this.log(`pre-copy has not converged after ${postcopyAfterMs} ms: switching to post-copy`);
              this.postcopy = true;
              sourceQmp.execute('migrate-start-postcopy').catch((err: unknown) => {
                this.tripwire.fire(this.interrupted('source-qemu', `migrate-start-postcopy: ${describe(err)}`, err));
              });
            }, postcopyAfterMs);
      const paused = await this.tripwire
        .guard(
          waitForMigrationStatus(sourceQmp, [PRE_SWITCHOVER, QemuMigrationStatus.Completed], {
            migrationId,
            timeoutMs: this.timeouts.memoryMs,
          }),
        )
        .finally(() => clearTimeout(postcopyTimer));
      if (paused.status !== PRE_SWITCHOVER) {
        throw this.interrupted('source-qemu', `switched over without stopping at ${PRE_SWITCHOVER}`);
      }

      // c. The guest is stopped. The mirror goes first: the guest cannot write, and every write it made is in the
      // export's dirty map (write-blocking). Then the disk's final drain and QEMU's last pages and device state
      // travel side by side; the destination runs once both are there. Were the migration to fail after
      // migrate-continue, the source (postmigrate) is resumed by the rollback, and its writes, now going only to
      // its own image, never hang on a frozen export.
      this.enter(QemuMigrationStage.Switchover);
      const pausedAt = performance.now();
      this.stopWatchingDisk();
      await this.mirror.cancel();
      const mirrorGoneAt = performance.now();
      this.enter(QemuMigrationStage.Completion);
      let finalizedAt = mirrorGoneAt;
      let completedAt = mirrorGoneAt;
      const diskSide = async () => {
        const finalized = await this.disks.finalize(migrationId, this.timeouts.finalizeMs);
        finalizedAt = performance.now();
        return finalized;
      };
      const memorySide = async () => {
        await sourceQmp.execute('migrate-continue', { state: PRE_SWITCHOVER });
        // Pre-copy: QEMU completes once the last bytes are in the relay. Post-copy: once the device state is;
        // the destination may then run, its pages following or asked for.
        const wanted = this.postcopy
          ? [POSTCOPY_ACTIVE, QemuMigrationStatus.Completed]
          : [QemuMigrationStatus.Completed];
        await waitForMigrationStatus(sourceQmp, wanted, { migrationId, timeoutMs: this.timeouts.completionMs });
        completedAt = performance.now();
      };
      // In post-copy the memory side is the whole remaining RAM at full pace: the disk's drain goes first, alone.
      const [report] = this.postcopy
        ? [await this.tripwire.guard(diskSide()), await this.tripwire.guard(memorySide())]
        : await this.tripwire.guard(Promise.all([diskSide(), memorySide()]));
      const bothAt = performance.now();
      const atPause = verify ? await this.compareDisks() : undefined;
      const ramAtPause = this.o.verifyRamInPause && !this.postcopy ? await this.compareRam(ramBytes) : undefined;
      const verifiedAt = performance.now();

      // d. delta-apply runs the destination once it has loaded the stream (it waits for that itself), and has it
      // announce itself on its network.
      this.enter(QemuMigrationStage.Activate);
      if (this.o.beforeCont) await this.tripwire.guard(this.withDestinationQmp(this.o.beforeCont));
      // The last step that may fail and roll back: the destination's resume is the point of no return.
      if (this.o.beforeResume) {
        await this.tripwire.guard(this.o.beforeResume({ migrationId, destination: this.destination }));
      }
      const resumed = await this.tripwire.guard(
        this.services.resume(migrationId, { loadTimeoutMs: this.timeouts.completionMs }),
      );
      const activatedAt = performance.now();
      this.prober?.switchTo(this.incoming.servicePort);
      // From here on only forward: the destination runs.
      this.tripwire.disarm();
      this.stopWatchingMemory();
      if (this.postcopy) {
        // The rest of the memory arrives while the guest runs at B; a failure now cannot be rolled back.
        await waitForMigrationStatus(sourceQmp, [QemuMigrationStatus.Completed], {
          migrationId,
          timeoutMs: this.timeouts.memoryMs,
        });
      }
      const memoryEnd = await this.memoryOutcome();
      this.log(`destination running ${(activatedAt - pausedAt).toFixed(0)} ms after the source stopped`);

      result = {
        migrationId,
        destination: this.destination,
        destPath: this.destPath,
        totalSeconds: (activatedAt - t0) / 1000,
        pause: {
          mirrorCancelMs: mirrorGoneAt - pausedAt,
          finalizeMs: finalizedAt - mirrorGoneAt,
          completionMs: completedAt - mirrorGoneAt,
          loadedMs: bothAt - mirrorGoneAt,
          verifyMs: verifiedAt - bothAt,
          activateMs: activatedAt - verifiedAt,
          totalMs: activatedAt - pausedAt,
        },
        qemu: qemuFigures(await completedFigures(sourceQmp)),
        disk: { report, holdingAfterSeconds },
        memory: {
          relay: memoryEnd.relay,
          sink: memoryEnd.incoming.sink,
          senderBytes: memoryEnd.relay.senderBytes,
          resentBytes: memoryEnd.relay.resentBytes,
          windowBytes: relay.windowBytes,
        },
        postcopy: this.postcopy,
        diskEqualAtPause: atPause ? atPause.sourceSha256 === atPause.destinationSha256 : undefined,
        diskAtPause: atPause,
        ramAtPause,
        warnings: [...resumed.warnings],
      };
    } catch (err) {
      throw await this.rollBack(await this.explain(err));
    }
    return this.finish(result, wanBefore);
  }

  /** The destination's launch: the source's machine, its kernel and initrd (the test guest's by default). */
  private async launchSpec(ramBytes: number): Promise<QemuIncomingLaunch> {
    const d = this.o.destination ?? {};
    const image = d.kernel && d.initrd ? undefined : await ensureGuestImage();
    return {
      ramMiB: Math.round(ramBytes / MiB),
      kernel: d.kernel ?? image!.kernel,
      initrd: d.initrd ?? image!.initrd,
      append: d.append ?? testGuestAppend({ hotMiB: d.hotMiB, diskKiB: d.diskKiB }),
      diskPath: this.destPath,
      machine: d.machine ?? 'q35',
      accel: d.accel ?? 'tcg',
      ...(d.servicePort === undefined ? {} : { servicePort: d.servicePort }),
      postcopy: this.o.steering?.postcopyAfterMs !== undefined,
      ...(d.network ? { network: { ...d.network } } : {}),
    };
  }

  /** The running destination as callers see it: delta-apply owns the QEMU, its monitor socket is for observers. */
  private destinationOf(started: StartQemuIncomingReply): QemuDestination {
    const services = this.services;
    const migrationId = this.migrationId;
    let stopped: Promise<void> | undefined;
    return {
      pid: started.pid,
      servicePort: started.servicePort,
      qmpSocket: started.monitorSocket,
      disk: this.destPath,
      stop: () =>
        (stopped ??= services
          .abortIncoming(migrationId, { stopRunning: true })
          .then(() => undefined)
          .catch((err: unknown) => {
            if (!(err instanceof WanmigError && err.code === ErrorCode.NotFound)) throw err;
          })),
    };
  }

  /**
   * Runs `step` with a QMP connection to the destination's monitor socket (on this host in the bed), once the
   * stream is loaded there: asked of QEMU directly, so that a test's look inside the pause costs no WAN round trip.
   */
  private async withDestinationQmp(step: (qmp: QmpClient) => Promise<void>): Promise<void> {
    const qmp = await QmpClient.connect(this.incoming!.monitorSocket);
    try {
      await waitUntil(
        async () => {
          const [status, info] = await Promise.all([
            qmp.execute<QmpStatus>('query-status'),
            qmp.execute<QemuMigrationInfo>('query-migrate'),
          ]);
          if (info.status === QemuMigrationStatus.Failed || status.status === 'internal-error') {
            throw this.interrupted('destination-qemu', `incoming ${info.status ?? '?'}, run state ${status.status}`);
          }
          return info.status === QemuMigrationStatus.Completed && status.status === 'paused' ? true : undefined;
        },
        { what: 'the destination to load the stream', timeoutMs: this.timeouts.completionMs, intervalMs: 2 },
      );
      await step(qmp);
    } finally {
      await qmp.close();
    }
  }

  /**
   * Test-only (verifyRamInPause): the guest's RAM at both ends, dumped with `pmemsave` while both are stopped (the
   * source completed, the destination loaded and not yet running), compared by sha256.
   */
  private async compareRam(ramBytes: number): Promise<NonNullable<QemuWanmigResult['ramAtPause']>> {
    const sourceFile = join(this.sourceDir, 'ram.dump');
    const destinationFile = join(this.sourceDir, 'ram-destination.dump');
    await this.sourceQmp!.execute('pmemsave', { val: 0, size: ramBytes, filename: sourceFile });
    await this.withDestinationQmp((qmp) =>
      qmp.execute('pmemsave', { val: 0, size: ramBytes, filename: destinationFile }).then(() => undefined),
    );
    const [sourceSha256, destinationSha256] = await Promise.all([sha256File(sourceFile), sha256File(destinationFile)]);
    await Promise.all([rm(sourceFile, { force: true }), rm(destinationFile, { force: true })]);
    this.log(`RAM at pause: sha256 ${sourceSha256.slice(0, 12)}… / ${destinationSha256.slice(0, 12)}…`);
    return { sourceSha256, destinationSha256, equal: sourceSha256 === destinationSha256, bytes: ramBytes };
  }

  /** The relay's and the destination's last word on the memory stream, once the relay is done (bounded wait). */
  private async memoryOutcome(): Promise<{ relay: QemuRelayStatusReply; incoming: QemuIncomingStatusReply }> {
    const relay = await waitUntil(
      async () => {
        const status = await this.services.relayStatus(this.migrationId);
        return status.done || status.failed ? status : undefined;
      },
      { what: 'the memory relay to finish', timeoutMs: this.timeouts.completionMs, intervalMs: 20 },
    );
    const incoming = await this.services.incomingStatus(this.migrationId);
    return { relay, incoming };
  }

  /** After the switch: the client's view, the figures, and the source side taken down. */
  private async finish(
    partial: Omit<QemuWanmigResult, 'probe' | 'clientPauseMs' | 'wan' | 'sourceStatusAfter' | 'sourceStopped'>,
    wanBefore: { aToB: number; bToA: number },
  ): Promise<QemuWanmigResult> {
    const warnings = partial.warnings;
    const attempt = async (what: string, step: () => Promise<unknown>) => {
      try {
        await step();
      } catch (err) {
        warnings.push(`${what}: ${describe(err)}`);
      }
    };
    const prober = this.prober;
    if (prober) {
      await attempt('the guest to answer at the destination', () =>
        waitUntil(() => prober.answersAfterSwitch > 0, {
          what: 'the guest to answer at the destination',
          timeoutMs: this.timeouts.resumeMs,
          intervalMs: 10,
        }),
      );
    }
    const probe = prober ? await prober.stop() : emptyProbeReport();
    const wanAfter = this.bed.sites.wan.stats();
    const wan = { aToB: wanAfter.aToB - wanBefore.aToB, bToA: wanAfter.bToA - wanBefore.bToA, total: 0 };
    wan.total = wan.aToB + wan.bToA;

    let sourceStatusAfter = 'unknown';
    await attempt('query the source', async () => {
      sourceStatusAfter = (await this.sourceQmp!.execute<QmpStatus>('query-status')).status;
    });
    await attempt('disk.unexport', () => this.disks.unexport(this.exportName));
    const stopSource = this.o.stopSource ?? true;
    if (!this.o.sourceQmp) await attempt('close the source QMP connection', () => this.sourceQmp!.close());
    if (stopSource) await attempt('stop the source QEMU', () => this.source.stop());
    await attempt('remove the source-side dir', () => rm(this.sourceDir, { recursive: true, force: true }));
    for (const warning of warnings) this.log(`warning: ${warning}`);
    return {
      ...partial,
      clientPauseMs: probe.maxGapMs,
      probe,
      wan,
      sourceStatusAfter,
      sourceStopped: stopSource && !this.source.running,
      warnings,
    };
  }

  /** sha256 of both images and the guest's counter file on each (the guest is stopped, the drain done). */
  private async compareDisks(): Promise<NonNullable<QemuWanmigResult['diskAtPause']>> {
    const [sourceSha256, destinationSha256] = await Promise.all([
      sha256File(this.source.disk),
      sha256File(this.destPath),
    ]);
    const counter = (disk: string) => readGuestDiskCounter(disk).catch(() => undefined);
    const [sourceCounter, destinationCounter] = await Promise.all([counter(this.source.disk), counter(this.destPath)]);
    this.log(`at pause: sha256 ${sourceSha256.slice(0, 12)}… / ${destinationSha256.slice(0, 12)}…`);
    return { sourceSha256, destinationSha256, sourceCounter, destinationCounter };
  }

  /** While the memory moves, a disk migration that fails trips the migration. */
  private watchDisk(): void {
    let busy = false;
    this.diskWatch = setInterval(() => {
      if (busy) return;
      busy = true;
      this.disks
        .progress(this.migrationId)
        .then((state) => {
          const failure = DiskPathClient.failureOf(this.migrationId, state);
          if (failure) this.tripwire.fire(failure);
        })
        .catch(() => undefined) // an unanswered poll is no failure: the next one asks again
        .finally(() => (busy = false));
    }, 500);
  }

  private stopWatchingDisk(): void {
    clearInterval(this.diskWatch);
    this.diskWatch = undefined;
  }

  /**
   * While the memory moves, the relay (memory-precopy at A) and the destination (delta-apply at B) are asked how
   * they fare: a failed relay, a destination QEMU that exited or a feed that broke trips the migration.
   */
  private watchMemory(): void {
    let busy = false;
    this.memoryWatch = setInterval(() => {
      if (busy) return;
      busy = true;
      Promise.all([
        this.services.relayStatus(this.migrationId).then((relay) => {
          this.lastRelay = relay;
          if (relay.failed && !relay.closed) {
            this.tripwire.fire(this.interrupted('memory-relay', relay.error?.message ?? 'failed'));
          }
        }),
        this.services.incomingStatus(this.migrationId).then((incoming) => {
          this.lastIncoming = incoming;
          if (incoming.status === 'exited' || incoming.status === 'aborted') {
            this.tripwire.fire(this.interrupted('destination-qemu', `the destination QEMU is ${incoming.status}`));
          } else if (incoming.sink.error) {
            this.tripwire.fire(this.interrupted('memory-sink', incoming.sink.error.message));
          }
        }),
      ])
        .catch(() => undefined) // an unanswered poll is no failure: the next one asks again
        .finally(() => (busy = false));
    }, MEMORY_WATCH_MS);
  }

  private stopWatchingMemory(): void {
    clearInterval(this.memoryWatch);
    this.memoryWatch = undefined;
  }

  /**
   * QEMU's own word for a broken migration is often just "Broken pipe": when it is the one that reported, ask the
   * services what broke first (a destination QEMU that exited, a feed or relay that failed) and say that instead.
   */
  private async explain(err: unknown): Promise<unknown> {
    if (!(err instanceof QemuMigrationFailedError) || !this.incoming) return err;
    const [incoming, relay] = await Promise.all([
      withTimeout(this.services.incomingStatus(this.migrationId), EXPLAIN_TIMEOUT_MS, 'status').catch(() => undefined),
      withTimeout(this.services.relayStatus(this.migrationId), EXPLAIN_TIMEOUT_MS, 'status').catch(() => undefined),
    ]);
    if (incoming?.status === 'exited' || incoming?.status === 'aborted') {
      return this.interrupted('destination-qemu', `the destination QEMU is ${incoming.status} (${err.message})`, err);
    }
    if (incoming?.sink.error) return this.interrupted('memory-sink', incoming.sink.error.message, err);
    if (relay?.failed && !relay.closed) return this.interrupted('memory-relay', relay.error?.message ?? 'failed', err);
    return err;
  }

  private interrupted(what: string, detail: string, cause?: unknown): QemuMigrationInterruptedError {
    return new QemuMigrationInterruptedError({
      migrationId: this.migrationId,
      what,
      detail,
      cause,
      code: cause instanceof WanmigError ? cause.code : undefined,
    });
  }

  /**
   * Undoes a migration that did not switch over. The destination never ran, so the source is authoritative:
   * the destination QEMU goes first (it must never run), then the disk migration is aborted (writes thaw) and the
   * mirror cancelled, then QEMU's migration is cancelled and the source guest resumed if it was left stopped; the
   * destination image is released and deleted, the export removed.
   */
  private async rollBack(cause: unknown): Promise<QemuVmMigrationError> {
    const failedAt = this.stage;
    this.tripwire.disarm();
    this.stopWatchingDisk();
    this.log(`failed at ${failedAt}: ${describe(cause)}; rolling back`);
    const problems: string[] = [];
    const bound = this.timeouts.rollbackMs;
    const attempt = async (what: string, step: () => Promise<unknown>) => {
      try {
        await withTimeout(step(), bound, what);
      } catch (err) {
        problems.push(`${what}: ${describe(err)}`);
      }
    };
    const tolerate =
      (...codes: string[]) =>
      (err: unknown) => {
        if (!(err instanceof WanmigError && codes.includes(err.code))) throw err;
      };

    this.stopWatchingMemory();
    if (this.relayOpened) {
      await attempt('mem.qemu.relay.close', () =>
        this.services.closeRelay(this.migrationId).catch(tolerate(ErrorCode.NotFound)),
      );
    }
    // The destination QEMU goes before the source resumes: it must never run. An abort of one that never started
    // is remembered by delta-apply, so a start still on its way is refused.
    await attempt('mem.qemu.incoming.abort', () =>
      this.services.abortIncoming(this.migrationId).catch(tolerate(ErrorCode.NotFound)),
    );
    if (this.diskStarted) {
      await attempt('disk.abort', () =>
        this.disks.abort(this.migrationId).catch(tolerate(ErrorCode.NotFound, ErrorCode.Conflict)),
      );
    }
    if (this.mirror) await attempt('cancel the mirror', () => this.mirror!.cancel());

    let sourceRunning = false;
    const qmp = this.sourceQmp;
    if (qmp?.isOpen) {
      if (this.migrateStarted) {
        await attempt('migrate_cancel', () => qmp.execute('migrate_cancel'));
        await attempt('wait for the migration to end', () => waitForMigrationIdle(qmp, bound));
      }
      if (this.switchoverCapability) {
        await attempt('pause-before-switchover off', () =>
          qmp.execute('migrate-set-capabilities', {
            capabilities: [{ capability: 'pause-before-switchover', state: false }],
          }),
        );
      }
      await attempt('resume the source guest', async () => {
        const state = this.sourceWasRunning
          ? await ensureRunning(qmp, bound)
          : (await qmp.execute<QmpStatus>('query-status')).status;
        sourceRunning = state === 'running';
        if (this.sourceWasRunning && !sourceRunning) throw new Error(`the source is ${state}`);
      });
    } else if (qmp || this.source.qmpSocket) {
      problems.push('the source QMP connection is closed: the source guest was not checked');
    }

    if (this.diskStarted) {
      await attempt('disk.release', () =>
        this.disks.release(this.migrationId, true).catch(tolerate(ErrorCode.NotFound)),
      );
    }
    if (this.exported) {
      await attempt('disk.unexport', () => this.disks.unexport(this.exportName).catch(tolerate(ErrorCode.NotFound)));
    }
    if (this.prober) await attempt('stop the client', () => this.prober!.stop());
    if (qmp && !this.o.sourceQmp) await attempt('close the source QMP connection', () => qmp.close());
    await attempt('remove the work dirs', async () => {
      await rm(this.sourceDir, { recursive: true, force: true });
      await rm(this.destDir, { recursive: true, force: true });
    });
    for (const problem of problems) this.log(`rollback: ${problem}`);
    return new QemuVmMigrationError({
      migrationId: this.migrationId,
      stage: failedAt,
      rolledBack: problems.length === 0 && (sourceRunning || !this.sourceWasRunning),
      cleanupErrors: problems,
      cause,
    });
  }
}

function qemuFigures(info: QemuMigrationInfo): QemuWanmigResult['qemu'] {
  return {
    totalTimeMs: info['total-time'],
    downtimeMs: info.downtime,
    setupTimeMs: info['setup-time'],
    ramTransferred: info.ram?.transferred,
    ramTotal: info.ram?.total,
    dirtySyncCount: info.ram?.['dirty-sync-count'],
    mbps: info.ram?.mbps,
  };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no outcome within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * QEMU's own `downtime-limit` out of the migration's downtime budget: a third. QEMU stops iterating once what is
 * dirty would go in that time at the rate it measures on our socket, which is the WAN's rate times the relay's
 * compression (2–2.5× on these guests), so its last copy takes longer on the wire than it plans; and the pause also
 * holds the disk's final drain and the destination's activation. Measured with `wanmig bench qemu` (512 MiB guest,
 * 50 ms / 200 Mbit/s): with QEMU given the whole 300 ms, the client saw 1241 ms; with 100 ms, 601 ms.
 */
export function qemuShareOf(downtimeMs: number): number {
  return Math.max(20, Math.round(downtimeMs / 3));
}
