import type { NatsConnection } from '@nats-io/nats-core';
import {
  configureQemuMigration,
  connectQemuVm,
  ensureRunning,
  findDiskMirror,
  PRE_SWITCHOVER,
  QemuMigrationStatus,
  readQemuVmSpec,
  startQemuMigration,
  waitForMigrationIdle,
  type QemuMigrationInfo,
  type QmpClient,
  type QmpStatus,
} from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DEFAULT_HOLD_TIMEOUT_MS,
  ErrorCode,
  MemoryPhase,
  PolicyKind,
  QemuIncomingVerb,
  ServiceName,
  StopReason,
  WanmigError,
  type DiskMigrationReport,
  type MemoryMigrationReport,
  type MemoryProgress,
  type QemuIncomingStatusReply,
  type RoundSample,
  type QemuRelayStatusReply,
  type ResumeQemuReply,
  type StartQemuIncomingReply,
} from '@wanmig/protocol';
import { MemoryAbortedError, MemoryHoldTimeoutError } from '../errors.js';
import { SwitchoverGate } from '../switchover.gate.js';
import type { QemuRelayRegistry } from './qemu-relay.registry.js';

const POLL_MS = 100;
/** The destination's status crosses the WAN: asked less often while pre-copy runs. */
const DESTINATION_POLL_MS = 1000;
const REMOTE_TIMEOUT_MS = 30_000;
/** Bound on QEMU's last pages and device state reaching the relay once it is told to continue. */
const COMPLETION_TIMEOUT_MS = 120_000;
/** Bound on each rollback step (cancel, resume). */
const ROLLBACK_STEP_MS = 15_000;
/** How long QEMU's migration may run before it counts as not converging (auto-converge throttles long before). */
const PRECOPY_TIMEOUT_MS = 30 * 60_000;

export interface QemuMemoryMigrationOptions {
  migrationId: string;
  nc: NatsConnection;
  destSite: string;
  vmId: string;
  /** The site's runtime dir: the VM's monitor and spec are found there by its id. */
  runtimeDir: string;
  relays: QemuRelayRegistry;
  downtimeMs: number;
  bandwidthBps?: number;
  holdBeforeResume?: boolean;
  holdTimeoutMs?: number;
  /** The disk's final drain, in the pause, once the mirror has stopped (see MemoryMigrationOptions.whilePaused). */
  whilePaused?: () => Promise<DiskMigrationReport | void>;
  afterRollBack?: () => Promise<void>;
  onProgress?: (progress: MemoryProgress) => void;
  onResumed?: (destination: { serviceAddress: string; resumedAt: number }) => void;
}

/**
 * The memory of a QEMU VM, moved by QEMU itself: it migrates into this service's relay (its stream crosses the WAN
 * in frames with digests, delta-apply feeds it to the destination QEMU it started), with auto-converge and
 * `pause-before-switchover`. In the pause: the disk's mirror is checked whole and cancelled, the disk's final drain
 * and QEMU's last pages go side by side, the destination proves it holds QEMU's exact stream (its digests), then
 * (held: the caller's go) it runs the VM. The same verbs, phases and report as the sim engine; any failure before
 * the destination runs cancels QEMU's migration and the source runs on.
 */
export class QemuMemoryMigration {
  private readonly gate = new SwitchoverGate();
  private phase: MemoryPhase = MemoryPhase.Preparing;
  private started = performance.now();
  private aborted = false;
  private info?: QemuMigrationInfo;
  private relay?: QemuRelayStatusReply;
  private incoming?: StartQemuIncomingReply;
  private lastEmit = 0;
  private wake?: () => void;
  /** QEMU's rounds as this side sees them: one each time its dirty-sync count moves (polled, so approximate). */
  private readonly rounds: RoundSample[] = [];
  private roundStart?: { at: number; raw: number; wire: number; pages: number; sync: number };
  /** Rejects on abort: what the pause waits on (the disk's verify above all) gives way at once, not when it ends. */
  private readonly aborting: Promise<never>;
  private abortWith?: (err: Error) => void;

