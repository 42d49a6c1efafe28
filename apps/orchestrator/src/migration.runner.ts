/**
 * Drives one migration through its phases. Every step is: read the record, do the phase's work (idempotent: the data
 * plane services key everything on the migration id), then write the next phase. A restarted orchestrator builds a
 * runner for each unfinished record and it picks up from the phase written last: a disk or memory transfer that
 * kept running in its own service is re-attached to, never restarted. A failure before the point of no return (the
 * destination's resume) rolls back; after it, the step is retried with backoff and `stuck` events.
 */
import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  DEFAULT_BLOCK_SIZE,
  DiskPhase,
  DiskTransferVerb,
  DEFAULT_SERVICE_DEADLINE_MS,
  DiskVerb,
  ErrorCode,
  isRetryable,
  isTerminalPhase,
  MemoryPhase,
  MemoryPrecopyVerb,
  MemoryVerb,
  MigrationEventKind,
  MigrationPhase,
  QemuIncomingVerb,
  ServiceName,
  Subjects,
  toWireError,
  VmState,
  VmVerb,
  WanmigError,
  type DiskMigrationReport,
  type DiskProgress,
  type ExportDiskReply,
  type MemoryMigrationReport,
  type MemoryProgress,
  type PhaseChangedData,
  type PrepareDiskReply,
  type ProgressData,
  type ReleaseDiskReply,
  type ReleaseMemoryReply,
  type StuckData,
  type VmDriver,
  type WireError,
} from '@wanmig/protocol';
import { ConcurrentUpdateError, InvalidTransitionError, StaleEpochError } from './errors.js';
import type { MigrationEventPublisher } from './migration.events.js';
import { resumedFigures, switchoverFigures } from './migration.figures.js';
import {
  advanceStep,
  failureStep,
  isPastPointOfNoReturn,
  isRollbackable,
  withError,
  withFigures,
  withResumed,
  type MigrationRecord,
} from './migration.state-machine.js';
import type { MigrationStore } from './migration.store.js';
import { ServiceAbsence } from './service.absence.js';
import {
  destinationRuns,
  MigrationSwitchover,
  natsWitnesses,
  ResumeState,
  settleSwitchover,
  type NetMovedPolicy,
  type SwitchoverWitnesses,
} from './migration.switchover.js';
import { isQemu, type VmInventory } from './vm.inventory.js';

/** Local services answer within milliseconds: poll them rather than trust events that a restart would miss. */
const POLL_MS = 200;
const PROGRESS_EVENT_MS = 1000;
/** Requests that cross the WAN, or create files, get more time than local status polls. */
const REMOTE_TIMEOUT_MS = 30_000;
/** Forward recovery (past the point of no return) and rollback retry with this backoff, capped. */
const RETRY_MS = [500, 1000, 2000, 5000, 10_000];
/** Retries of a failure that may pass by itself (isRetryable) before a migration rolls back. */
const RETRIES_BEFORE_ROLLBACK = 3;
/** How long a rollback waits for the source engines to stop before cleaning the destination anyway. */
const STOP_WAIT_MS = 60_000;

/**
 * Of a migration's budget, what the disk keeps while memory is copied: it only keeps in step then, and a guest that
 * writes faster than this share is throttled by disk-transfer, so the two never add up past the budget.
 */
const DISK_SHARE_DURING_MEMORY = 0.2;

/** The service queries compared at both ends (sim guests): counter, key-value entries, pages. */
export const DEFAULT_PAUSE_QUERIES = ['COUNTER', 'GET k0', 'GET k3', 'GET k42', 'GET k255', 'PAGE 1', 'PAGE 100'];

type DiskState = DiskProgress & { report?: DiskMigrationReport; error?: WireError };
type MemoryState = MemoryProgress & { report?: MemoryMigrationReport; error?: WireError };

export interface RunnerDeps {
  nc: NatsConnection;
  site: string;
  store: MigrationStore;
  events: MigrationEventPublisher;
  inventory: VmInventory;
  /** Controllers that must confirm `net.moved` (the site's configuration). */
  netMoved: NetMovedPolicy;
  /** How long memory-precopy holds the paused switchover for the go before it rolls back. */
  holdTimeoutMs: number;
  log: (line: string) => void;
  warn: (line: string) => void;
}

/** Thrown inside a wait when an abort was written: the loop re-reads the record and rolls back. */
class AbortRequested extends Error {}

