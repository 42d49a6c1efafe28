import { readFile } from 'node:fs/promises';
import type { NatsConnection } from '@nats-io/nats-core';
import type { IncomingVm } from '@wanmig/hypervisor';
import {
  toWireError,
  type MemoryStatusReply,
  type PrepareMemoryReply,
  type ResumeVmReply,
  type WireError,
} from '@wanmig/protocol';
import { FileWatermarkStore, type Watermark } from '@wanmig/stream';
import { sha256, type HeldDeviceState } from './device-state.sink.js';
import { describe, type SessionLogger } from './disk.session.js';
import { MemoryManifestStore, type MemoryManifest, type ResumedVm } from './memory-manifest.store.js';
import { MemoryReceivers } from './memory.receivers.js';
import { ramFileDigests, type RamDigest } from '@wanmig/stream';
import type { MemoryPaths } from './migration.paths.js';

export interface MemorySessionOptions {
  nc: NatsConnection;
  paths: MemoryPaths;
  logger: SessionLogger;
}

/** Where the streams stood when they closed (or, after a restart, as their files say). */
interface ClosedStreams {
  watermark: Watermark;
  bytesApplied: number;
  rejectedFrames: number;
  deviceState?: HeldDeviceState;
}

/**
 * One migration's destination memory while this process serves it: the RAM file's receivers
 * until a resume stops them, then the VM that runs from the RAM. Opening a session that has no VM
 * yet always resumes receiving from the persisted watermarks, so a first prepare, a retried one and
 * a restart after kill -9 take the same path; a session whose VM already runs opens without
 * receivers (the RAM is the VM's now).
 */
export class MemorySession {
  private failure?: WireError;
  private closed?: ClosedStreams;
  private vm?: IncomingVm;
  private closing?: Promise<void>;
  private manifestWrites: Promise<void> = Promise.resolve();
  private readonly background = new Set<Promise<void>>();

  private constructor(
    private manifest: MemoryManifest,
    private readonly options: MemorySessionOptions,
    private receivers: MemoryReceivers | undefined,
  ) {}

  private hashOnFinish = false;
  private ramDigest?: Promise<RamDigest>;

  static async open(manifest: MemoryManifest, options: MemorySessionOptions, fresh = false): Promise<MemorySession> {
    if (manifest.vm) {
      const session = new MemorySession(manifest, options, undefined);
      session.closed = await readClosedStreams(options.paths);
      return session;
    }
    const receivers = await MemoryReceivers.open(manifest, options, fresh);
    const session = new MemorySession(manifest, options, receivers);
    session.watch(receivers);
    if (manifest.verifyRam) session.hashWhenFinished();
    return session;
  }

  get migrationId(): string {
    return this.manifest.migrationId;
  }

  get ramPath(): string {
    return this.manifest.ramPath;
  }

  get ramBytes(): number {
    return this.manifest.ramBytes;
  }

  get pageSize(): number {
    return this.manifest.pageSize;
  }

  /** Pages and device state are being received (no resume has stopped them). */
  get isReceiving(): boolean {
    return this.receivers !== undefined;
  }

  /** A stream failed for good (a frame that kept failing to apply): a new prepare receives again. */
  get hasFailed(): boolean {
    return this.failure !== undefined;
  }

  /** The memory stream's End frame is durable. */
  get isFinished(): boolean {
    return this.manifest.finished;
  }

  /** The VM that runs from this RAM, once resumed. */
  get resumedVm(): ResumedVm | undefined {
    return this.manifest.vm;
  }

  /** The VM this process started for the migration, while it holds it. */
  get incomingVm(): IncomingVm | undefined {
    return this.vm;
  }

  /**
   * A resume will check the RAM: hash it as soon as the memory stream has finished (its End durable, so nothing
   * writes the file any more), while the source is still busy with the disk's last blocks.
   */
  hashWhenFinished(): void {
    this.hashOnFinish = true;
    if (this.manifest.finished) this.startRamDigest();
    // On record, so that a service restarted before the end still hashes ahead of the resume.
    if (!this.manifest.verifyRam) this.runInBackground(this.updateManifest((m) => ({ ...m, verifyRam: true })));
  }

  /** The RAM file's digest (with its regions'), when {@link hashWhenFinished} started it. */
  get precomputedRamDigest(): Promise<RamDigest> | undefined {
    return this.ramDigest;
  }

  /** That digest if it is already computed (nothing waits for it). */
  get ramDigestIfReady(): RamDigest | undefined {
    return this.ramDigestValue;
  }

  private ramDigestValue?: RamDigest;

  private startRamDigest(): void {
    if (this.ramDigest) return;
    this.ramDigest = ramFileDigests(this.ramPath, this.ramBytes);
    // Awaited by the resume; a failure meanwhile must not go unhandled.
    this.ramDigest.then((digest) => (this.ramDigestValue = digest)).catch(() => undefined);
  }

  get deviceState(): HeldDeviceState | undefined {
    return this.receivers?.deviceState ?? this.closed?.deviceState;
  }

  prepareReply(resumed: boolean): PrepareMemoryReply {
    return { ramPath: this.ramPath, resumed, nextSeq: this.position().watermark.nextSeq };
  }