  constructor(private readonly o: QemuMemoryMigrationOptions) {
    this.aborting = new Promise<never>((_resolve, reject) => (this.abortWith = reject));
    this.aborting.catch(() => undefined);
  }

  get migrationId(): string {
    return this.o.migrationId;
  }

  get canAbort(): boolean {
    return this.phase !== MemoryPhase.Resuming && this.phase !== MemoryPhase.Done;
  }

  abort(): boolean {
    if (!this.canAbort) return false;
    this.aborted = true;
    const err = new MemoryAbortedError(this.o.migrationId, this.phase);
    this.gate.close(err);
    this.abortWith?.(err);
    this.wake?.();
    return true;
  }

  proceed(): boolean {
    if (this.gate.opened) return true;
    if (this.phase !== MemoryPhase.Holding || this.aborted || !this.gate.open()) return false;
    this.phase = MemoryPhase.Resuming;
    return true;
  }

  progress(): MemoryProgress {
    const ram = this.info?.ram;
    return {
      migrationId: this.o.migrationId,
      phase: this.phase,
      round: ram?.['dirty-sync-count'] ?? 0,
      ramBytes: ram?.total ?? 0,
      dirtyBytes: ram?.remaining ?? 0,
      rawBytesSent: this.relay?.qemuBytes ?? 0,
      frameBytesSent: this.relay?.senderBytes ?? 0,
      throttlePercent: this.info?.['cpu-throttle-percentage'] ?? 0,
      elapsedSeconds: (performance.now() - this.started) / 1000,
    };
  }

  async run(): Promise<MemoryMigrationReport> {
    this.started = performance.now();
    const qmp = await connectQemuVm(this.o.runtimeDir, this.o.vmId);
    const state = { migrating: false, wasRunning: false, finalizing: false, resumeAsked: false };
    try {
      const report = await this.execute(qmp, state);
      this.phase = MemoryPhase.Done;
      this.emit(true);
      return report;
    } catch (err) {
      // Asked to resume and no clear answer: the destination may run the VM. Nothing is undone (see sim engine).
      if (!state.resumeAsked) await this.rollBack(qmp, state);
      if (this.aborted && !(err instanceof MemoryAbortedError))
        throw new MemoryAbortedError(this.o.migrationId, this.phase);
      throw err;
    } finally {
      await qmp.close().catch(() => undefined);
    }
  }