const DISK_ORDER: DiskPhase[] = [
  DiskPhase.Preparing,
  DiskPhase.Bulk,
  DiskPhase.CatchUp,
  DiskPhase.Holding,
  DiskPhase.FinalDrain,
  DiskPhase.Verify,
  DiskPhase.Done,
];
const MEMORY_ORDER: MemoryPhase[] = [
  MemoryPhase.Preparing,
  MemoryPhase.Precopy,
  MemoryPhase.StopAndCopy,
  MemoryPhase.Holding,
  MemoryPhase.Resuming,
  MemoryPhase.Done,
];

function diskAtLeast(state: DiskState, phase: DiskPhase): boolean {
  return state.report !== undefined || DISK_ORDER.indexOf(state.phase) >= DISK_ORDER.indexOf(phase);
}
function memoryAtLeast(state: MemoryState, phase: MemoryPhase): boolean {
  return state.report !== undefined || MEMORY_ORDER.indexOf(state.phase) >= MEMORY_ORDER.indexOf(phase);
}

export class MigrationRunner {
  private abortRequested = false;
  private wake?: () => void;
  private lastProgressEvent = 0;
  private disk?: DiskState;
  private memory?: MemoryState;
  private retries = 0;
  /** Retries of a retryable failure before the pause; one budget for the whole migration. */
  private retriesBeforeRollback = 0;
  /** The VM's driver, read once from the inventory (the source lets the VM go at ACTIVATE). */
  private vmDriver?: VmDriver;
  private readonly switchover: MigrationSwitchover;
  /** A local engine killed and restarted by its supervisor is waited for, up to the migration's service deadline. */
  private absent?: ServiceAbsence;

  constructor(
    private readonly d: RunnerDeps,
    readonly id: string,
  ) {
    this.switchover = new MigrationSwitchover({ ...d, update: (change) => this.update(change), warn: d.warn }, id);
  }

  /** The abort is already written (ROLLING_BACK): stop waiting and roll back. */
  requestAbort(): void {
    this.abortRequested = true;
    this.wake?.();
  }

  async run(): Promise<MigrationRecord> {
    for (;;) {
      let record: MigrationRecord;
      try {
        record = (await this.d.store.require(this.id)).record;
      } catch (err) {
        // The KV is this site's own: a failure here is the local server restarting. Wait for it.
        this.d.warn(`migration ${this.id}: record not readable: ${toWireError(err).message}`);
        await this.backoff();
        continue;
      }
      if (isTerminalPhase(record.phase)) return record;
      if (record.phase === MigrationPhase.RollingBack) this.abortRequested = false;
      try {
        await this.step(record);
        this.retries = 0;
      } catch (err) {
        // Someone else moved the record (an abort): read it again and go on from there.
        if (err instanceof StaleEpochError || err instanceof ConcurrentUpdateError) continue;
        if (err instanceof InvalidTransitionError || err instanceof AbortRequested) continue;
        await this.fail(err).catch(async (e: unknown) => {
          this.d.warn(`migration ${this.id}: failure not recorded: ${toWireError(e).message}`);
          await this.backoff();
        });
      }
    }
  }

  private async step(record: MigrationRecord): Promise<void> {
    this.vmDriver ??= (await this.d.inventory.get(record.vmId))?.driver ?? 'sim';
    switch (record.phase) {
      case MigrationPhase.Planned:
        return this.advance(record);
      case MigrationPhase.Preparing:
        await this.prepare(record);
        return this.advance(record);
      case MigrationPhase.DiskBulk:
        await this.startDisk(record);
        await this.waitDisk(record, (s) => diskAtLeast(s, DiskPhase.CatchUp));
        return this.advance(record, `bulk copy of ${this.disk?.sizeBytes ?? 0} bytes sent`);
      case MigrationPhase.DiskCatchup:
        await this.startDisk(record);
        await this.waitDisk(record, (s) => diskAtLeast(s, DiskPhase.Holding));
        return this.advance(record, `disk in step after ${this.disk?.round ?? 0} catch-up rounds`);
      case MigrationPhase.MemPrecopy:
        await this.startMemory(record);
        await this.waitMemory(record, (s) => {
          // The receiving guest runs at the destination from here on: its NIC can be made, off the pause's clock.
          if (s.phase === MemoryPhase.Precopy) this.switchover.prepareNicEarly(record);
          return memoryAtLeast(s, MemoryPhase.StopAndCopy);
        });
        return this.advance(record, `after ${this.memory?.round ?? 0} memory rounds`);
      case MigrationPhase.StopAndCopy: {
        const report = await this.stopAndCopy(record);
        const saved = await this.recordOutcome(record, report);
        const paused = report ? `paused ${report.pausedMs.toFixed(0)} ms; ` : '';
        return this.advance(saved, `${paused}runs at ${saved.figures?.serviceAddress ?? record.toSite}`);
      }
      case MigrationPhase.Redirect: {
        const started = Date.now();
        const note = await this.switchover.redirect(record);
        const saved = await this.update((r) => withFigures(r, { redirectMs: Date.now() - started }, new Date()));
        return this.advance(saved, note);
      }
      case MigrationPhase.Activate:
        await this.activate(record);
        return this.advance(record);
      case MigrationPhase.RollingBack:
        await this.rollBack(record);
        return this.advance(record);
      default:
        return;
    }
  }

