import type { NatsConnection } from '@nats-io/nats-core';
import { BlockMap } from '@wanmig/blockmap';
import { BatchCompressor, ChunkEncoder, Zstd } from '@wanmig/codec';
import type { PageMemory, SourceVm } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DEFAULT_HOLD_TIMEOUT_MS,
  DeviceStateStreamId,
  FrameFlag,
  MemoryStreamId,
  MemoryVerb,
  PolicyKind,
  type RoundSample,
  ServiceName,
  StreamKind,
  type CheckResumeReply,
  type PrepareMemoryReply,
  type MemoryStatusReply,
  type ResumeVmReply,
} from '@wanmig/protocol';
import {
  describeRamDifference,
  ramDigest,
  RAM_DIGEST_REGION_BYTES,
  recommendedWindowBytes,
  RecordStreamWriter,
  RegionDigester,
  shortRegionDigests,
  StreamSender,
  type RamDigest,
  type TokenBucket,
} from '@wanmig/stream';
import { decide, type PolicyDecision } from './convergence.policy.js';
import { MemoryAbortedError, MemoryHoldTimeoutError, RamMismatchError } from './errors.js';
import { ResumeOutcomeUnknownError, settleResume } from './resume.settle.js';
import { SwitchoverGate } from './switchover.gate.js';
import {
  MemoryPhase,
  type DiskMigrationReport,
  type MemoryMigrationReport,
  type MemoryProgress,
} from '@wanmig/protocol';

export const DEFAULT_DOWNTIME_MS = 300;
const READ_BYTES = 1024 * 1024;
/** While the pause is held off (a service not ready), rounds keep the dirty set small, this far apart at least. */
const HOLD_OFF_ROUND_MS = 250;

export interface MemoryMigrationOptions {
  migrationId: string;
  nc: NatsConnection;
  destSite: string;
  vmId: string;
  vm: SourceVm;
  policy?: PolicyKind;
  /** Zero pages are always sent as extents; `codec` adds dedup, XBZRLE deltas and zstd. */
  codec?: boolean;
  downtimeMs?: number;
  /** The migration's budget, shared with its disk stream; also what the link is assumed to carry. */
  limiter?: TokenBucket;
  /** Link rate in bits per second when known (window sizing and estimates). */
  bandwidthBps?: number;
  /** The VM's disk as the destination will serve it. */
  diskUri?: string;
  servicePort?: number;
  /**
   * Hash the source's RAM at pause (while the last pages go) and have the destination check its
   * copy before it runs the VM: a difference refuses the resume and the source rolls back.
   */
  verifyRam?: boolean;
  /** Service queries to answer at pause (through the guest's monitor), reported for comparison. */
  queriesAtPause?: string[];
  /**
   * Runs with the guest paused, after its memory is sent: the disk's final drain goes here. The
   * disk report it returns goes into this migration's, with the time it took. A failure rolls back.
   */
  whilePaused?: () => Promise<DiskMigrationReport | void>;
  /**
   * Runs during a rollback, once the source guest runs again, when `whilePaused` had started: a
   * disk finalized during the pause has its writes thawed here. Its failure is the hook's business.
   */
  afterRollBack?: () => Promise<void>;
  /**
   * Asked each time the policy would stop iterating: what a service the switchover needs still lacks (undefined: the
   * pause may start). Until then pre-copy goes on; it throws when that lasted too long.
   */
  readyToPause?: () => Promise<string | undefined>;
  /** How long the destination may stay silent before a stream gives up (default: the stream's). */
  giveUpAfterMs?: number;
  /**
   * Before the destination runs the VM, have it check everything (`mem.check`), then hold in `holding` until
   * {@link MemoryMigration.proceed}: the caller's last steps before the point of no return go there. An abort, or no
   * go within `holdTimeoutMs`, rolls back.
   */
  holdBeforeResume?: boolean;
  holdTimeoutMs?: number;
  onProgress?: (progress: MemoryProgress) => void;
  /** The destination runs the VM: the moment clients (and the network) should follow. */
  onResumed?: (destination: { serviceAddress: string; resumedAt: number }) => void;
}

