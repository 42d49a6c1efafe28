import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { QmpClient, startDiskMirror, type DiskMirror, type QmpStatus } from '@wanmig/hypervisor';
import { ErrorCode, WanmigError } from '@wanmig/protocol';
import { recommendedWindowBytes, TokenBucket, type StreamSender } from '@wanmig/stream';
import {
  bootGuest,
  GUEST_DISK_NODE,
  readGuestDiskCounter,
  sha256File,
  Site,
  waitUntil,
  type GuestHandle,
  type LocalBed,
} from '@wanmig/testing';
import { QemuMigrationSink } from '../../../delta-apply/src/qemu/index.js';
import {
  configureQemuMigration,
  openQemuStreamSender,
  QemuMigrationSource,
  QemuMigrationStatus,
  startQemuMigration,
  type QemuMigrationInfo,
} from '../../../memory-precopy/src/qemu/index.js';
import { CounterProber } from './counter.prober.js';
import { DiskPathClient } from './disk-path.client.js';
import { FailureTripwire } from './failure.tripwire.js';
import { QemuMigrationInterruptedError, QemuMigrationStage, QemuVmMigrationError } from './qemu-migration.errors.js';
import {
  completedFigures,
  connectQmpWhenUp,
  ensureRunning,
  POSTCOPY_ACTIVE,
  PRE_SWITCHOVER,
  waitForIncomingLoaded,
  waitForMigrationIdle,
  waitForMigrationStatus,
} from './qemu-status.waits.js';
import {
  ASSUMED_LINK_BPS,
  DEFAULT_QEMU_DOWNTIME_MS,
  DEFAULT_QEMU_MIGRATION_TIMEOUTS,
  DISK_SHARE_DURING_MEMORY,
  type QemuWanmigOptions,
  type QemuWanmigResult,
} from './qemu-migration.types.js';

export * from './qemu-migration.types.js';
export { QemuMigrationInterruptedError, QemuMigrationStage, QemuVmMigrationError } from './qemu-migration.errors.js';

