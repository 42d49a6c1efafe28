import { open, type FileHandle } from 'node:fs/promises';
import type { NatsConnection } from '@nats-io/nats-core';
import { BlockMap } from '@wanmig/blockmap';
import { resumePlan } from './resume.plan.js';
import { BatchCompressor, CODEC_OFF, ChunkEncoder, Zstd } from '@wanmig/codec';
import {
  callControl,
  controlSubject,
  DiskStreamId,
  DiskVerb,
  ErrorCode,
  WanmigError,
  ServiceName,
  StreamKind,
  type DiskDigestReply,
  type PrepareDiskReply,
} from '@wanmig/protocol';
import {
  DEFAULT_GIVE_UP_MS,
  mapDataExtents,
  recommendedWindowBytes,
  RecordStreamWriter,
  StreamSender,
  TokenBucket,
} from '@wanmig/stream';
import type { DiskExport } from './disk.export.js';
import { DiskPhase, type CatchUpRound, type DiskMigrationReport, type DiskProgress } from '@wanmig/protocol';
import { DrainEstimate, SHRINK_NEEDED } from './drain.estimate.js';
import { DiskVerifier } from './disk.verifier.js';
import { MigrationAbortedError, NotHeldError } from './errors.js';

export const DEFAULT_DOWNTIME_MS = 300;
export const DEFAULT_MAX_ROUNDS = 30;
/** Reads of the source image gather at least this many bytes (always whole blocks). */
const MIN_READ_BYTES = 1024 * 1024;
/** While holding, rounds start this far apart (further when a round itself takes longer). */
export const HOLD_INTERVAL_MS = 200;
/**
 * The activity log shrinks back to the dirty map at most this often (each time costs a small atomic rewrite): what a
 * crash leaves unsure is about what the guest wrote in this long.
 */
const CHECKPOINT_MS = 250;

export interface DiskMigrationOptions {
  migrationId: string;
  nc: NatsConnection;
  destSite: string;
  imagePath: string;
  blockSize: number;
  /** The export whose writes are tracked; absent for an image nobody writes during the copy. */
  disk?: DiskExport;
  /** The migration's bandwidth budget in bits per second (also sizes the window and estimates). */
  bandwidthBps?: number;
  /** Downtime budget: catch-up stops once what is left would drain within it. */
  downtimeMs?: number;
  maxRounds?: number;
  codec?: boolean;
  verify?: boolean;
  destPath?: string;
  /** Keep writes frozen at the end (a VM switches over next); by default they resume. */
  keepFrozen?: boolean;
  /**
   * Once catch-up ends, keep the destination in step (phase `holding`) until `finalize()`, which does the final
   * drain. Implies keepFrozen.
   */
  hold?: boolean;
  /**
   * This process restarted while the migration was under way: the copy resumes, sending what the destination does not
   * hold and what the export's activity log (`unsure`) says may have changed since it was acknowledged.
   */
  resume?: { unsure?: BlockMap };
  /** How long the destination may stay silent before the migration fails (default: the stream's). */
  giveUpAfterMs?: number;
  log?: (line: string) => void;
  onProgress?: (progress: DiskProgress) => void;
}

/**
 * Moves one disk to the destination while it is being written (Bradford et al., with Luo et al.'s
 * block bitmap): a bulk pass that sends every block once, catch-up rounds that re-send the blocks
 * dirtied meanwhile until the rest would drain within the downtime budget (throttling the guest's
 * writes when it outruns the link), a final drain with writes frozen, and a digest comparison of
 * both images. With `hold`, the final drain waits for `finalize()` (sent while the VM is paused) and
 * the destination is kept in step meanwhile.
 */
