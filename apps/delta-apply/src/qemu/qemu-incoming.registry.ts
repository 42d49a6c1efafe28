import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  DEFAULT_ANNOUNCE,
  QemuDriver,
  type QemuIncomingSpec,
  type QemuIncomingVm,
  type QmpClient,
} from '@wanmig/hypervisor';
import {
  AbortQemuIncomingRequest,
  ErrorCode,
  MigrationRef,
  ResumeQemuRequest,
  StartQemuIncomingRequest,
  toWireError,
  type AbortQemuIncomingReply,
  type QemuIncomingStatusReply,
  type ResumeQemuReply,
  type StartQemuIncomingReply,
  type WireError,
} from '@wanmig/protocol';
import type { DataPlaneConnection } from '../data-plane.connection.js';
import type { DeltaApplyConfig } from '../delta-apply.config.js';
import type { DiskReceiverService } from '../disk-receiver.service.js';
import { MigrationConflictError, ServiceStoppingError } from '../errors.js';
import { KeyedLock } from '../keyed.lock.js';
import { parseRequest as parse } from '../request.parser.js';
import {
  QemuDestinationConflictError,
  QemuDestinationNotFoundError,
  QemuDestinationStateError,
  QemuStreamCheckError,
  type QemuDestinationError,
} from './qemu-destination.errors.js';
import { ABORTED, describeExit, incomingMigrationStatus, isLoaded, waitForLoad } from './qemu-incoming.load.js';
import { QemuDestinationRecords } from './qemu-destination.record.js';
import { QemuMigrationSink, type QemuMigrationSinkOptions } from './qemu-migration.sink.js';

/** Destination QEMUs keep their sockets and logs in `<simRuntimeDir>/qemu/<migrationId>/`. */
export const QEMU_RUN_SUBDIR = 'qemu';
/** Aborted migration ids remembered (so that a late start of one is refused): the most recent ones. */
const MAX_TOMBSTONES = 4096;
/** At shutdown, how long a running post-copy destination's feed gets to bring the rest of its RAM. */
export const SHUTDOWN_POSTCOPY_WAIT_MS = 10_000;

/** What the registry needs of a destination QEMU (QemuIncomingVm; a fake in unit specs). */
export type DestinationQemu = Pick<
  QemuIncomingVm,
  | 'pid'
  | 'servicePort'
  | 'incomingSocket'
  | 'monitorSocket'
  | 'exit'
  | 'exited'
  | 'status'
  | 'resume'
  | 'stop'
  | 'stderrTail'
> & { readonly qmp: Pick<QmpClient, 'execute'> };

/** What the registry needs of a sink (QemuMigrationSink). */
export type DestinationSink = Pick<QemuMigrationSink, 'done' | 'progress' | 'stop'>;

/** The registry's collaborators: the seam unit specs replace. */
export interface QemuIncomingDeps {
  startQemu(spec: QemuIncomingSpec): Promise<DestinationQemu>;
  startSink(options: QemuMigrationSinkOptions): Promise<DestinationSink>;
  /** The image delta-apply built for the migration (its disk session's path); NOT_FOUND when there is none. */
  diskPathOf(migrationId: string): string;
  /** The data-plane connection the sink receives on. */
  nc(): NatsConnection;
  /** Keeps each destination's record in its run dir, for QemuOrphanReaper after a crash (none in unit specs). */
  records?: Pick<QemuDestinationRecords, 'started' | 'resumed'>;
}

/** The registry as delta-apply runs it: QemuDriver, QemuMigrationSink, the disk sessions' images. */
export function createQemuIncomingRegistry(
  config: DeltaApplyConfig,
  dataPlane: DataPlaneConnection,
  disks: DiskReceiverService,
): QemuIncomingRegistry {
  const driver = new QemuDriver();
  return new QemuIncomingRegistry(config.simRuntimeDir, {
    startQemu: (spec) => driver.startIncoming(spec),
    startSink: (options) => QemuMigrationSink.start(options),
    diskPathOf: (migrationId) => disks.status({ migrationId }).path,
    nc: () => dataPlane.nc,
    records: new QemuDestinationRecords(),
  });
}