  private async advance(record: MigrationRecord, note?: string): Promise<void> {
    const step = advanceStep(record, note);
    const { record: next, changed } = await this.d.store.transition(this.id, step);
    if (!changed) return;
    const data: PhaseChangedData = {
      migrationId: this.id,
      vmId: record.vmId,
      from: record.phase,
      to: next.phase,
      epoch: next.epoch,
      ...(note ? { note } : {}),
    };
    await this.publish(MigrationEventKind.PhaseChanged, data);
    this.d.log(`migration ${this.id} (${record.vmId}): ${record.phase} → ${next.phase}${note ? ` (${note})` : ''}`);
    if (next.phase === MigrationPhase.Committed) {
      await this.publish(MigrationEventKind.Completed, {
        migrationId: this.id,
        vmId: next.vmId,
        figures: next.figures,
      });
    } else if (next.phase === MigrationPhase.RolledBack) {
      await this.publish(MigrationEventKind.RolledBack, { migrationId: this.id, vmId: next.vmId, error: next.error });
    }
  }

  /**
   * Before the point of no return: roll back. From STOP_AND_COPY on, the destination may already run the VM (the go
   * was given): that is found out first, and while nobody can tell, nothing is undone. Past it: keep the error, wait,
   * and go forward again.
   */
  private async fail(err: unknown): Promise<void> {
    const error = toWireError(err);
    let { record } = await this.d.store.require(this.id);
    if (isTerminalPhase(record.phase)) return;
    if (record.phase === MigrationPhase.StopAndCopy && isRollbackable(record)) {
      const state = await settleSwitchover(this.witnesses(record), record.phase);
      if (state === ResumeState.Unknown || state === ResumeState.Resuming) {
        const why =
          state === ResumeState.Resuming
            ? `${record.toSite} is being asked to run the VM: its answer decides`
            : `whether ${record.toSite} runs the VM is unknown`;
        const unknown = {
          code: ErrorCode.Unavailable,
          message: `${error.message}; ${why}, nothing is undone meanwhile (the source stays paused)`,
        };
        return this.retryLater(record, unknown, true);
      }
      if (state === ResumeState.Resumed) record = await this.update((r) => withResumed(r, new Date()));
    }
    // A failure that may pass by itself (no answer in time, a service restarting) before the pause: the step is
    // idempotent, so it is asked again a few times before the migration gives up and rolls back.
    if (beforeTheSwitchover(record.phase) && isRetryable(err) && this.retriesBeforeRollback < RETRIES_BEFORE_ROLLBACK) {
      this.retriesBeforeRollback++;
      return this.retryLater(record, error, false);
    }
    if (record.phase !== MigrationPhase.RollingBack && isRollbackable(record)) {
      const step = failureStep(record, error);
      if (!step) return;
      this.d.warn(`migration ${this.id} failed in ${record.phase}, rolling back: ${error.message}`);
      try {
        await this.d.store.transition(this.id, step);
      } catch (e) {
        if (e instanceof StaleEpochError || e instanceof ConcurrentUpdateError) return;
        throw e;
      }
      await this.publish(MigrationEventKind.Failed, {
        migrationId: this.id,
        vmId: record.vmId,
        phase: record.phase,
        error,
      });
      await this.publish(MigrationEventKind.PhaseChanged, {
        migrationId: this.id,
        vmId: record.vmId,
        from: record.phase,
        to: MigrationPhase.RollingBack,
        epoch: record.epoch + 1,
        note: error.message,
      } satisfies PhaseChangedData);
      return;
    }
    // Forward recovery, or a rollback step that failed: the steps are idempotent, try again.
    return this.retryLater(record, error, isPastPointOfNoReturn(record));
  }