export class DiskMigration {
  private readonly o: Required<
    Omit<DiskMigrationOptions, 'disk' | 'destPath' | 'onProgress' | 'bandwidthBps' | 'resume' | 'log'>
  > &
    DiskMigrationOptions;
  private phase: DiskPhase = DiskPhase.Preparing;
  private round = 0;
  private bulkBytes = 0;
  private started = performance.now();
  private aborted = false;
  private sender?: StreamSender;
  private writer?: RecordStreamWriter;
  private encoder?: ChunkEncoder;
  private fh?: FileHandle;
  private sizeBytes = 0;
  private limiter?: TokenBucket;
  private estimate?: DrainEstimate;
  /** A budget change asked for before the sender or the estimate existed. */
  private pendingRate?: number;
  private outcome?: Promise<DiskMigrationReport>;
  private finalizeAsked = false;
  /** Cuts short the pause between holding rounds (finalize, abort). */
  private wake?: () => void;
  /** Resolves when finalize is asked: a holding round stops waiting for its acks (the final drain waits for all). */
  private readonly finalizeRequested: Promise<void>;
  private finalizeWanted!: () => void;
  private lastCheckpoint = 0;
  /**
   * The last round waited out a silence of the destination (a restart of delta-apply, a cut link): its pace and the
   * dirty set it let grow say nothing about the link or the guest, so neither the estimate nor the throttle follows it.
   */
  private lastRoundStalled = false;
  /** Rejects on abort: the verify (one digest of each whole image, seconds to minutes) gives way to it at once. */
  private readonly aborting: Promise<never>;
  private abortWith?: (err: Error) => void;
  /** With `verify`: both images' digests, kept from the end of the bulk pass on. */
  private verifier?: DiskVerifier;

  constructor(options: DiskMigrationOptions) {
    this.finalizeRequested = new Promise((resolve) => (this.finalizeWanted = resolve));
    this.aborting = new Promise<never>((_resolve, reject) => (this.abortWith = reject));
    this.aborting.catch(() => undefined);
    this.o = {
      downtimeMs: DEFAULT_DOWNTIME_MS,
      maxRounds: DEFAULT_MAX_ROUNDS,
      codec: true,
      verify: true,
      keepFrozen: false,
      hold: false,
      giveUpAfterMs: DEFAULT_GIVE_UP_MS,
      ...options,
    };
  }

  /** Whether a finished migration leaves the source's writes frozen (a VM switches over next). */
  private get keepsFrozen(): boolean {
    return this.o.keepFrozen || this.o.hold;
  }

  get migrationId(): string {
    return this.o.migrationId;
  }

  /**
   * Unfinished: stops at the next block (or the next look at the dirty map while holding); run()
   * then fails and thaws the source's writes. Finished with writes kept frozen (`keepFrozen`,
   * `hold`): thaws them, the rollback of a switch-over that did not happen (the VM stays here and
   * must write again). Finished with writes flowing: nothing to undo, false.
   */
  abort(): boolean {
    if (this.phase === DiskPhase.Done) {
      const { disk } = this.o;
      if (!disk || !this.keepsFrozen) return false;
      disk.gate.thaw();
      disk.throttle.release();
      return true;
    }
    this.aborted = true;
    this.abortWith?.(new MigrationAbortedError(this.o.migrationId, this.phase));
    this.sender?.close();
    this.wake?.();
    return true;
  }

  /**
   * Ends a migration started with `hold`; called while the VM is paused, so the dirty set cannot
   * grow. Holding: the final drain starts now. Earlier: the bulk pass completes (every block must go
   * once), catch-up stops at the end of its current round, holding is skipped, and the final drain
   * sends whatever is left: nothing waits for a convergence a paused guest no longer needs.
   * Resolves with the report once the last block is durable at the destination (and verified when
   * asked); writes stay frozen. Every call gets the same outcome, a failure included.
   */
  finalize(): Promise<DiskMigrationReport> {
    if (!this.o.hold) return Promise.reject(new NotHeldError(this.o.migrationId, this.phase));
    this.finalizeAsked = true;
    this.wake?.();
    this.finalizeWanted();
    return this.run();
  }

  /**
   * Changes the budget of a migration that started with one (the orchestrator gives most of it to the memory once
   * the disk only keeps in step). Catch-up and holding estimates follow, so the write throttle does too.
   */
  setBandwidth(bandwidthBps: number): void {
    if (!this.o.bandwidthBps) {
      throw new WanmigError(ErrorCode.Conflict, `disk migration ${this.o.migrationId} started without a budget`);
    }
    const rate = bandwidthBps / 8;
    this.pendingRate = rate;
    this.limiter?.setRate(rate);
    this.estimate?.setWireRate(rate);
  }