interface Destination {
  migrationId: string;
  /** The request with its defaults and the effective disk path: a repeat must be the same. */
  key: string;
  diskPath: string;
  runDir: string;
  /** Started with `postcopy`: loaded also while `postcopy-active`, its return path goes back to the relay. */
  postcopy: boolean;
  vm: DestinationQemu;
  sink: DestinationSink;
  sinkDone: boolean;
  sinkError?: WireError;
  /** An abort is waiting for the lock: a resume still waiting for the load gives up. */
  abortRequested: boolean;
  resumed?: ResumeQemuReply;
  aborted?: AbortQemuIncomingReply;
}

/**
 * delta-apply's destination QEMUs (`mem.qemu.*`): for a migration whose disk this site receives, starts the guest's
 * QEMU on that image, paused on `-incoming`, with a QemuMigrationSink feeding it QEMU's stream as it arrives; runs
 * it once loaded (with `postcopy`, once it holds the device state: the rest of the RAM arrives, or is asked for over
 * the return path the sink sends back, while it runs); stops it on abort. Every request about one migration runs
 * under its lock, so a start, a resume and an abort never interleave; an abort also tells a resume that waits for
 * the load to give up. A destination that was aborted (or whose abort came first) is never started or run.
 *
 * At shutdown, destinations that never ran are stopped; those that run are left running (the VM outlives the
 * service, as a sim guest does), only their feed is stopped (a post-copy one's after its RAM has arrived, within
 * SHUTDOWN_POSTCOPY_WAIT_MS: without the feed its guest would wait forever for the pages it lacks).
 */
export class QemuIncomingRegistry implements BeforeApplicationShutdown {
  private readonly logger = new Logger('delta-apply');
  private readonly destinations = new Map<string, Destination>();
  private readonly tombstones = new Set<string>();
  private readonly lock = new KeyedLock();
  private readonly runRoot: string;
  private stopping = false;

  constructor(
    runtimeDir: string,
    private readonly deps: QemuIncomingDeps,
    /** At shutdown, how long a running post-copy destination's feed gets to bring the rest of its RAM. */
    private readonly postcopyWaitMs = SHUTDOWN_POSTCOPY_WAIT_MS,
  ) {
    this.runRoot = resolve(runtimeDir, QEMU_RUN_SUBDIR);
  }

  async start(body: unknown): Promise<StartQemuIncomingReply> {
    const request = parse(StartQemuIncomingRequest, body);
    const { migrationId } = request;
    return await this.lock.run(migrationId, async () => {
      if (this.stopping) throw new ServiceStoppingError();
      if (this.tombstones.has(migrationId)) {
        throw new QemuDestinationConflictError(migrationId, 'aborted; it is not started again');
      }
      const diskPath = this.deps.diskPathOf(migrationId);
      if (request.diskPath !== undefined && resolve(request.diskPath) !== diskPath) {
        throw new MigrationConflictError({
          migrationId,
          field: 'diskPath',
          message: `${request.diskPath} is not the image of migration ${migrationId} (${diskPath})`,
        });
      }
      const key = requestKey(request, diskPath);
      const known = this.destinations.get(migrationId);
      if (known) {
        if (known.key !== key)
          throw new QemuDestinationConflictError(migrationId, 'already started with other options');
        return this.startReply(known, (await known.vm.status()).status);
      }
      return this.launch(request, diskPath, key);
    });
  }