  /** Records the error, waits the next backoff and returns (the loop runs the step again); `stuck` says so first. */
  private async retryLater(record: MigrationRecord, error: WireError, stuck: boolean): Promise<void> {
    const delay = this.nextDelay();
    this.d.warn(`migration ${this.id} in ${record.phase}: ${error.message}; retrying in ${delay} ms`);
    // A rolling back record keeps the error that made it roll back (a service away past the deadline, say): a step
    // of the rollback waiting for that same service says less, and is in the log.
    if (record.phase !== MigrationPhase.RollingBack || !record.error) {
      await this.d.store
        .save(withError(record, error, new Date()), (await this.d.store.require(this.id)).revision)
        .catch(() => undefined);
    }
    if (stuck) {
      const data: StuckData = {
        migrationId: this.id,
        vmId: record.vmId,
        phase: record.phase,
        attempt: this.retries,
        error,
        nextRetryMs: delay,
      };
      await this.publish(MigrationEventKind.Stuck, data);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }

  private nextDelay(): number {
    return RETRY_MS[Math.min(this.retries++, RETRY_MS.length - 1)];
  }

  private async backoff(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, this.nextDelay()));
  }

  /**
   * PREPARING: the destination's image, and the way the disk's writes are tracked: a sim guest's go through its
   * export already (the arriving guest gets one at the destination too); a QEMU VM starts mirroring its writes into
   * an export of its image here.
   */
  private async prepare(record: MigrationRecord): Promise<void> {
    const vm = await this.d.inventory.require(record.vmId);
    if (vm.state !== VmState.Migrating || vm.migrationId !== this.id)
      await this.d.inventory.setMigrating(vm.vmId, this.id);
    const prepared = await callControl<PrepareDiskReply>(
      this.d.nc,
      this.remote(record, ServiceName.DeltaApply, DiskVerb.Prepare),
      { migrationId: this.id, sizeBytes: vm.diskBytes, blockSize: DEFAULT_BLOCK_SIZE },
      REMOTE_TIMEOUT_MS,
    );
    if (isQemu(vm)) {
      await this.d.inventory.qemu.startMirror(vm.vmId, vm.exportName);
      await this.update((r) => ({ ...r, destination: { diskPath: prepared.path } }));
      return;
    }
    const exported = await callControl<ExportDiskReply>(
      this.d.nc,
      this.remote(record, ServiceName.DiskTransfer, DiskTransferVerb.Export),
      { name: record.vmId, imagePath: prepared.path, role: 'serve', port: 0 },
      REMOTE_TIMEOUT_MS,
    );
    await this.update((r) => ({ ...r, destination: { diskPath: prepared.path, diskUri: exported.uri } }));
  }

  private async startDisk(record: MigrationRecord): Promise<void> {
    const vm = await this.d.inventory.require(record.vmId);
    // Asked again during pre-copy (a disk-transfer that lost it), the disk keeps to its share.
    const budget = record.options.bandwidthBps;
    const bandwidthBps = budget && record.phase === MigrationPhase.MemPrecopy ? diskShareOf(budget) : budget;
    await this.absence(record).untilAnswered(ServiceName.DiskTransfer, record.phase, () =>
      callControl(this.d.nc, this.local(ServiceName.DiskTransfer, DiskTransferVerb.Migrate), {
        migrationId: this.id,
        exportName: vm.exportName,
        toSite: record.toSite,
        downtimeMs: record.options.downtimeMs,
        ...(bandwidthBps ? { bandwidthBps } : {}),
        verify: record.options.verify,
        hold: true,
        giveUpAfterMs: this.deadlineMs(record),
      }),
    );
  }

  private async startMemory(record: MigrationRecord): Promise<void> {
    const vm = await this.d.inventory.require(record.vmId);
    // One budget for the whole migration: once the disk only keeps in step, the memory gets most of it.
    const budget = record.options.bandwidthBps;
    const diskShare = budget ? diskShareOf(budget) : undefined;
    if (diskShare) {
      await this.absence(record).untilAnswered(ServiceName.DiskTransfer, record.phase, () =>
        callControl(this.d.nc, this.local(ServiceName.DiskTransfer, DiskTransferVerb.SetBandwidth), {
          migrationId: this.id,
          bandwidthBps: diskShare,
        }).catch((err: unknown) => {
          // Finished already (a restart after the pause): nothing left to share.
          if (!(err instanceof WanmigError && err.code === ErrorCode.Conflict)) throw err;
        }),
      );
    }
    const qemu = isQemu(vm);
    const diskUri = record.destination?.diskUri;
    if (!diskUri && !qemu) throw new WanmigError(ErrorCode.Internal, `migration ${this.id} has no destination disk`);
    const request = {
      migrationId: this.id,
      vmId: record.vmId,
      driver: qemu ? 'qemu' : 'sim',
      toSite: record.toSite,
      policy: record.options.policy,
      codec: true,
      downtimeMs: record.options.downtimeMs,
      ...(budget && diskShare ? { bandwidthBps: budget - diskShare } : {}),
      ...(diskUri ? { diskUri } : {}),
      verifyRam: record.options.verify,
      queriesAtPause: DEFAULT_PAUSE_QUERIES.filter(
        (q) => !q.startsWith('PAGE') || Number(q.split(' ')[1]) * 4096 < vm.ramBytes,
      ),
      diskMigrationId: this.id,
      // The last steps before the point of no return (the route move) are ours: memory-precopy holds for them.
      holdBeforeResume: true,
      holdTimeoutMs: this.d.holdTimeoutMs,
      // The source stays, paused, until ACTIVATE: it is released only once the destination is adopted.
      keepSource: true,
      giveUpAfterMs: this.deadlineMs(record),
    };
    await this.absence(record).untilAnswered(ServiceName.MemoryPrecopy, record.phase, () =>
      callControl(this.d.nc, this.local(ServiceName.MemoryPrecopy, MemoryPrecopyVerb.Migrate), request),
    );
  }

  /**
   * STOP_AND_COPY: memory-precopy pauses the guest, sends the rest, has the destination check it and holds; the route
   * moves and the go lets the destination run the VM, the point of no return. Memory events wake the waits: the
   * pause is not left to the next poll. Once the destination is known to run the VM, memory is never started again
   * (a restarted memory-precopy would start it anew): its report is collected if it still has one.
   */
  private async stopAndCopy(record: MigrationRecord): Promise<MemoryMigrationReport | undefined> {
    if (!record.destination?.resumed && (await this.forgottenButResumed(record)))
      record = await this.update((r) => withResumed(r, new Date()));
    const events = this.d.nc.subscribe(Subjects.memoryEvents(this.id), { callback: () => this.wake?.() });
    try {
      if (!record.destination?.resumed) {
        await this.startMemory(record);
        this.switchover.prepareNicEarly(record);
        await this.waitMemory(record, (s) => s.report !== undefined || s.phase === MemoryPhase.Holding);
        if (this.memory?.report) return this.memory.report;
        await this.switchover.beforeResume(record);
      }
      // The go is given: only memory-precopy's report is awaited (the disk finished in the pause).
      for (;;) {
        const state = await this.pollMemory().catch(notFoundAs(undefined));
        if (!state) return undefined;
        if (state.report) return state.report;
        if (state.error) throw engineFailure('memory', state.error);
        await this.sleep();
      }
    } finally {
      events.unsubscribe();
    }
  }

  /** memory-precopy does not know the migration (restarted) while the destination runs the VM. */
  private async forgottenButResumed(record: MigrationRecord): Promise<boolean> {
    const known = await this.pollMemory().then(
      () => true,
      (err: unknown) => !(err instanceof WanmigError && err.code === ErrorCode.NotFound),
    );
    if (known) return false;
    const state = await destinationRuns(this.witnesses(record));
    if (state === ResumeState.Unknown)
      throw new WanmigError(ErrorCode.Unavailable, `${record.toSite} does not say whether it runs the VM`);
    return state === ResumeState.Resumed;
  }

  private async waitDisk(record: MigrationRecord, done: (state: DiskState) => boolean): Promise<void> {
    for (;;) {
      this.checkAbort();
      const state = await this.watchDisk(record);
      if (state?.error) throw engineFailure('disk', state.error);
      if (state && done(state)) return;
      await this.progressEvent(record);
      await this.sleep();
    }
  }

  private async waitMemory(record: MigrationRecord, done: (state: MemoryState) => boolean): Promise<void> {
    for (;;) {
      this.checkAbort();
      const [memory, disk] = await Promise.all([this.watchMemory(record), this.watchDisk(record)]);
      if (memory?.error) throw engineFailure('memory', memory.error);
      if (disk?.error) throw engineFailure('disk', disk.error);
      if (memory && done(memory)) return;
      await this.progressEvent(record);
      await this.sleep();
    }
  }

  /**
   * undefined while disk-transfer is away (within the service deadline). Before the pause, one restarted without the
   * migration is asked again: it resumes from its persisted state, or copies again.
   */
  private watchDisk(record: MigrationRecord): Promise<DiskState | undefined> {
    const restart = beforePause(record.phase) ? () => this.startDisk(record) : undefined;
    return this.absence(record).progress(ServiceName.DiskTransfer, record.phase, () => this.pollDisk(), restart);
  }

  /** undefined while memory-precopy is away; one restarted in MEM_PRECOPY starts pre-copy again from round 1. */
  private watchMemory(record: MigrationRecord): Promise<MemoryState | undefined> {
    const restart = record.phase === MigrationPhase.MemPrecopy ? () => this.restartMemory(record) : undefined;
    return this.absence(record).progress(ServiceName.MemoryPrecopy, record.phase, () => this.pollMemory(), restart);
  }

  /**
   * Pre-copy again from round 1, only while the source runs: a memory-precopy killed after it paused the guest (the
   * switchover had begun, this runner had not seen it yet) is not a pre-copy to start over.
   */
  private async restartMemory(record: MigrationRecord): Promise<void> {
    const state = await this.d.inventory.runState(record.vmId);
    if (state !== 'running') {
      throw new WanmigError(
        ErrorCode.Conflict,
        `memory: ${ServiceName.MemoryPrecopy} lost migration ${this.id} with ${record.vmId} ${state}: not started again`,
      );
    }
    await this.startMemory(record);
  }

  private absence(record: MigrationRecord): ServiceAbsence {
    this.absent ??= new ServiceAbsence({
      migrationId: this.id,
      site: this.d.site,
      deadlineMs: this.deadlineMs(record),
      log: this.d.warn,
      pause: () => {
        this.checkAbort();
        return this.sleep();
      },
    });
    return this.absent;
  }

  private deadlineMs(record: MigrationRecord): number {
    return record.options.serviceDeadlineMs ?? DEFAULT_SERVICE_DEADLINE_MS;
  }

  /**
   * The destination runs the VM: recorded with the figures in one write. Without memory-precopy's report (it
   * restarted after the resume), the destination's own status says where and when.
   */
  private async recordOutcome(
    record: MigrationRecord,
    report: MemoryMigrationReport | undefined,
  ): Promise<MigrationRecord> {
    if (!report) {
      const figures = resumedFigures(await this.witnesses(record).destinationStatus());
      return this.update((r) => withResumed(withFigures(r, figures, new Date()), new Date()));
    }
    const figures = switchoverFigures(report, this.switchover.routeMovedAt);
    const saved = await this.update((r) => withResumed(withFigures(r, figures, new Date()), new Date()));
    await this.publish(MigrationEventKind.DowntimeMeasured, {
      migrationId: this.id,
      vmId: record.vmId,
      downtimeMs: figures.downtimeMs,
      diskFinalizeMs: figures.diskFinalizeMs,
      ramCheckMs: figures.ramCheckMs,
    });
    return saved;
  }

  // ACTIVATE: the VM runs at the destination; hand it to that site and let the source go. Forward only, idempotent.
  private async activate(record: MigrationRecord): Promise<void> {
    const memory = await callControl<ReleaseMemoryReply>(
      this.d.nc,
      this.remote(record, ServiceName.DeltaApply, MemoryVerb.Release),
      { migrationId: this.id },
      REMOTE_TIMEOUT_MS,
    ).catch(notFoundAs(undefined));
    // A retry finds the RAM released already: its path was kept.
    if (memory?.ramPath && record.destination?.ramPath !== memory.ramPath)
      await this.update((r) => ({ ...r, destination: { ...r.destination, ramPath: memory.ramPath } }));
    const ramPath = memory?.ramPath ?? record.destination?.ramPath;
    const disk = await callControl<ReleaseDiskReply>(
      this.d.nc,
      this.remote(record, ServiceName.DeltaApply, DiskVerb.Release),
      { migrationId: this.id },
      REMOTE_TIMEOUT_MS,
    ).catch(notFoundAs(undefined));
    const vm = await this.d.inventory.get(record.vmId);
    const diskPath = disk?.path ?? record.destination?.diskPath;
    if (!diskPath) throw new WanmigError(ErrorCode.Internal, `migration ${this.id}: destination image unknown`);
    // A retry after the source let go finds no VM here: the destination adopted it already (its answer is the same).
    const qemu = vm && isQemu(vm) ? { driver: 'qemu', machine: await this.d.inventory.qemu.machine(vm.vmId) } : {};
    await callControl(
      this.d.nc,
      this.remote(record, ServiceName.Orchestrator, VmVerb.Adopt),
      {
        vmId: record.vmId,
        migrationId: this.id,
        ramBytes: vm?.ramBytes ?? record.figures?.ramBytes,
        diskBytes: vm?.diskBytes ?? record.figures?.diskBytes,
        workload: vm?.workload ?? 'idle',
        ...qemu,
        ...(vm?.addresses?.length ? { addresses: vm.addresses } : {}),
        diskPath,
        ...(ramPath ? { ramPath } : {}),
      },
      REMOTE_TIMEOUT_MS,
    );
    await this.d.inventory.releaseMoved(record.vmId);
    const totalSeconds = (Date.now() - Date.parse(record.createdAt)) / 1000;
    await this.update((r) => withFigures(r, { totalSeconds }, new Date()));
  }

  // ROLLING_BACK: the source keeps (or gets back) its VM; everything made at the destination goes.
  private async rollBack(record: MigrationRecord): Promise<void> {
    await this.stopEngine(ServiceName.MemoryPrecopy, MemoryPrecopyVerb.Abort, () => this.pollMemory());
    await this.stopEngine(ServiceName.DiskTransfer, DiskTransferVerb.Abort, () => this.pollDisk());
    // The destination first: a source left paused (a resume whose outcome nobody could tell) may run again only
    // once the destination has stopped its copy. If the destination cannot be reached, this step fails and is
    // retried, and the source stays paused: never two copies of the VM running.
    await callControl(
      this.d.nc,
      this.remote(record, ServiceName.DeltaApply, MemoryVerb.Release),
      { migrationId: this.id, deleteRam: true },
      REMOTE_TIMEOUT_MS,
    ).catch(notFoundAs(undefined));
    const vm = await this.d.inventory.get(record.vmId);
    if (vm && isQemu(vm)) {
      // memory-precopy stops it on its own rollback; one that was away never did.
      await callControl(
        this.d.nc,
        this.remote(record, ServiceName.DeltaApply, QemuIncomingVerb.Abort),
        { migrationId: this.id },
        REMOTE_TIMEOUT_MS,
      ).catch(notFoundAs(undefined));
    }
    if (record.destination?.diskUri) {
      await callControl(this.d.nc, this.remote(record, ServiceName.DiskTransfer, DiskTransferVerb.Unexport), {
        name: record.vmId,
      }).catch(notFoundAs(undefined));
    }
    await callControl(
      this.d.nc,
      this.remote(record, ServiceName.DeltaApply, DiskVerb.Release),
      { migrationId: this.id, deleteImage: true },
      REMOTE_TIMEOUT_MS,
    ).catch(notFoundAs(undefined));
    // The source VM must run whatever happened above: a guest left paused is resumed. A QEMU VM's disk stops being
    // mirrored first (its writes then go only to its own image). A guest that lives and does not run yet fails this
    // step, which is tried again: ROLLED_BACK says the source runs. Only one whose process ended is let be.
    if (vm) {
      if (isQemu(vm)) await this.d.inventory.qemu.stopMirror(vm.vmId, vm.exportName);
      if ((await this.d.inventory.ensureRunning(record.vmId)) === 'gone')
        this.d.warn(`migration ${this.id}: source VM ${record.vmId} has ended: nothing to resume`);
      if (vm.state === VmState.Migrating && vm.migrationId === this.id)
        await this.d.inventory.setMigrating(record.vmId, undefined);
      if (vm.addresses?.length) await this.switchover.rollBack(record, vm.addresses);
    }
  }

  /** Asks a source engine to stop and waits until it has (its own rollback done), or it never ran. */
  private async stopEngine(
    service: ServiceName,
    verb: string,
    poll: () => Promise<{ report?: unknown; error?: WireError }>,
  ): Promise<void> {
    const known = await callControl(this.d.nc, this.local(service, verb), { migrationId: this.id }).then(
      () => true,
      (err: unknown) => {
        if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return false;
        // CONFLICT: it finished; disk-transfer thaws a kept-frozen disk on abort, so only a clean finish lands here.
        if (err instanceof WanmigError && err.code === ErrorCode.Conflict) return true;
        throw err;
      },
    );
    if (!known) return;
    const deadline = Date.now() + STOP_WAIT_MS;
    while (Date.now() < deadline) {
      const state = await poll().catch(notFoundAs(undefined));
      if (!state || state.error || state.report) return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    throw new WanmigError(
      ErrorCode.Unavailable,
      `${service} did not stop migration ${this.id} within ${STOP_WAIT_MS} ms`,
    );
  }

  private async pollDisk(): Promise<DiskState> {
    this.disk = await callControl<DiskState>(
      this.d.nc,
      this.local(ServiceName.DiskTransfer, DiskTransferVerb.Progress),
      {
        migrationId: this.id,
      },
    );
    return this.disk;
  }

  private async pollMemory(): Promise<MemoryState> {
    this.memory = await callControl<MemoryState>(
      this.d.nc,
      this.local(ServiceName.MemoryPrecopy, MemoryPrecopyVerb.Progress),
      { migrationId: this.id },
    );
    return this.memory;
  }

  private async progressEvent(record: MigrationRecord): Promise<void> {
    if (Date.now() - this.lastProgressEvent < PROGRESS_EVENT_MS) return;
    this.lastProgressEvent = Date.now();
    const data: ProgressData = {
      migrationId: this.id,
      vmId: record.vmId,
      phase: record.phase,
      ...(this.disk ? { disk: stripReport(this.disk) } : {}),
      ...(this.memory ? { memory: stripReport(this.memory) } : {}),
    };
    await this.publish(MigrationEventKind.Progress, data);
  }

  /** Events never decide the migration: a publish that fails is logged, the migration goes on. */
  private async publish(kind: MigrationEventKind, data: object): Promise<void> {
    try {
      await this.d.events.publish(kind, this.id, data);
    } catch (err) {
      this.d.warn(`migration ${this.id}: event ${kind} not published: ${toWireError(err).message}`);
    }
  }

  /** Read-modify-write of fields that are not a transition (figures, destination), retried on a lost race. */
  private async update(change: (record: MigrationRecord) => MigrationRecord): Promise<MigrationRecord> {
    for (let attempt = 1; ; attempt++) {
      const stored = await this.d.store.require(this.id);
      try {
        return (await this.d.store.save(change(stored.record), stored.revision)).record;
      } catch (err) {
        if (!(err instanceof ConcurrentUpdateError) || attempt >= 5) throw err;
      }
    }
  }

  private checkAbort(): void {
    if (this.abortRequested) throw new AbortRequested();
  }

  private sleep(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, POLL_MS);
      this.wake = done;
    });
  }

  private witnesses(record: MigrationRecord): SwitchoverWitnesses {
    return natsWitnesses(this.d.nc, this.d.site, record, this.vmDriver);
  }

  private local(service: ServiceName, verb: string): string {
    return controlSubject(this.d.site, service, verb);
  }

  private remote(record: MigrationRecord, service: ServiceName, verb: string): string {
    return controlSubject(record.toSite, service, verb);
  }
}