  progress(): DiskProgress {
    const dirty = this.o.disk?.dirty;
    return {
      migrationId: this.o.migrationId,
      phase: this.phase,
      round: this.round,
      sizeBytes: this.sizeBytes,
      bulkBytes: this.bulkBytes,
      dirtyBytes: dirty ? dirty.count * dirty.blockSize : 0,
      rawBytesSent: this.writer?.stats.rawBytes ?? 0,
      frameBytesSent: this.sender?.stats.bytesSent ?? 0,
      resentBytes: this.sender?.stats.resentBytes ?? 0,
      elapsedSeconds: (performance.now() - this.started) / 1000,
      throttle: { ...(this.o.disk?.throttle.stats ?? emptyThrottle()) },
      ...(this.phase === DiskPhase.Holding
        ? {
            inStep:
              this.estimate !== undefined && this.estimate.drainMs(dirty ? dirty.byteCount : 0) <= this.o.downtimeMs,
          }
        : {}),
    };
  }

  /** Runs the migration once; later calls get the same outcome. */
  run(): Promise<DiskMigrationReport> {
    this.outcome ??= this.runOnce();
    return this.outcome;
  }

  private async runOnce(): Promise<DiskMigrationReport> {
    const { disk } = this.o;
    this.started = performance.now();
    try {
      return await this.execute();
    } catch (err) {
      const phase = this.phase;
      this.phase = DiskPhase.Failed;
      this.emit();
      // An abort closes the stream: report the abort, not the closed stream it caused.
      if (this.aborted && !(err instanceof MigrationAbortedError)) {
        throw new MigrationAbortedError(this.o.migrationId, phase, err);
      }
      throw err;
    } finally {
      // A failed or finished copy never leaves the source frozen unless asked to.
      if (disk && !(this.keepsFrozen && this.phase === DiskPhase.Done)) {
        disk.gate.thaw();
        disk.throttle.release();
      }
      this.verifier?.stop();
      this.sender?.close();
      await this.fh?.close();
    }
  }