  async status(body: unknown): Promise<QemuIncomingStatusReply> {
    const d = this.destination(parse(MigrationRef, body).migrationId);
    const state = d.aborted ? { status: ABORTED, running: false } : await d.vm.status();
    const migrationStatus = await incomingMigrationStatus(d.vm, state.status);
    const progress = d.sink.progress;
    return {
      migrationId: d.migrationId,
      diskPath: d.diskPath,
      servicePort: d.vm.servicePort,
      pid: d.vm.pid,
      monitorSocket: d.vm.monitorSocket,
      postcopy: d.postcopy,
      status: state.status,
      running: state.running,
      ...(migrationStatus === undefined ? {} : { migrationStatus }),
      loaded: d.resumed !== undefined || isLoaded(state.status, migrationStatus, d.postcopy),
      resumed: d.resumed !== undefined,
      aborted: d.aborted !== undefined,
      ...(d.resumed ? { resumedAt: d.resumed.resumedAt } : {}),
      sink: {
        bytesWritten: progress.bytesWritten,
        frames: progress.frames,
        payloadBytes: progress.payloadBytes,
        connected: progress.connected,
        ended: progress.ended,
        returnBytes: progress.returnBytes,
        ...(progress.returnPathError === undefined ? {} : { returnPathError: progress.returnPathError }),
        done: d.sinkDone,
        verifiedBytes: progress.verifiedBytes,
        endVerified: progress.endVerified,
        streamSha256: progress.streamSha256,
        ...(d.sinkError ? { error: d.sinkError } : {}),
      },
    };
  }

  /**
   * Waits for the stream to be loaded (with `postcopy`, its device state: `postcopy-active` and `paused`), then
   * `cont` and `announce-self`. A repeat gets the first reply.
   */
  async resume(body: unknown): Promise<ResumeQemuReply> {
    const request = parse(ResumeQemuRequest, body);
    const d = this.destination(request.migrationId);
    return await this.lock.run(request.migrationId, async () => {
      if (d.resumed) return d.resumed;
      if (d.aborted || d.abortRequested)
        throw new QemuDestinationConflictError(d.migrationId, 'aborted; it never runs');
      const t0 = performance.now();
      try {
        await waitForLoad(d.vm, {
          migrationId: d.migrationId,
          postcopy: d.postcopy,
          timeoutMs: request.loadTimeoutMs,
          aborting: () => d.abortRequested,
          feedError: () => d.sinkError,
        });
      } catch (err) {
        // A QEMU whose feed was cut over a digest that differed exits: say why, not only that it exited.
        throw this.refusal(d) ?? err;
      }
      // Pre-copy: the whole stream, checked end to end, before the guest runs. Post-copy runs on the device state
      // with RAM still to come: its segments are checked as they arrive, the last ones only after `cont`.
      if (!d.postcopy) await this.verifiedFeed(d, request.loadTimeoutMs - (performance.now() - t0));
      const t1 = performance.now();
      const announce = request.announceRounds > 0 ? { ...DEFAULT_ANNOUNCE, rounds: request.announceRounds } : false;
      const result = await d.vm.resume(announce);
      const t2 = performance.now();
      d.resumed = {
        migrationId: d.migrationId,
        status: result.status,
        resumedAt: Date.now(),
        loadWaitMs: round(t1 - t0),
        contMs: round(t2 - t1),
        warnings: result.warnings,
      };
      for (const warning of result.warnings) this.logger.warn(`resume of ${d.migrationId}: ${warning}`);
      await this.record(d.migrationId, () => this.deps.records?.resumed(d.runDir, d.resumed!.resumedAt));
      this.logger.log(`destination QEMU of ${d.migrationId} runs (pid ${d.vm.pid}, port ${d.vm.servicePort})`);
      return d.resumed;
    });
  }