function diskShareOf(budget: number): number {
  return Math.max(1, Math.floor(budget * DISK_SHARE_DURING_MEMORY));
}

/** Phases whose steps may be asked again after a failure that may pass: the pause has not begun. */
function beforeTheSwitchover(phase: MigrationPhase): boolean {
  const phases: MigrationPhase[] = [MigrationPhase.Preparing, ...BEFORE_PAUSE];
  return phases.includes(phase);
}

const BEFORE_PAUSE: MigrationPhase[] = [MigrationPhase.DiskBulk, MigrationPhase.DiskCatchup, MigrationPhase.MemPrecopy];

/** Phases in which the source has not paused: an engine that lost the migration may simply be asked again. */
function beforePause(phase: MigrationPhase): boolean {
  return BEFORE_PAUSE.includes(phase);
}

/**
 * An engine that reports a failure has ended its part of the migration (rolled back its side): asking the same
 * engine again would only read the same failure, so it is not retried; the migration rolls back.
 */
function engineFailure(engine: 'disk' | 'memory', error: WireError): WanmigError {
  return new WanmigError(error.code, `${engine}: ${error.message}`, { retryable: false });
}

function notFoundAs<T>(value: T): (err: unknown) => T {
  return (err: unknown) => {
    if (err instanceof WanmigError && err.code === ErrorCode.NotFound) return value;
    throw err;
  };
}

function stripReport<T extends { report?: unknown; error?: unknown }>(state: T): Omit<T, 'report' | 'error'> {
  const { report: _report, error: _error, ...rest } = state;
  return rest;
}