  private async execute(): Promise<DiskMigrationReport> {
    const { nc, migrationId, destSite, blockSize, disk } = this.o;
    this.fh = await open(this.o.imagePath, 'r');
    this.sizeBytes = disk?.size ?? (await this.fh.stat()).size;
    const subject = (verb: DiskVerb) => controlSubject(destSite, ServiceName.DeltaApply, verb);

    // From here every write is on record before it reaches the image (a resumed migration's log goes on as it was).
    if (!this.o.resume) await disk?.startTracking();
    const prepared = await this.untilAnswered(() =>
      callControl<PrepareDiskReply>(nc, subject(DiskVerb.Prepare), {
        migrationId,
        sizeBytes: this.sizeBytes,
        blockSize,
        ...(this.o.destPath ? { path: this.o.destPath } : {}),
      }),
    );
    const t0 = performance.now();
    await callControl(nc, subject(DiskVerb.Status), { migrationId });
    const rttMs = Math.max(1, performance.now() - t0);
    const linkBytesPerSecond = this.o.bandwidthBps ? this.o.bandwidthBps / 8 : undefined;
    this.limiter = linkBytesPerSecond ? new TokenBucket(this.pendingRate ?? linkBytesPerSecond) : undefined;
    this.sender = new StreamSender({
      nc,
      migrationId,
      streamId: DiskStreamId,
      kind: StreamKind.Disk,
      limiter: this.limiter,
      windowBytes: linkBytesPerSecond ? recommendedWindowBytes(linkBytesPerSecond, rttMs) : undefined,
      giveUpAfterMs: this.o.giveUpAfterMs,
    });
    await this.sender.open();
    const zstd = await Zstd.load();
    this.encoder = new ChunkEncoder(
      this.o.codec ? { compressor: new BatchCompressor({ zstd }), xbzrleCacheFirstSend: false } : CODEC_OFF,
    );
    this.writer = new RecordStreamWriter(this.sender, this.encoder);

    // Bulk: every block once, clearing its dirty bit just before it is read.
    this.phase = DiskPhase.Bulk;
    const bulkStart = performance.now();
    const readBytes = Math.max(MIN_READ_BYTES, blockSize);
    // Holes go as Zero extents without being read; their dirty bits stay, so a write into one after the map
    // was taken still goes in catch-up (see mapDataExtents). Resumed: what the crash left unsure, read and sent.
    const extents = this.o.resume
      ? await this.resumedExtents(disk)
      : ((this.o.codec ? await mapDataExtents(this.o.imagePath, this.sizeBytes, blockSize) : undefined) ?? [
          { offset: 0, length: this.sizeBytes, data: true },
        ]);
    for (const extent of extents) {
      const end = extent.offset + extent.length;
      if (!extent.data) {
        this.check();
        this.writer.writeZero(extent.offset, extent.length);
        this.bulkBytes = end;
        continue;
      }
      for (let offset = extent.offset; offset < end; offset += readBytes) {
        const length = Math.min(readBytes, end - offset);
        disk?.dirty.clearRange(offset / blockSize, Math.ceil(length / blockSize));
        await this.sendRange(offset, length);
        this.bulkBytes = offset + length;
        this.emitEvery();
      }
    }
    // The bulk pass ends when the destination holds it: rates measured before that would count
    // frames still sitting in the window.
    await this.writer.flush();
    await this.sender.drain();
    await this.checkpoint(true);
    const bulkSeconds = (performance.now() - bulkStart) / 1000;
    if (this.o.verify) this.startVerifier(subject(DiskVerb.Digest));

    const estimate = (this.estimate = DrainEstimate.afterBulk({
      linkBytesPerSecond,
      wireBytes: this.sender.stats.bytesSent,
      bulkSeconds,
      rawBytes: this.encoder.totals.rawBytes,
      encodedBytes: this.encoder.totals.encodedBytes,
      rttMs,
    }));
    if (this.pendingRate !== undefined) estimate.setWireRate(this.pendingRate);
    const { rounds, converged } = await this.catchUp(estimate);
    if (this.o.hold) await this.holdInStep(estimate);

    // Final drain: freeze writes (the VM is paused, or writes are held), send what is left.
    this.phase = DiskPhase.FinalDrain;
    this.emit();
    const frozenAt = performance.now();
    let finalDrainBytes = 0;
    if (disk) await disk.gate.freeze();
    // The image cannot change any more: the regions written since their digest are hashed while the last blocks travel.
    this.verifier?.settleLocal();
    if (disk) finalDrainBytes = await this.sendDirty(disk.dirty.drain());
    await this.writer.finish();
    const downtimeMs = performance.now() - frozenAt;

    let verified: boolean | null = null;
    let verifyMs = 0;
    if (this.verifier) {
      this.phase = DiskPhase.Verify;
      this.emit();
      const verifyStart = performance.now();
      // An abort cuts the comparison short: the caller gave the switchover up.
      await Promise.race([this.verifier.verify(), this.aborting]);
      verified = true;
      verifyMs = performance.now() - verifyStart;
    }
    // An abort during the verify still wins: the caller gave the switch-over up.
    this.check();
    this.phase = DiskPhase.Done;
    this.emit();
    const totals = this.encoder.totals;
    return {
      migrationId,
      sizeBytes: this.sizeBytes,
      blockSize,
      destPath: prepared.path,
      resumed: prepared.resumed,
      rawBytesSent: this.writer.stats.rawBytes,
      frameBytesSent: this.sender.stats.bytesSent,
      resentBytes: this.sender.stats.resentBytes,
      byEncoding: totals.byEncoding,
      bulkSeconds,
      rounds,
      converged,
      finalDrainBytes,
      downtimeMs,
      verifyMs,
      verified,
      totalSeconds: (performance.now() - this.started) / 1000,
      throttle: { ...(disk?.throttle.stats ?? emptyThrottle()) },
    };
  }