  /**
   * Stops the feed and the QEMU (never to run), and removes its run dir. A repeat answers `stopped: false`. An
   * unknown migration is NOT_FOUND, and remembered: a start that arrives after its abort is refused.
   */
  async abort(body: unknown): Promise<AbortQemuIncomingReply> {
    const request = parse(AbortQemuIncomingRequest, body);
    const { migrationId } = request;
    const early = this.destinations.get(migrationId);
    if (early && !early.resumed) early.abortRequested = true;
    return await this.lock.run(migrationId, async () => {
      const d = this.destinations.get(migrationId);
      if (!d) {
        this.bury(migrationId);
        throw new QemuDestinationNotFoundError(migrationId);
      }
      if (d.aborted) return { ...d.aborted, stopped: false };
      if (d.resumed && !request.stopRunning) {
        d.abortRequested = false; // refused: the destination runs on as if it had never been asked
        throw new QemuDestinationConflictError(migrationId, 'it runs the VM already (stopRunning stops it)');
      }
      d.abortRequested = true;
      await this.teardown(d);
      d.aborted = { migrationId, stopped: true, wasRunning: d.resumed !== undefined };
      this.bury(migrationId);
      this.logger.warn(`destination QEMU of ${migrationId} aborted${d.resumed ? ' (it was running)' : ''}`);
      return d.aborted;
    });
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    for (const d of this.destinations.values()) if (!d.resumed) d.abortRequested = true;
    await this.lock.drain();
    const work = [...this.destinations.values()].filter((d) => !d.aborted);
    await Promise.allSettled(
      work.map(async (d) => {
        if (d.resumed) {
          if (d.postcopy && !d.sinkDone) await this.awaitPostcopyFeed(d);
          await d.sink.stop();
          this.logger.log(`leaving the running destination QEMU of ${d.migrationId} (pid ${d.vm.pid})`);
        } else {
          await this.teardown(d);
        }
      }),
    );
  }

  private async launch(request: StartQemuIncomingRequest, diskPath: string, key: string) {
    const { migrationId } = request;
    const runDir = join(this.runRoot, migrationId);
    const vm = await this.deps.startQemu({
      name: `wanmig-in-${migrationId.slice(0, 8)}`,
      diskPath,
      ramMiB: request.ramMiB,
      kernel: request.kernel,
      initrd: request.initrd,
      append: request.append,
      machine: request.machine,
      accel: request.accel,
      cpus: request.cpus,
      servicePort: request.servicePort,
      guestPort: request.guestPort,
      runDir,
      postcopy: request.postcopy,
      ...(request.network ? { network: { ...request.network } } : {}),
    });
    let sink: DestinationSink;
    try {
      // First: from here a crash of delta-apply leaves this QEMU to the next one's QemuOrphanReaper.
      await this.record(migrationId, () => this.deps.records?.started(migrationId, runDir, vm.pid));
      const state = await vm.status();
      if (state.status !== 'inmigrate') {
        throw new QemuDestinationStateError(ErrorCode.Unavailable, `QEMU started ${state.status}, not inmigrate`, {
          migrationId,
          state: state.status,
        });
      }
      sink = await this.deps.startSink({
        nc: this.deps.nc(),
        migrationId,
        socketPath: vm.incomingSocket,
        returnPath: request.postcopy,
      });
    } catch (err) {
      await vm.stop().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
      throw err;
    }
    const d: Destination = {
      migrationId,
      key,
      diskPath,
      runDir,
      postcopy: request.postcopy,
      vm,
      sink,
      sinkDone: false,
      abortRequested: false,
    };
    sink.done.then(
      () => (d.sinkDone = true),
      (err: unknown) => {
        d.sinkDone = true;
        d.sinkError = toWireError(err);
        if (!d.abortRequested) this.logger.warn(`QEMU stream of ${migrationId} failed: ${d.sinkError.message}`);
      },
    );
    void vm.exited.then((exit) => {
      if (!d.abortRequested && !this.stopping)
        this.logger.warn(`destination QEMU of ${migrationId} ${describeExit(exit)}`);
    });
    this.destinations.set(migrationId, d);
    this.logger.log(
      `destination QEMU of ${migrationId} waits on ${vm.incomingSocket} (pid ${vm.pid}, ${request.ramMiB} MiB, ` +
        `disk ${diskPath}, ${request.network ? `tap ${request.network.tap} in ${request.network.netns}` : `port ${vm.servicePort}`}` +
        `${request.postcopy ? ', post-copy' : ''})`,
    );
    return this.startReply(d, 'inmigrate');
  }

  private startReply(d: Destination, status: string): StartQemuIncomingReply {
    return {
      migrationId: d.migrationId,
      diskPath: d.diskPath,
      servicePort: d.vm.servicePort,
      pid: d.vm.pid,
      status,
      monitorSocket: d.vm.monitorSocket,
    };
  }

