import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  DEFAULT_ANNOUNCE,
  QEMU_EXITED,
  QemuDriver,
  type QemuExit,
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
} from './qemu-destination.errors.js';
import { QemuMigrationSink, type QemuMigrationSinkOptions } from './qemu-migration.sink.js';

/** Destination QEMUs keep their sockets and logs in `<simRuntimeDir>/qemu/<migrationId>/`. */
export const QEMU_RUN_SUBDIR = 'qemu';
/** How often a resume looks whether the destination has finished loading the stream. */
const LOAD_POLL_MS = 10;
/** Aborted migration ids remembered (so that a late start of one is refused): the most recent ones. */
const MAX_TOMBSTONES = 4096;
/** Run states of a destination that has loaded the stream and waits for `cont` (-S). */
const LOADED_STATES = new Set(['paused', 'prelaunch']);

/** What the registry needs of a destination QEMU (QemuIncomingVm; a fake in unit specs). */
export type DestinationQemu = Pick<
  QemuIncomingVm,
  'pid' | 'servicePort' | 'incomingSocket' | 'exit' | 'exited' | 'status' | 'resume' | 'stop' | 'stderrTail'
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
  });
}

interface Destination {
  migrationId: string;
  /** The request with its defaults and the effective disk path: a repeat must be the same. */
  key: string;
  diskPath: string;
  runDir: string;
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
 * it once loaded; stops it on abort. Every request about one migration runs under its lock, so a start, a resume and
 * an abort never interleave; an abort also tells a resume that waits for the load to give up. A destination that was
 * aborted (or whose abort came first) is never started or run.
 *
 * At shutdown, destinations that never ran are stopped; those that run are left running (the VM outlives the
 * service, as a sim guest does), only their feed is stopped.
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
    const state = d.aborted ? { status: 'aborted', running: false } : await d.vm.status();
    const live = state.status !== QEMU_EXITED && state.status !== 'aborted';
    const info = live ? await d.vm.qmp.execute<{ status?: string }>('query-migrate').catch(() => undefined) : undefined;
    const progress = d.sink.progress;
    return {
      migrationId: d.migrationId,
      diskPath: d.diskPath,
      servicePort: d.vm.servicePort,
      pid: d.vm.pid,
      status: state.status,
      running: state.running,
      ...(info?.status === undefined ? {} : { migrationStatus: info.status }),
      loaded: d.resumed !== undefined || (LOADED_STATES.has(state.status) && info?.status !== 'failed'),
      resumed: d.resumed !== undefined,
      aborted: d.aborted !== undefined,
      ...(d.resumed ? { resumedAt: d.resumed.resumedAt } : {}),
      sink: {
        bytesWritten: progress.bytesWritten,
        frames: progress.frames,
        payloadBytes: progress.payloadBytes,
        connected: progress.connected,
        ended: progress.ended,
        done: d.sinkDone,
        ...(d.sinkError ? { error: d.sinkError } : {}),
      },
    };
  }

  /** Waits for the stream to be loaded, then `cont` and `announce-self`. A repeat gets the first reply. */
  async resume(body: unknown): Promise<ResumeQemuReply> {
    const request = parse(ResumeQemuRequest, body);
    const d = this.destination(request.migrationId);
    return await this.lock.run(request.migrationId, async () => {
      if (d.resumed) return d.resumed;
      if (d.aborted || d.abortRequested)
        throw new QemuDestinationConflictError(d.migrationId, 'aborted; it never runs');
      const t0 = performance.now();
      await this.waitLoaded(d, request.loadTimeoutMs);
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
    });
    let sink: DestinationSink;
    try {
      const state = await vm.status();
      if (state.status !== 'inmigrate') {
        throw new QemuDestinationStateError(ErrorCode.Unavailable, `QEMU started ${state.status}, not inmigrate`, {
          migrationId,
          state: state.status,
        });
      }
      sink = await this.deps.startSink({ nc: this.deps.nc(), migrationId, socketPath: vm.incomingSocket });
    } catch (err) {
      await vm.stop().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
      throw err;
    }
    const d: Destination = { migrationId, key, diskPath, runDir, vm, sink, sinkDone: false, abortRequested: false };
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
        `disk ${diskPath}, port ${vm.servicePort})`,
    );
    return this.startReply(d, 'inmigrate');
  }

  private startReply(d: Destination, status: string): StartQemuIncomingReply {
    return { migrationId: d.migrationId, diskPath: d.diskPath, servicePort: d.vm.servicePort, pid: d.vm.pid, status };
  }

  /** Until the run state says loaded (paused after -incoming -S); gives up on an abort, an exit or the time. */
  private async waitLoaded(d: Destination, timeoutMs: number): Promise<void> {
    const { migrationId } = d;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const state = await d.vm.status();
      if (LOADED_STATES.has(state.status)) return;
      if (d.abortRequested) throw new QemuDestinationConflictError(migrationId, 'aborted while waiting for the load');
      if (state.status === QEMU_EXITED) {
        const tail = d.vm.stderrTail(5).trim();
        throw new QemuDestinationStateError(
          ErrorCode.Unavailable,
          `the destination QEMU of ${migrationId} ${describeExit(d.vm.exit)}${tail ? `: ${tail}` : ''}`,
          { migrationId, state: state.status },
        );
      }
      if (state.status !== 'inmigrate') {
        throw new QemuDestinationStateError(
          ErrorCode.Conflict,
          `destination QEMU of ${migrationId} is ${state.status}`,
          {
            migrationId,
            state: state.status,
          },
        );
      }
      if (performance.now() >= deadline) {
        const fed = d.sinkError ? ` (its feed failed: ${d.sinkError.message})` : '';
        throw new QemuDestinationStateError(
          ErrorCode.StreamTimeout,
          `destination QEMU of ${migrationId} still ${state.status} after ${timeoutMs} ms${fed}`,
          { migrationId, state: state.status },
        );
      }
      await new Promise((wake) => setTimeout(wake, LOAD_POLL_MS));
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
  const { ramMiB, kernel, initrd, append, machine, accel, cpus, servicePort, guestPort } = r;
  return JSON.stringify([diskPath, ramMiB, kernel, initrd, append, machine, accel, cpus, servicePort || 0, guestPort]);
}

function describeExit(exit: QemuExit | undefined): string {
  if (!exit) return 'is gone';
  return exit.signal ? `was killed by ${exit.signal}` : `exited ${exit.code}`;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