/**
 * Pre-copy (Clark et al.) for a VM whose memory the driver exposes page by page: round 1 sends
 * every page (zero pages as extents), later rounds the pages dirtied since, through the codec,
 * until the convergence policy says stop; then stop-and-copy: pause, the last dirty pages and the
 * device state, the disk's last blocks, (held: the destination checks them, and the caller's go,)
 * and the destination resumes. Any failure before the destination runs the VM rolls back: the
 * source guest resumes as it was.
 */
export class MemoryMigration {
  private readonly o: MemoryMigrationOptions &
    Required<Pick<MemoryMigrationOptions, 'policy' | 'codec' | 'downtimeMs' | 'holdTimeoutMs'>>;
  private readonly gate = new SwitchoverGate();
  private phase: MemoryPhase = MemoryPhase.Preparing;
  private round = 0;
  private throttlePercent = 0;
  private ramBytes = 0;
  private dirtyBytes = 0;
  private started = performance.now();
  private aborted = false;
  private outcomeUnknown = false;
  private pausedHookStarted = false;
  private sender?: StreamSender;
  private stateSender?: StreamSender;
  private writer?: RecordStreamWriter;
  private encoder?: ChunkEncoder;
  private lastEmit = 0;

  constructor(options: MemoryMigrationOptions) {
    this.o = {
      policy: PolicyKind.Smart,
      codec: true,
      downtimeMs: DEFAULT_DOWNTIME_MS,
      holdTimeoutMs: DEFAULT_HOLD_TIMEOUT_MS,
      ...options,
    };
  }

  get migrationId(): string {
    return this.o.migrationId;
  }

  /**
   * False once the destination is asked to run the VM (phase `resuming`) or runs it: there is no
   * going back then. Until that point true, as is any later look after a rollback.
   */
  get canAbort(): boolean {
    return this.phase !== MemoryPhase.Resuming && this.phase !== MemoryPhase.Done;
  }

  /**
   * Stops before the destination runs the VM; the source keeps running unchanged. False (and
   * nothing done) once the destination resumes or has resumed the VM.
   */
  abort(): boolean {
    if (!this.canAbort) return false;
    this.aborted = true;
    // Unblocks a send or a drain waiting on the link, or the hold; run() then rolls back.
    this.gate.close(new MemoryAbortedError(this.o.migrationId, this.phase));
    this.sender?.close();
    this.stateSender?.close();
    return true;
  }

  /**
   * The go of a held switchover: the destination is asked to run the VM. True when it is (or was already) given;
   * false when the migration is not holding: not there yet, aborted, timed out or rolled back.
   */
  proceed(): boolean {
    if (this.gate.opened) return true;
    if (this.phase !== MemoryPhase.Holding || this.aborted || !this.gate.open()) return false;
    // From here on an abort is refused: the destination may run the VM any moment.
    this.phase = MemoryPhase.Resuming;
    return true;
  }

  progress(): MemoryProgress {
    return {
      migrationId: this.o.migrationId,
      phase: this.phase,
      round: this.round,
      ramBytes: this.ramBytes,
      dirtyBytes: this.dirtyBytes,
      rawBytesSent: this.writer?.stats.rawBytes ?? 0,
      frameBytesSent: this.sender?.stats.bytesSent ?? 0,
      throttlePercent: this.throttlePercent,
      elapsedSeconds: (performance.now() - this.started) / 1000,
    };
  }