  /**
   * Re-sends dirty blocks in rounds until what is left would drain within the downtime budget. A
   * round that does not shrink the dirty set engages the write throttle, then tightens it. A
   * finalize (the guest is paused) ends it after the current round: the final drain sends the rest.
   */
  private async catchUp(estimate: DrainEstimate): Promise<{ rounds: CatchUpRound[]; converged: boolean }> {
    const { disk } = this.o;
    const rounds: CatchUpRound[] = [];
    if (!disk) return { rounds, converged: true };
    this.phase = DiskPhase.CatchUp;
    let previousDirty = Infinity;
    for (;;) {
      this.check();
      const dirtyBytes = disk.dirty.count * disk.dirty.blockSize;
      if (estimate.drainMs(dirtyBytes) <= this.o.downtimeMs) return { rounds, converged: true };
      if (this.finalizeAsked || this.round >= this.o.maxRounds) return { rounds, converged: false };
      if (dirtyBytes > previousDirty * SHRINK_NEEDED && !this.lastRoundStalled)
        disk.throttle.engage(estimate.tighterLimit(disk.throttle.limitBytesPerSecond));
      previousDirty = dirtyBytes;
      rounds.push(await this.sendRound(disk, estimate));
      this.emit();
    }
  }

  /**
   * Phase `holding`: until finalize, sends what the guest dirties every HOLD_INTERVAL_MS (or half
   * the downtime budget, when that is less), so the final drain stays within the budget however
   * long the memory's pre-copy takes. A guest that outruns the link (what piles up would not drain
   * within the budget, and does not shrink) is throttled as in catch-up. These rounds count in the
   * progress's `round` but not in the report's `rounds` (catch-up only).
   */
  private async holdInStep(estimate: DrainEstimate): Promise<void> {
    const { disk } = this.o;
    this.phase = DiskPhase.Holding;
    this.emit();
    // What piles up during the pause between rounds must itself drain within the budget.
    const intervalMs = Math.min(HOLD_INTERVAL_MS, this.o.downtimeMs / 2);
    let previousDirty = Infinity;
    while (!this.finalizeAsked) {
      this.check();
      const roundStart = performance.now();
      if (disk && disk.dirty.count > 0) {
        const dirtyBytes = disk.dirty.count * disk.dirty.blockSize;
        const outruns = dirtyBytes > previousDirty * SHRINK_NEEDED && !this.lastRoundStalled;
        if (estimate.drainMs(dirtyBytes) > this.o.downtimeMs && outruns) {
          disk.throttle.engage(estimate.tighterLimit(disk.throttle.limitBytesPerSecond));
        }
        previousDirty = dirtyBytes;
        await this.sendRound(disk, estimate, true);
        this.emit();
      } else {
        previousDirty = Infinity;
        this.emitEvery();
      }
      if (!this.finalizeAsked && !this.aborted) await this.nap(intervalMs - (performance.now() - roundStart));
    }
  }

  /**
   * One round: takes the dirty set, sends it, and waits until the destination holds it. A holding round gives up
   * waiting when finalize is asked: the guest is paused by then, and the final drain's own wait covers these
   * frames too, so the pause does not also hold this round's round trip.
   */
  private async sendRound(disk: DiskExport, estimate: DrainEstimate, holding = false): Promise<CatchUpRound> {
    this.round++;
    const start = performance.now();
    const before = {
      raw: this.encoder!.totals.rawBytes,
      wire: this.sender!.stats.bytesSent,
      probes: this.sender!.stats.probes,
    };
    const taken = disk.dirty.drain();
    const rawBytes = await this.sendDirty(taken);
    await this.writer!.flush();
    const drained = this.sender!.drain().then(() => true);
    const acked = holding ? await Promise.race([drained, this.finalizeRequested.then(() => false)]) : await drained;
    if (!acked) drained.catch(() => undefined); // the final drain reports a failure of these frames
    const seconds = (performance.now() - start) / 1000;
    // A probe means the destination fell silent during the round (see lastRoundStalled).
    this.lastRoundStalled = this.sender!.stats.probes > before.probes;
    // A round cut short says nothing about the link's pace, nor lets the activity log shrink.
    if (acked) await this.checkpoint();
    // Out of the pause (a finalize is the pause): the digests follow what this round saw written.
    if (!this.finalizeAsked) this.verifier?.kick();
    if (acked && !this.lastRoundStalled) {
      estimate.learn({
        rawBytes: this.encoder!.totals.rawBytes - before.raw,
        wireBytes: this.sender!.stats.bytesSent - before.wire,
        seconds,
      });
    }
    return {
      round: this.round,
      blocks: taken.count,
      rawBytes,
      seconds,
      dirtyAfter: disk.dirty.count * disk.dirty.blockSize,
    };
  }