const MiB = 2 ** 20;

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
  private mirror?: DiskMirror;
  private destination?: GuestHandle;
  private destQmp?: QmpClient;
  private ncB?: NatsConnection;
  private sink?: QemuMigrationSink;
  private sender?: StreamSender;
  private relay?: QemuMigrationSource;
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
      memoryBytes: () => this.relay?.progress.qemuBytes ?? 0,
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
      const ramMiB = Math.round(memory['base-memory'] / MiB);
      this.prober = new CounterProber(this.source.servicePort, { intervalMs: this.o.probeIntervalMs });
      this.prober.start();

      // a. Disk: export, mirror, held migration until it keeps the destination in step.
      this.enter(QemuMigrationStage.DiskExport);
      const exported = await this.disks.exportMirrorTarget(this.exportName, this.source.disk);
      this.exported = true;
      const uri = new URL(exported.uri);
      this.enter(QemuMigrationStage.DiskMirror);
      this.mirror = await startDiskMirror(sourceQmp, {
        device: GUEST_DISK_NODE,
        nbd: { host: uri.hostname, port: Number(uri.port) },
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
      const rttStart = performance.now();
      await this.disks.destinationStatus(migrationId);
      const rttMs = performance.now() - rttStart;

      // b. Destination QEMU on the destination image, paused after the incoming migration (-S); the relay.
      this.enter(QemuMigrationStage.Destination);
      const destQmpSocket = join(this.destDir, 'qmp.sock');
      const incomingSocket = join(this.destDir, 'incoming.sock');
      const migrateSocket = join(this.sourceDir, 'migrate.sock');
      this.destination = await bootGuest({
        ...this.o.destination,
        disk: this.destPath,
        diskMode: 'in-place',
        ramMiB,
        qmpSocket: destQmpSocket,
        waitForReady: false,
        extraArgs: ['-incoming', `unix:${incomingSocket}`, '-S'],
      });
      this.destQmp = await connectQmpWhenUp(destQmpSocket, this.timeouts.rollbackMs);
      const destQmp = this.destQmp;
      this.tripwire.watch(destQmp.closed, ({ value }) =>
        this.interrupted('destination-qemu', value?.message ?? 'closed'),
      );
      const incoming = await destQmp.execute<QmpStatus>('query-status');
      if (incoming.status !== 'inmigrate') {
        throw this.interrupted('destination-qemu', `expected inmigrate, found ${incoming.status}`);
      }
      await destQmp.execute('migrate-set-capabilities', {
        capabilities: [
          { capability: 'events', state: true },
          { capability: 'postcopy-ram', state: postcopyAfterMs !== undefined },
        ],
      });
      this.ncB = await connect({ servers: this.bed.sites.b.url });
      this.sink = await QemuMigrationSink.start({
        nc: this.ncB,
        migrationId,
        socketPath: incomingSocket,
        returnPath: postcopyAfterMs !== undefined,
      });
      this.tripwire.watch(this.sink.done, ({ error }) =>
        error === undefined ? undefined : this.interrupted('memory-sink', describe(error), error),
      );
      const memoryRate = budget ? (budget * (1 - DISK_SHARE_DURING_MEMORY)) / 8 : undefined;
      const windowBytes = this.o.windowBytes ?? recommendedWindowBytes(memoryRate ?? ASSUMED_LINK_BPS / 8, rttMs);
      this.sender = await openQemuStreamSender({
        nc: this.bed.nc,
        migrationId,
        windowBytes,
        limiter: memoryRate ? new TokenBucket(memoryRate) : undefined,
      });
      this.relay = await QemuMigrationSource.listen({
        migrationId,
        socketPath: migrateSocket,
        sender: this.sender,
        returnPath: postcopyAfterMs === undefined ? undefined : { nc: this.bed.nc },
      });
      this.tripwire.watch(this.relay.done, ({ error }) =>
        error === undefined ? undefined : this.interrupted('memory-relay', describe(error), error),
      );
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
      await this.tripwire.guard(startQemuMigration(sourceQmp, migrateSocket));
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
        if (this.postcopy) {
          // Post-copy: the destination may run once it holds the device state; pages follow, or are asked for.
          await waitForMigrationStatus(sourceQmp, [POSTCOPY_ACTIVE, QemuMigrationStatus.Completed], {
            migrationId,
            timeoutMs: this.timeouts.completionMs,
          });
          completedAt = performance.now();
          await waitForIncomingLoaded(destQmp, { migrationId, timeoutMs: this.timeouts.completionMs, postcopy: true });
          return undefined;
        }
        await waitForMigrationStatus(sourceQmp, [QemuMigrationStatus.Completed], {
          migrationId,
          timeoutMs: this.timeouts.completionMs,
        });
        completedAt = performance.now();
        await waitForIncomingLoaded(destQmp, { migrationId, timeoutMs: this.timeouts.completionMs });
        // The destination loaded the whole stream: the sink's End is written. The relay's own end (the ack
        // crossing back) is not waited for before the destination runs.
        return withTimeout(this.sink!.done, this.timeouts.completionMs, 'the memory sink');
      };
      // In post-copy the memory side is the whole remaining RAM at full pace: the disk's drain goes first, alone.
      const [report] = this.postcopy
        ? [await this.tripwire.guard(diskSide()), await this.tripwire.guard(memorySide())]
        : await this.tripwire.guard(Promise.all([diskSide(), memorySide()]));
      const bothAt = performance.now();
      const atPause = verify ? await this.compareDisks() : undefined;
      const verifiedAt = performance.now();

      this.enter(QemuMigrationStage.Activate);
      if (this.o.beforeCont) await this.tripwire.guard(this.o.beforeCont(destQmp));
      await this.tripwire.guard(destQmp.execute('cont'));
      const activatedAt = performance.now();
      this.prober.switchTo(this.destination.servicePort);
      // From here on only forward: the destination runs.
      this.tripwire.disarm();
      if (this.postcopy) {
        // The rest of the memory arrives while the guest runs at B; a failure now cannot be rolled back.
        await waitForMigrationStatus(sourceQmp, [QemuMigrationStatus.Completed], {
          migrationId,
          timeoutMs: this.timeouts.memoryMs,
        });
      }
      const relayed = await withTimeout(this.relay.done, this.timeouts.completionMs, 'the memory relay');
      const delivered = await withTimeout(this.sink.done, this.timeouts.completionMs, 'the memory sink');
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
          relay: relayed,
          sink: delivered,
          senderBytes: this.sender.stats.bytesSent,
          resentBytes: this.sender.stats.resentBytes,
          windowBytes,
        },
        postcopy: this.postcopy,
        diskEqualAtPause: atPause ? atPause.sourceSha256 === atPause.destinationSha256 : undefined,
        diskAtPause: atPause,
        warnings: [],
      };
    } catch (err) {
      throw await this.rollBack(err);
    }
    return this.finish(result, wanBefore);
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
    const prober = this.prober!;
    await attempt('the guest to answer at the destination', () =>
      waitUntil(() => prober.answersAfterSwitch > 0, {
        what: 'the guest to answer at the destination',
        timeoutMs: this.timeouts.resumeMs,
        intervalMs: 10,
      }),
    );
    const probe = await prober.stop();
    const wanAfter = this.bed.sites.wan.stats();
    const wan = { aToB: wanAfter.aToB - wanBefore.aToB, bToA: wanAfter.bToA - wanBefore.bToA, total: 0 };
    wan.total = wan.aToB + wan.bToA;

    let sourceStatusAfter = 'unknown';
    await attempt('query the source', async () => {
      sourceStatusAfter = (await this.sourceQmp!.execute<QmpStatus>('query-status')).status;
    });
    await attempt('stop the memory sink', () => this.sink!.stop());
    await attempt('close the NATS connection at site B', () => this.ncB!.close());
    await attempt('close the destination QMP connection', () => this.destQmp!.close());
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

    if (this.relay) await attempt('close the memory relay', () => this.relay!.close());
    if (this.sink) await attempt('stop the memory sink', () => this.sink!.stop());
    if (this.destQmp) await attempt('close the destination QMP connection', () => this.destQmp!.close());
    if (this.destination) await attempt('stop the destination QEMU', () => this.destination!.stop());
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
    if (this.ncB) await attempt('close the NATS connection at site B', () => this.ncB!.close());
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