  async run(): Promise<MemoryMigrationReport> {
    this.started = performance.now();
    let paused = false;
    let resumed = false;
    const { vm } = this.o;
    try {
      const report = await this.execute(
        () => (paused = true),
        () => (resumed = true),
      );
      this.phase = MemoryPhase.Done;
      this.emit();
      return report;
    } catch (err) {
      // Unknown outcome: the destination may run the VM; resuming the source too would make two. It stays paused,
      // and so does what the destination holds, until someone can tell (the orchestrator's rollback asks again).
      if (!resumed && !this.outcomeUnknown) await this.rollBack(paused);
      // An abort closes the streams: report the abort, not the closed stream it caused.
      if (this.aborted && !(err instanceof MemoryAbortedError))
        throw new MemoryAbortedError(this.o.migrationId, this.phase);
      throw err;
    } finally {
      this.sender?.close();
      this.stateSender?.close();
      if (!resumed) await vm.throttle(0).catch(() => undefined);
    }
  }

  private async execute(onPaused: () => void, onResumed: () => void): Promise<MemoryMigrationReport> {
    const { vm, nc, migrationId, destSite } = this.o;
    const description = await vm.describe();
    this.ramBytes = description.ramBytes;
    const pageSize = description.pageSize;
    const memory = vm.memory();
    const subject = (verb: MemoryVerb) => controlSubject(destSite, ServiceName.DeltaApply, verb);
    // A migration started again (memory-precopy restarted) finds the guest as the one before left it, throttled
    // perhaps: the policy starts from an unthrottled guest.
    await vm.throttle(0);

    await callControl<PrepareMemoryReply>(
      nc,
      subject(MemoryVerb.Prepare),
      {
        migrationId,
        ramBytes: this.ramBytes,
        pageSize,
        // The receiving VM starts now and waits, as QEMU's -incoming does: not inside the downtime.
        vmId: this.o.vmId,
        ...(this.o.diskUri ? { diskUri: this.o.diskUri } : {}),
        ...(this.o.servicePort !== undefined ? { servicePort: this.o.servicePort } : {}),
        ...(this.o.verifyRam ? { verifyRam: true } : {}),
      },
      30_000,
    );
    // A cheap request measures the round trip (the prepare above also started a VM).
    const t0 = performance.now();
    await callControl(nc, subject(MemoryVerb.Status), { migrationId });
    const rttMs = Math.max(1, performance.now() - t0);
    const linkBytesPerSecond = this.o.bandwidthBps ? this.o.bandwidthBps / 8 : undefined;
    const windowBytes = linkBytesPerSecond ? recommendedWindowBytes(linkBytesPerSecond, rttMs) : undefined;
    this.sender = new StreamSender({
      nc,
      migrationId,
      streamId: MemoryStreamId,
      kind: StreamKind.Memory,
      limiter: this.o.limiter,
      windowBytes,
      ...(this.o.giveUpAfterMs ? { giveUpAfterMs: this.o.giveUpAfterMs } : {}),
    });
    const stateSender = (this.stateSender = new StreamSender({
      nc,
      migrationId,
      streamId: DeviceStateStreamId,
      kind: StreamKind.DeviceState,
      limiter: this.o.limiter,
      ...(this.o.giveUpAfterMs ? { giveUpAfterMs: this.o.giveUpAfterMs } : {}),
    }));
    await Promise.all([this.sender.open(), stateSender.open()]);
    this.encoder = new ChunkEncoder(
      this.o.codec
        ? { compressor: new BatchCompressor({ zstd: await Zstd.load() }), xbzrleCacheFirstSend: false }
        : { zero: true, dedup: false, xbzrle: false },
    );
    this.writer = new RecordStreamWriter(this.sender, this.encoder);

    // Dirty logging starts now: round 1 reads every page after this, so nothing is missed.
    this.phase = MemoryPhase.Precopy;
    await memory.drainDirty();
    const sentOnce = BlockMap.forSize(this.ramBytes, pageSize);
    const rounds: RoundSample[] = [];
    const all = BlockMap.full(sentOnce.geometry);
    rounds.push(await this.sendRound(memory, all, sentOnce, this.ramBytes));

    let decision: PolicyDecision;
    let pending: BlockMap;
    for (;;) {
      this.check();
      pending = await memory.drainDirty();
      this.dirtyBytes = pending.count * pageSize;
      decision = decide(this.o.policy, {
        rounds,
        dirtyBytes: this.dirtyBytes,
        downtimeMs: this.o.downtimeMs,
        wireBytesPerSecond: linkBytesPerSecond ?? bestRate(rounds),
        wirePerRaw: wirePerRaw(rounds),
        rttMs,
        throttlePercent: this.throttlePercent,
      });
      if (decision.action === 'stop') {
        const notReady = await this.o.readyToPause?.();
        if (notReady === undefined) break;
        // Not paused while a service is not ready: another round (not the policy's: it must not throttle for it).
        this.emit();
        const started = performance.now();
        await this.sendRound(memory, pending, sentOnce, this.dirtyBytes);
        await sleep(HOLD_OFF_ROUND_MS - (performance.now() - started));
        continue;
      }
      if (decision.action === 'throttle') {
        this.throttlePercent = decision.percent;
        await vm.throttle(decision.percent);
      }
      rounds.push(await this.sendRound(memory, pending, sentOnce, this.dirtyBytes));
    }
    const precopySeconds = (performance.now() - this.started) / 1000;

    // Stop-and-copy.
    this.check();
    this.phase = MemoryPhase.StopAndCopy;
    this.emit();
    const pausedAt = performance.now();
    const pausedAtEpoch = Date.now();
    // Counted as paused before asking: a pause that fails half way must still be undone.
    onPaused();
    await vm.pause();
    pending.unionInPlace(await memory.drainDirty());
    const finalPages = pending.count;
    const hashing = this.o.verifyRam ? hashMemory(memory, this.ramBytes) : undefined;
    // Awaited only after the last pages went: a failure meanwhile must not go unhandled.
    hashing?.catch(() => undefined);
    // The disk's final drain starts now, alongside the last pages: the guest is paused, so no write
    // is on its way to the disk any more.
    let diskFinalizeMs: number | undefined;
    let finalizing: Promise<DiskMigrationReport | undefined> | undefined;
    if (this.o.whilePaused) {
      const finalizeStart = performance.now();
      this.pausedHookStarted = true;
      finalizing = this.o.whilePaused().then((report) => {
        diskFinalizeMs = performance.now() - finalizeStart;
        return report ?? undefined;
      });
      // Awaited after the last pages went: a failure meanwhile must not go unhandled.
      finalizing.catch(() => undefined);
    }
    const answersAtPause = await this.askAtPause();
    const state = await vm.deviceState();
    // Everything goes back to back: the last pages, the state, the disk's last blocks, then the
    // resume request (held: the check). The destination waits for the data to be durable before it
    // answers, so each costs one round trip, not one per step.
    await this.sendPages(memory, pending, sentOnce);
    await this.writer.flush(FrameFlag.End);
    await stateSender.send({ offset: 0, length: state.blob.length, flags: FrameFlag.End, payload: state.blob });
    const resume = {
      migrationId,
      vmId: this.o.vmId,
      driver: 'sim' as const,
      deviceStateSha256: state.sha256,
      deviceStateBytes: state.blob.length,
      ...(this.o.diskUri ? { diskUri: this.o.diskUri } : {}),
      ...(this.o.servicePort !== undefined ? { servicePort: this.o.servicePort } : {}),
    };
    const queries = this.o.queriesAtPause?.length ? { queries: this.o.queriesAtPause } : {};
    // A held switchover has the destination check what it has first, alongside the disk's last blocks and this
    // side's RAM hash: the device state, and the RAM if its digest is done there (compared here; if not, the resume
    // checks it, not to hold the pause for it). A mismatch then refuses before anything else is done (the route
    // moved) or runs.
    const [checked, disk, sourceRam] = await Promise.all([
      this.o.holdBeforeResume
        ? callControl<CheckResumeReply>(nc, subject(MemoryVerb.Check), { ...resume, ...queries }, 30_000)
        : undefined,
      finalizing,
      hashing,
    ]);
    this.check();
    if (checked?.ramSha256 && sourceRam && checked.ramSha256 !== sourceRam.sha256) {
      const where = describeRamDifference(sourceRam.regions, checked.ramRegions);
      throw new RamMismatchError(migrationId, checked.ramSha256, sourceRam.sha256, where);
    }
    const ramChecked = checked?.ramSha256 !== undefined && checked.ramSha256 === sourceRam?.sha256;
    // What the destination still checks at the resume: everything, or the RAM if it had no digest to report.
    const checks = {
      ...(sourceRam && !ramChecked
        ? { ramSha256: sourceRam.sha256, ramRegions: shortRegionDigests(sourceRam.regions) }
        : {}),
      ...(checked ? {} : queries),
    };
    let holdMs: number | undefined;
    if (checked) {
      this.phase = MemoryPhase.Holding;
      this.emit();
      const holdStart = performance.now();
      await this.gate.wait(this.o.holdTimeoutMs, () => new MemoryHoldTimeoutError(migrationId, this.o.holdTimeoutMs));
      holdMs = performance.now() - holdStart;
    }

    this.phase = MemoryPhase.Resuming;
    this.emit();
    const destination = await callControl<ResumeVmReply>(
      nc,
      subject(MemoryVerb.Resume),
      // Held: what the check left (the RAM, when its digest was not done there), then the VM runs.
      { ...resume, ...checks },
      30_000,
    ).catch((error: unknown) =>
      // No answer is not a refusal: the destination may have run the VM. Ask it before anything is undone.
      settleResume({
        migrationId,
        error,
        verifyRam: this.o.verifyRam === true,
        status: () => callControl<MemoryStatusReply>(nc, subject(MemoryVerb.Status), { migrationId }, 5000),
      }).catch((settled: unknown) => {
        if (settled instanceof ResumeOutcomeUnknownError) this.outcomeUnknown = true;
        throw settled;
      }),
    );
    onResumed();
    const pausedMs = performance.now() - pausedAt;
    this.o.onResumed?.({ serviceAddress: destination.serviceAddress, resumedAt: destination.resumedAt });
    // The destination said it holds everything durably; the acks confirm it to this side too. The
    // VM runs there now: a lost ack must not turn a finished migration into a failed one.
    await Promise.all([this.sender.drain(), stateSender.drain()]).catch(() => undefined);
    stateSender.close();
    await memory.stopDirtyLog().catch(() => undefined);
    const totals = this.encoder.totals;
    return {
      migrationId,
      policy: this.o.policy,
      codec: this.o.codec,
      ramBytes: this.ramBytes,
      rounds,
      stopReason: decision.reason,
      estimatedDowntimeMs: decision.estimatedDowntimeMs,
      throttlePercent: this.throttlePercent,
      finalPages,
      deviceStateBytes: state.blob.length,
      rawBytesSent: this.writer.stats.rawBytes,
      frameBytesSent: this.sender.stats.bytesSent + stateSender.stats.bytesSent,
      resentBytes: this.sender.stats.resentBytes,
      byEncoding: totals.byEncoding,
      pausedMs,
      pausedAt: pausedAtEpoch,
      precopySeconds,
      totalSeconds: (performance.now() - this.started) / 1000,
      destination: { serviceAddress: destination.serviceAddress, resumedAt: destination.resumedAt },
      ...(holdMs !== undefined ? { holdMs } : {}),
      ramVerified: ramChecked || destination.ramVerified === true,
      ramCheckMs: (checked?.ramCheckMs ?? 0) + (destination.ramCheckMs ?? 0),
      answersAtPause,
      answersAtDestination: checked?.answers ?? destination.answers ?? {},
      ...(disk ? { disk, diskFinalizeMs } : {}),
    };
  }