  status(): MemoryStatusReply {
    const { watermark, bytesApplied, rejectedFrames } = this.position();
    const state = this.deviceState;
    const vm = this.manifest.vm;
    const reply: MemoryStatusReply = {
      migrationId: this.migrationId,
      ramPath: this.ramPath,
      ramBytes: this.ramBytes,
      pageSize: this.pageSize,
      nextSeq: watermark.nextSeq,
      cursor: watermark.cursor,
      bytesApplied,
      finished: this.manifest.finished,
      rejectedFrames,
      deviceStateBytes: state?.blob.length ?? 0,
      running: vm !== undefined,
    };
    if (state) reply.deviceStateSha256 = state.sha256;
    if (vm) Object.assign(reply, { vmId: vm.vmId, serviceAddress: vm.serviceAddress, resumedAt: vm.resumedAt });
    if (this.failure) reply.failure = this.failure;
    return reply;
  }

  resumeReply(): ResumeVmReply | undefined {
    const vm = this.manifest.vm;
    return vm && { vmId: vm.vmId, serviceAddress: vm.serviceAddress, resumedAt: vm.resumedAt };
  }

  /** Stops both streams for good; the RAM file is durable and closed when this resolves. Idempotent. */
  async stopReceiving(): Promise<void> {
    const receivers = this.receivers;
    if (!receivers) return;
    await receivers.stop();
    this.closed = {
      watermark: receivers.watermark,
      bytesApplied: receivers.bytesApplied,
      rejectedFrames: receivers.rejectedFrames,
      deviceState: receivers.deviceState,
    };
    this.receivers = undefined;
  }

  /** Holds the VM started for this migration (to stop it on a failure, a rollback or a release). */
  attachVm(vm: IncomingVm | undefined): void {
    this.vm = vm;
  }

  /** The receiving VM started early, recorded so that a restarted service adopts it. */
  recordIncoming(vmId: string): Promise<void> {
    return this.updateManifest((manifest) => ({ ...manifest, incomingVmId: vmId }));
  }

  /** The receiving VM an earlier process of this service started, if any (see {@link recordIncoming}). */
  get incomingVmId(): string | undefined {
    return this.manifest.incomingVmId;
  }

  /** The VM runs: recorded durably, so a restarted service never receives into its RAM again. */
  recordResumed(vm: ResumedVm): Promise<void> {
    return this.updateManifest((manifest) => ({ ...manifest, vm }));
  }

  /** Stops receiving and waits for background work; a VM is left as it is (the caller decides). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.stopReceiving();
      await Promise.allSettled([...this.background]);
    })();
    return this.closing;
  }

  private position(): ClosedStreams {
    const receivers = this.receivers;
    if (!receivers) return this.closed ?? { watermark: { nextSeq: 0, cursor: 0 }, bytesApplied: 0, rejectedFrames: 0 };
    return {
      watermark: receivers.watermark,
      bytesApplied: receivers.bytesApplied,
      rejectedFrames: receivers.rejectedFrames,
    };
  }

  /** The End of the page stream is recorded in the manifest; a stream that fails for good is reported. */
  private watch(receivers: MemoryReceivers): void {
    const onFailure = (what: string) => (err: unknown) => {
      if (this.closing || this.receivers !== receivers) return;
      this.failure ??= toWireError(err);
      this.options.logger.error(`${what} of ${this.migrationId} failed: ${describe(err)}`);
    };
    receivers.pages.finished().then(() => {
      if (this.hashOnFinish && this.receivers === receivers) this.startRamDigest();
      this.runInBackground(this.markFinished());
    }, onFailure('memory receive'));
    receivers.deviceStateStream.finished().catch(onFailure('device-state receive'));
  }

  private async markFinished(): Promise<void> {
    if (this.closing || this.manifest.finished) return;
    await this.updateManifest((manifest) => ({ ...manifest, finished: true }));
    const { nextSeq, cursor } = this.position().watermark;
    this.options.logger.log(`memory of ${this.migrationId} finished: seq ${nextSeq}, cursor ${cursor}`);
  }

  /** Manifest changes one at a time, each on the latest version, each durable before it counts. */
  private updateManifest(change: (manifest: MemoryManifest) => MemoryManifest): Promise<void> {
    const run = this.manifestWrites.then(async () => {
      const next = change(this.manifest);
      await new MemoryManifestStore(this.options.paths.manifest).save(next);
      this.manifest = next;
    });
    this.manifestWrites = run.catch(() => undefined);
    return run;
  }

  private runInBackground(work: Promise<void>): void {
    const tracked = work.catch((err: unknown) =>
      this.options.logger.error(`migration ${this.migrationId}: ${describe(err)}`),
    );
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }
}

/** The streams' last durable position and device state, read from their files. */
async function readClosedStreams(paths: MemoryPaths): Promise<ClosedStreams> {
  const watermark = (await new FileWatermarkStore(paths.memoryWatermark).load()) ?? { nextSeq: 0, cursor: 0 };
  let deviceState: HeldDeviceState | undefined;
  try {
    const blob = await readFile(paths.deviceState);
    deviceState = { blob, sha256: sha256(blob) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { watermark, bytesApplied: 0, rejectedFrames: 0, deviceState };
}