  /** The resumed copy's "bulk": what the destination lacks or may hold stale (see resumePlan). */
  private async resumedExtents(
    disk: DiskExport | undefined,
  ): Promise<Array<{ offset: number; length: number; data: boolean }>> {
    if (!disk) return [{ offset: 0, length: this.sizeBytes, data: true }];
    // An export without an activity log cannot say what changed: all of it is unsure.
    const unsure = this.o.resume?.unsure ?? BlockMap.full(disk.dirty.geometry);
    const plan = await resumePlan({
      nc: this.o.nc,
      migrationId: this.o.migrationId,
      destSite: this.o.destSite,
      dirty: disk.dirty,
      unsure,
      untilAnswered: (request) => this.untilAnswered(request),
      log: this.o.log,
    });
    this.o.log?.(
      `migration ${this.o.migrationId} resumed: ${plan.blocks.byteCount} bytes to send again ` +
        `(${unsure.byteCount} unsure in the activity log, ` +
        `${plan.presentBlocks ?? 'unknown'} blocks present at ${this.o.destSite})`,
    );
    return [...plan.blocks.byteRanges({ maxBytes: this.sizeBytes })].map((r) => ({ ...r, data: true }));
  }

  /**
   * Everything sent is acknowledged: the activity log shrinks to the dirty map (and writes in flight). `force` at the
   * end of the bulk pass; otherwise at most once per CHECKPOINT_MS.
   */
  private async checkpoint(force = false): Promise<void> {
    const { disk } = this.o;
    if (!disk?.activity || (!force && performance.now() - this.lastCheckpoint < CHECKPOINT_MS)) return;
    this.lastCheckpoint = performance.now();
    await disk.activity.checkpoint(disk.dirty);
  }

  /** A request to the destination, asked again while it does not answer (it may be restarting), up to the give-up. */
  private async untilAnswered<T>(request: () => Promise<T>): Promise<T> {
    const deadline = performance.now() + this.o.giveUpAfterMs;
    for (;;) {
      this.check();
      try {
        return await request();
      } catch (err) {
        if (!(err instanceof WanmigError && err.code === ErrorCode.Unavailable) || performance.now() > deadline)
          throw err;
      }
      await this.nap(500);
    }
  }

  private nap(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    }).finally(() => (this.wake = undefined));
  }

  private async sendDirty(blocks: BlockMap): Promise<number> {
    let bytes = 0;
    for (const range of blocks.byteRanges({ maxBytes: Math.max(MIN_READ_BYTES, blocks.blockSize) })) {
      await this.sendRange(range.offset, range.length);
      bytes += range.length;
      this.emitEvery();
    }
    return bytes;
  }

  private async sendRange(offset: number, length: number): Promise<void> {
    this.check();
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh!.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) {
        buf.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    await this.writer!.write(offset, buf);
  }

  /**
   * From the end of the bulk pass on, both images' digests are kept as the copy goes on (see DiskVerifier): the final
   * comparison then hashes only what was written since.
   */
  private startVerifier(digestSubject: string): void {
    const { nc, migrationId } = this.o;
    this.verifier = new DiskVerifier({
      migrationId,
      imagePath: this.o.imagePath,
      sizeBytes: this.sizeBytes,
      blockSize: this.o.blockSize,
      remote: async (regionBytes) =>
        (await callControl<DiskDigestReply>(nc, digestSubject, { migrationId, regionBytes }, 120_000)).digests,
      log: this.o.log,
    });
    this.verifier.track(this.o.disk);
  }

  private lastEmit = 0;
  private emitEvery(): void {
    const now = performance.now();
    if (now - this.lastEmit >= 250) this.emit();
  }

  private emit(): void {
    this.lastEmit = performance.now();
    this.o.onProgress?.(this.progress());
  }

  private check(): void {
    if (this.aborted) throw new MigrationAbortedError(this.o.migrationId, this.phase);
  }
}

function emptyThrottle() {
  return {
    engaged: false,
    limitBytesPerSecond: null,
    writesDelayed: 0,
    totalDelayMs: 0,
    guestBytes: 0,
    engagedAtMs: null,
  };
}