  private async sendRound(
    memory: PageMemory,
    pages: BlockMap,
    sentOnce: BlockMap,
    dirtyBytes: number,
  ): Promise<RoundSample> {
    this.round++;
    this.emit();
    const start = performance.now();
    const totals = this.encoder!.totals;
    const before = { raw: totals.rawBytes, zero: totals.byEncoding.zero.rawBytes, wire: this.sender!.stats.bytesSent };
    const resentPages = pages.intersection(sentOnce).count;
    await this.sendPages(memory, pages, sentOnce);
    await this.writer!.flush();
    await this.sender!.drain();
    return {
      round: this.round,
      dirtyBytes,
      rawBytes: this.encoder!.totals.rawBytes - before.raw,
      zeroRawBytes: this.encoder!.totals.byEncoding.zero.rawBytes - before.zero,
      wireBytes: this.sender!.stats.bytesSent - before.wire,
      seconds: (performance.now() - start) / 1000,
      resentPages,
      pages: pages.count,
    };
  }

  private async sendPages(memory: PageMemory, pages: BlockMap, sentOnce: BlockMap): Promise<void> {
    for (const range of pages.byteRanges({ maxBytes: READ_BYTES })) {
      this.check();
      const data = await memory.read(range.offset, range.length);
      await this.writer!.write(range.offset, data);
      this.emitEvery();
    }
    sentOnce.unionInPlace(pages);
  }