  private async execute(
    qmp: QmpClient,
    state: { migrating: boolean; wasRunning: boolean; finalizing: boolean; resumeAsked: boolean },
  ): Promise<MemoryMigrationReport> {
    const { nc, migrationId, destSite } = this.o;
    const spec = await readQemuVmSpec(this.o.runtimeDir, this.o.vmId);
    state.wasRunning = (await qmp.execute<QmpStatus>('query-status')).running;
    const subject = (verb: QemuIncomingVerb) => controlSubject(destSite, ServiceName.DeltaApply, verb);

    // The destination QEMU, on the image delta-apply holds for this migration, waiting on -incoming.
    this.incoming = await callControl<StartQemuIncomingReply>(
      nc,
      subject(QemuIncomingVerb.Start),
      {
        migrationId,
        ramMiB: spec.ramMiB,
        kernel: spec.kernel,
        initrd: spec.initrd,
        append: spec.append,
        machine: spec.machine,
        accel: spec.accel,
        cpus: spec.cpus,
        guestPort: spec.guestPort,
      },
      REMOTE_TIMEOUT_MS,
    );
    this.check();
    const relay = await this.o.relays.open({
      migrationId,
      ...(this.o.bandwidthBps ? { bandwidthBps: Math.round(this.o.bandwidthBps) } : {}),
      returnPath: false,
    });
    this.check();
    await configureQemuMigration(qmp, { downtimeLimitMs: qemuShareOf(this.o.downtimeMs), autoConverge: true });
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'pause-before-switchover', state: true }],
    });
    this.phase = MemoryPhase.Precopy;
    this.emit(true);
    state.migrating = true;
    await startQemuMigration(qmp, relay.socketPath);

    // QEMU's pre-copy, paced by the relay, until it stops the guest and waits at pre-switchover.
    const precopyDeadline = performance.now() + PRECOPY_TIMEOUT_MS;
    let lastDestinationLook = 0;
    for (;;) {
      this.check();
      this.info = await qmp.execute<QemuMigrationInfo>('query-migrate');
      this.relay = this.o.relays.status({ migrationId });
      this.sampleRound();
      const status = this.info.status;
      if (status === PRE_SWITCHOVER) break;
      if (status === QemuMigrationStatus.Failed || status === QemuMigrationStatus.Cancelled) {
        throw new WanmigError(ErrorCode.Unavailable, await this.whyFailed(`QEMU's migration ${status}`));
      }
      if (this.relay.failed) {
        throw new WanmigError(ErrorCode.Unavailable, `relay: ${this.relay.error?.message ?? 'failed'}`);
      }
      if (performance.now() - lastDestinationLook > DESTINATION_POLL_MS) {
        lastDestinationLook = performance.now();
        this.checkDestination(await this.destinationStatus());
      }
      if (performance.now() > precopyDeadline) {
        throw new WanmigError(ErrorCode.Unavailable, `QEMU's pre-copy did not converge in ${PRECOPY_TIMEOUT_MS} ms`);
      }
      this.emit();
      await this.sleep(POLL_MS);
    }
    const precopySeconds = (performance.now() - this.started) / 1000;

    // The guest is stopped. The disk first: every write it made went through the write-blocking mirror into the
    // export's dirty map; a mirror that is gone (it failed) lost some, and the migration cannot go on.
    this.phase = MemoryPhase.StopAndCopy;
    this.emit(true);
    const pausedAt = performance.now();
    const pausedAtEpoch = Date.now();
    let finalizing: Promise<DiskMigrationReport | undefined> | undefined;
    let diskFinalizeMs: number | undefined;
    if (this.o.whilePaused) {
      const found = await findDiskMirror(qmp, spec.diskNode);
      if (!found?.ready) {
        throw new WanmigError(
          ErrorCode.Unavailable,
          found
            ? `the disk mirror is ${found.status}, not ready: writes may not have reached the export`
            : 'the disk mirror stopped before the pause: writes may not have reached the export',
        );
      }
      await found.mirror.cancel();
      const start = performance.now();
      state.finalizing = true;
      finalizing = this.o.whilePaused().then((report) => {
        diskFinalizeMs = performance.now() - start;
        return report ?? undefined;
      });
      finalizing.catch(() => undefined);
    }
    await qmp.execute('migrate-continue', { state: PRE_SWITCHOVER });
    const completed = this.untilCompleted(qmp);
    const [disk] = await Promise.race([Promise.all([finalizing, completed]), this.aborting]);
    // The destination holds QEMU's exact stream (every digest segment matched, the last with the End) and loaded it.
    const loaded = await this.untilLoaded();
    const checkedAt = performance.now();

    let holdMs: number | undefined;
    if (this.o.holdBeforeResume) {
      this.phase = MemoryPhase.Holding;
      this.emit(true);
      const holdStart = performance.now();
      const timeoutMs = this.o.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS;
      await this.gate.wait(timeoutMs, () => new MemoryHoldTimeoutError(migrationId, timeoutMs));
      holdMs = performance.now() - holdStart;
    }
    this.phase = MemoryPhase.Resuming;
    this.emit(true);
    state.resumeAsked = true;
    const resumed = await callControl<ResumeQemuReply>(
      nc,
      subject(QemuIncomingVerb.Resume),
      { migrationId, loadTimeoutMs: COMPLETION_TIMEOUT_MS },
      REMOTE_TIMEOUT_MS,
    );
    const pausedMs = performance.now() - pausedAt;
    const serviceAddress = `127.0.0.1:${this.incoming.servicePort}`;
    this.o.onResumed?.({ serviceAddress, resumedAt: resumed.resumedAt });
    const info = this.info;
    const relayEnd = this.o.relays.status({ migrationId });
    return {
      migrationId,
      policy: PolicyKind.Smart,
      codec: true,
      ramBytes: info?.ram?.total ?? spec.ramMiB * 2 ** 20,
      rounds: this.rounds,
      stopReason: StopReason.FitsBudget,
      estimatedDowntimeMs: info?.['expected-downtime'] ?? 0,
      throttlePercent: info?.['cpu-throttle-percentage'] ?? 0,
      finalPages: 0,
      deviceStateBytes: 0,
      rawBytesSent: relayEnd.qemuBytes,
      frameBytesSent: relayEnd.senderBytes,
      resentBytes: relayEnd.resentBytes,
      byEncoding: {},
      pausedMs,
      pausedAt: pausedAtEpoch,
      ...(holdMs !== undefined ? { holdMs } : {}),
      precopySeconds,
      totalSeconds: (performance.now() - this.started) / 1000,
      destination: { serviceAddress, resumedAt: resumed.resumedAt },
      // QEMU's stream is checked end to end by its digests: the destination runs exactly what the source sent.
      ramVerified: loaded.sink.endVerified,
      ramCheckMs: Math.round(checkedAt - pausedAt),
      answersAtPause: {},
      answersAtDestination: {},
      ...(disk ? { disk, diskFinalizeMs } : {}),
    };
  }

  private sampleRound(): void {
    const ram = this.info?.ram;
    if (!ram || !this.relay) return;
    const now = { at: performance.now(), raw: this.relay.qemuBytes, wire: this.relay.senderBytes, pages: ram.normal };
    const sync = ram['dirty-sync-count'];
    if (!this.roundStart) {
      this.roundStart = { ...now, sync };
      return;
    }
    if (sync === this.roundStart.sync) return;
    const start = this.roundStart;
    this.rounds.push({
      round: this.rounds.length + 1,
      dirtyBytes: ram.remaining,
      rawBytes: now.raw - start.raw,
      wireBytes: now.wire - start.wire,
      seconds: (now.at - start.at) / 1000,
      zeroRawBytes: 0,
      resentPages: 0,
      pages: now.pages - start.pages,
    });
    this.roundStart = { ...now, sync };
  }

  private async untilCompleted(qmp: QmpClient): Promise<void> {
    const deadline = performance.now() + COMPLETION_TIMEOUT_MS;
    for (;;) {
      this.check();
      this.info = await qmp.execute<QemuMigrationInfo>('query-migrate');
      this.relay = this.o.relays.status({ migrationId: this.o.migrationId });
      if (this.info.status === QemuMigrationStatus.Completed) return;
      if (this.info.status === QemuMigrationStatus.Failed || this.info.status === QemuMigrationStatus.Cancelled) {
        throw new WanmigError(ErrorCode.Unavailable, await this.whyFailed(`QEMU's migration ${this.info.status}`));
      }
      if (performance.now() > deadline)
        throw new WanmigError(ErrorCode.Unavailable, `QEMU did not complete within ${COMPLETION_TIMEOUT_MS} ms`);
      await this.sleep(10);
    }
  }

  /** Waits for the destination to say it loaded the whole stream and every digest matched. */
  private async untilLoaded(): Promise<QemuIncomingStatusReply> {
    const deadline = performance.now() + COMPLETION_TIMEOUT_MS;
    for (;;) {
      this.check();
      const status = await this.destinationStatus();
      this.checkDestination(status);
      if (status.loaded && status.sink.endVerified) return status;
      if (performance.now() > deadline)
        throw new WanmigError(ErrorCode.Unavailable, `the destination did not load the stream in time`);
      await this.sleep(5);
    }
  }

  private destinationStatus(): Promise<QemuIncomingStatusReply> {
    return callControl<QemuIncomingStatusReply>(
      this.o.nc,
      controlSubject(this.o.destSite, ServiceName.DeltaApply, QemuIncomingVerb.Status),
      { migrationId: this.o.migrationId },
      REMOTE_TIMEOUT_MS,
    );
  }

  private checkDestination(status: QemuIncomingStatusReply): void {
    if (status.status === 'exited' || status.status === 'aborted')
      throw new WanmigError(ErrorCode.Unavailable, `the destination QEMU is ${status.status}`);
    if (status.sink.error) throw new WanmigError(status.sink.error.code, `destination: ${status.sink.error.message}`);
  }

  /** QEMU's own word for a broken stream is often "Broken pipe": the destination or the relay says more. */
  private async whyFailed(what: string): Promise<string> {
    const detail = this.info?.['error-desc'];
    const relay = this.o.relays.status({ migrationId: this.o.migrationId });
    if (relay.failed && relay.error) return `${what}: relay: ${relay.error.message}`;
    const destination = await this.destinationStatus().catch(() => undefined);
    if (destination?.sink.error) return `${what}: destination: ${destination.sink.error.message}`;
    if (destination && (destination.status === 'exited' || destination.status === 'aborted'))
      return `${what}: the destination QEMU is ${destination.status}`;
    return detail ? `${what}: ${detail}` : what;
  }

  /**
   * The destination QEMU goes first (it must never run), then QEMU's migration is cancelled and the source runs again;
   * a disk finalized in the pause has its writes thawed (afterRollBack). Each step is bounded; failures are logged by
   * the caller through the thrown error only when the source could not be resumed.
   */
  private async rollBack(qmp: QmpClient, state: { migrating: boolean; wasRunning: boolean; finalizing: boolean }) {
    const { migrationId } = this.o;
    await this.o.relays.close({ migrationId }).catch(() => undefined);
    await callControl(
      this.o.nc,
      controlSubject(this.o.destSite, ServiceName.DeltaApply, QemuIncomingVerb.Abort),
      { migrationId },
      REMOTE_TIMEOUT_MS,
    ).catch(() => undefined);
    if (qmp.isOpen) {
      if (state.migrating) {
        await qmp.execute('migrate_cancel').catch(() => undefined);
        await waitForMigrationIdle(qmp, ROLLBACK_STEP_MS).catch(() => undefined);
      }
      await qmp
        .execute('migrate-set-capabilities', {
          capabilities: [{ capability: 'pause-before-switchover', state: false }],
        })
        .catch(() => undefined);
      if (state.wasRunning) await ensureRunning(qmp, ROLLBACK_STEP_MS);
    }
    if (state.finalizing) await this.o.afterRollBack?.();
  }

  private check(): void {
    if (this.aborted) throw new MemoryAbortedError(this.o.migrationId, this.phase);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }

  private emit(force = false): void {
    if (!force && performance.now() - this.lastEmit < 1000) return;
    this.lastEmit = performance.now();
    this.o.onProgress?.(this.progress());
  }
}

/**
 * QEMU's own `downtime-limit` out of the migration's downtime budget: a third. QEMU stops iterating once what is
 * dirty would go in that time at the rate it measures on our socket, which is the WAN's rate times the relay's
 * compression, so its last copy takes longer on the wire than it plans; and the pause also holds the disk's final
 * drain and the destination's activation. Measured with `wanmig bench qemu` (512 MiB guest, 50 ms / 200 Mbit/s):
 * with QEMU given the whole 300 ms, the client saw 1241 ms; with 100 ms, 601 ms.
 */
export function qemuShareOf(downtimeMs: number): number {
  return Math.max(20, Math.round(downtimeMs / 3));
}