  /**
   * Waits (at most `timeoutMs`) for the feed to end with its last digest matched. The End follows QEMU's last bytes
   * at once, so a destination that has loaded them waits here for no more than their arrival.
   */
  private async verifiedFeed(d: Destination, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const settled = d.sink.done.then(
      () => 'done' as const,
      () => 'failed' as const,
    );
    const outcome = await Promise.race([settled, timeout]);
    clearTimeout(timer);
    const refused = this.refusal(d);
    if (refused) throw refused;
    if (outcome === 'timeout') {
      throw new QemuDestinationStateError(
        ErrorCode.StreamTimeout,
        `destination QEMU of ${d.migrationId} loaded, but the end of its stream and its last digest did not ` +
          `arrive in time (${d.sink.progress.verifiedBytes} of ${d.sink.progress.bytesWritten} bytes checked)`,
        { migrationId: d.migrationId, state: 'paused' },
      );
    }
    if (!d.sink.progress.endVerified) throw new QemuStreamCheckError(d.migrationId, 'its stream ended unchecked');
  }

  /** Why the feed rules out running this destination: a digest that differed, or a feed that failed. */
  private refusal(d: Destination): QemuDestinationError | undefined {
    if (!d.sinkError) return undefined;
    if (d.sinkError.code === ErrorCode.DigestMismatch)
      return new QemuStreamCheckError(d.migrationId, d.sinkError.message);
    return new QemuDestinationStateError(
      d.sinkError.code,
      `destination QEMU of ${d.migrationId} is not run: its feed failed: ${d.sinkError.message}`,
      { migrationId: d.migrationId, state: 'inmigrate' },
    );
  }

  /** A running post-copy destination still lacks RAM that only its feed brings: it gets a while to finish. */
  private async awaitPostcopyFeed(d: Destination): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.postcopyWaitMs)));
    const settled = d.sink.done.then(
      () => true,
      () => true,
    );
    const done = await Promise.race([settled, timeout]);
    clearTimeout(timer);
    if (!done) {
      this.logger.warn(
        `the post-copy feed of ${d.migrationId} is not done after ${this.postcopyWaitMs} ms: stopping it, ` +
          `the guest (pid ${d.vm.pid}) may lack pages`,
      );
    }
  }

  /** The feed first (nothing more reaches QEMU), then QEMU, then its run dir. */
  private async teardown(d: Destination): Promise<void> {
    await d.sink
      .stop()
      .catch((err: unknown) => this.logger.warn(`stopping the feed of ${d.migrationId}: ${String(err)}`));
    await d.vm.stop();
    await rm(d.runDir, { recursive: true, force: true });
  }

  /** A record that cannot be written costs only the clean-up after a crash: logged, never fatal. */
  private async record(migrationId: string, write: () => Promise<void> | undefined): Promise<void> {
    try {
      await write();
    } catch (err) {
      this.logger.warn(`cannot record the destination QEMU of ${migrationId}: ${String(err)}`);
    }
  }

  private bury(migrationId: string): void {
    this.tombstones.delete(migrationId);
    this.tombstones.add(migrationId);
    if (this.tombstones.size > MAX_TOMBSTONES) this.tombstones.delete(this.tombstones.values().next().value!);
  }

  private destination(migrationId: string): Destination {
    const d = this.destinations.get(migrationId);
    if (!d) throw new QemuDestinationNotFoundError(migrationId);
    return d;
  }
}

/** What makes two starts the same request (in a fixed order: JSON of the DTO would follow the body's key order). */
function requestKey(r: StartQemuIncomingRequest, diskPath: string): string {
  const { ramMiB, kernel, initrd, append, machine, accel, cpus, servicePort, guestPort, postcopy, network } = r;
  return JSON.stringify([
    diskPath,
    ramMiB,
    kernel,
    initrd,
    append,
    machine,
    accel,
    cpus,
    servicePort || 0,
    guestPort,
    postcopy,
    network ? [network.netns, network.tap, network.mac.toLowerCase()] : null,
  ]);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