  private async askAtPause(): Promise<Record<string, string>> {
    const answers: Record<string, string> = {};
    const { vm, queriesAtPause = [] } = this.o;
    if (!vm.query) return answers;
    for (const q of queriesAtPause) answers[q] = await vm.query(q);
    return answers;
  }

  /** Before the destination runs the VM, the source is authoritative: make it run as it was. */
  private async rollBack(paused: boolean): Promise<void> {
    this.phase = MemoryPhase.RolledBack;
    const { vm, nc, migrationId, destSite } = this.o;
    // The guest first: every step after this may wait on the link.
    await vm.throttle(0).catch(() => undefined);
    try {
      if (paused) await vm.resume();
    } finally {
      if (this.pausedHookStarted) await this.o.afterRollBack?.().catch(() => undefined);
      await vm
        .memory()
        .stopDirtyLog()
        .catch(() => undefined);
      await callControl(nc, controlSubject(destSite, ServiceName.DeltaApply, MemoryVerb.Release), {
        migrationId,
        deleteRam: true,
      }).catch(() => undefined);
      this.emit();
    }
  }

  private check(): void {
    if (this.aborted) throw new MemoryAbortedError(this.o.migrationId, this.phase);
  }

  private emitEvery(): void {
    if (performance.now() - this.lastEmit >= 250) this.emit();
  }

  private emit(): void {
    this.lastEmit = performance.now();
    this.o.onProgress?.(this.progress());
  }
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

/**
 * The RAM's digest as the destination computes it from its file (`ramFileDigests`), read in large sequential pieces:
 * zero regions cost no hashing. Its region digests name the regions of a mismatch.
 */
async function hashMemory(memory: PageMemory, ramBytes: number): Promise<RamDigest> {
  const digester = new RegionDigester(RAM_DIGEST_REGION_BYTES);
  for (let offset = 0; offset < ramBytes; offset += 8 * READ_BYTES) {
    digester.update(await memory.read(offset, Math.min(8 * READ_BYTES, ramBytes - offset)));
  }
  const regions = digester.finish();
  return { sha256: ramDigest(regions), regions };
}

/** Frame bytes per second: the best rate a round long enough to measure achieved. */
function bestRate(rounds: RoundSample[]): number {
  const measured = rounds.filter((r) => r.seconds >= 0.5).map((r) => r.wireBytes / r.seconds);
  return measured.length > 0 ? Math.max(...measured) : rounds[0].wireBytes / Math.max(rounds[0].seconds, 0.001);
}

/**
 * Frame bytes per page byte of the latest round that sent anything, zero pages left out: dirty
 * pages are the guest's working set, rarely zero, so round 1's zero-rich ratio would promise a
 * final drain far shorter than it will be.
 */
function wirePerRaw(rounds: RoundSample[]): number {
  for (let i = rounds.length - 1; i >= 0; i--) {
    const paid = rounds[i].rawBytes - rounds[i].zeroRawBytes;
    if (paid > 0) return Math.max(0.02, rounds[i].wireBytes / paid);
  }
  return 1;
}
