import { mkdir, readdir } from 'node:fs/promises';
import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import type { HypervisorDriver } from '@wanmig/hypervisor';
import {
  isUuid,
  ValidationError,
  type CheckResumeReply,
  type MemoryStatusReply,
  type MigrationRef,
  type PrepareMemoryReply,
  type PrepareMemoryRequest,
  type ReleaseMemoryReply,
  type ReleaseMemoryRequest,
  type ResumeVmReply,
  type ResumeVmRequest,
} from '@wanmig/protocol';
import { DataPlaneConnection } from './data-plane.connection.js';
import type { DeltaApplyConfig } from './delta-apply.config.js';
import { DELTA_APPLY_CONFIG, HYPERVISOR_DRIVER, STAT_FS } from './delta-apply.tokens.js';
import { checkDeviceState } from './device-state.check.js';
import type { HeldDeviceState } from './device-state.sink.js';
import { describe } from './disk.session.js';
import { MigrationConflictError, MigrationNotFoundError, MigrationStateError, ServiceStoppingError } from './errors.js';
import type { StatFs } from './free-space.check.js';
import { KeyedLock } from './keyed.lock.js';
import type { MemoryManifest } from './memory-manifest.store.js';
import { checkRamSize, MemoryProvisioner } from './memory.provisioner.js';
import { MemorySession } from './memory.session.js';
import { RoomLedger } from './room.ledger.js';
import { VmLifecycle } from './vm.lifecycle.js';

/**
 * The destination memory of this site: prepares RAM files and receives pages and device state into
 * them, reports on them, resumes the VM from them, and releases them. Every operation on one
 * migration runs under that migration's lock, so retries and races of the same request see one
 * consistent state, start at most one pair of receivers and at most one VM.
 */
@Injectable()
export class MemoryReceiverService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('delta-apply');
  private readonly sessions = new Map<string, MemorySession>();
  private readonly lock = new KeyedLock();
  private readonly memory: MemoryProvisioner;
  private readonly vms: VmLifecycle;
  private stopping = false;

  constructor(
    @Inject(DELTA_APPLY_CONFIG) private readonly config: DeltaApplyConfig,
    @Inject(STAT_FS) statFs: StatFs,
    @Inject(DataPlaneConnection) private readonly dataPlane: DataPlaneConnection,
    @Inject(RoomLedger) private readonly room: RoomLedger,
    @Inject(HYPERVISOR_DRIVER) private readonly driver: HypervisorDriver,
  ) {
    this.memory = new MemoryProvisioner(config.dataDir, statFs);
    this.vms = new VmLifecycle(driver, this.logger);
    room.register(() =>
      [...this.sessions.values()]
        .filter((session) => session.isReceiving)
        .map((session) => ({ path: session.ramPath, sizeBytes: session.ramBytes })),
    );
  }

  /** Memory migrations this process is serving. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Resumes every memory migration found under the data directory before the control subjects
   * open (receivers from their watermarks; a migration whose VM already runs, without receivers).
   * One that cannot be opened is logged and left on disk.
   */
  async onApplicationBootstrap(): Promise<void> {
    await mkdir(this.config.dataDir, { recursive: true });
    const entries = await readdir(this.config.dataDir, { withFileTypes: true });
    for (const entry of entries) {
      if (!entry.isDirectory() || !isUuid(entry.name)) continue;
      await this.lock.run(entry.name, async () => {
        try {
          const manifest = await this.loadManifest(entry.name);
          if (!manifest) return;
          const session = await this.openSession(manifest);
          const { nextSeq } = session.prepareReply(true);
          const vm = session.resumedVm;
          this.logger.log(
            `resumed memory of ${session.migrationId}: ` +
              (vm ? `VM ${vm.vmId} runs from it, not receiving` : `seq ${nextSeq}`),
          );
        } catch (err) {
          this.logger.error(`cannot resume memory of ${entry.name}: ${describe(err)}`);
        }
      });
    }
  }

  prepare(request: PrepareMemoryRequest): Promise<PrepareMemoryReply> {
    return this.lock.run(request.migrationId, async () => {
      const { session, resumed } = await this.prepareSession(request);
      if (request.verifyRam) session.hashWhenFinished();
      return session.prepareReply(resumed);
    });
  }

  private async prepareSession(request: PrepareMemoryRequest): Promise<{ session: MemorySession; resumed: boolean }> {
    this.checkRunning();
    checkRamSize(request);
    const { migrationId } = request;
    let session = this.sessions.get(migrationId);
    if (session) {
      checkSame(request, session);
      checkNotRunning(session.resumedVm?.vmId, migrationId);
      if (!session.isReceiving || session.hasFailed) {
        // A resume that failed stopped the receivers, or a stream failed for good: a new prepare
        // receives again, from the watermarks.
        const manifest = await this.loadManifest(migrationId);
        await session.close();
        this.sessions.delete(migrationId);
        if (!manifest) throw new MigrationNotFoundError(migrationId, 'memory');
        session = await this.openSession(manifest);
      }
      return { session, resumed: true };
    }
    const manifest = await this.loadManifest(migrationId);
    if (manifest) {
      checkSame(request, manifest);
      checkNotRunning(manifest.vm?.vmId, migrationId);
      return { session: await this.openSession(manifest), resumed: true };
    }
    const created = await this.create(request);
    if (request.vmId) await this.vms.startEarly(created, request.vmId, request.diskUri, request.servicePort);
    return { session: created, resumed: false };
  }

  status(ref: MigrationRef): MemoryStatusReply {
    return this.session(ref.migrationId).status();
  }

  /**
   * Checks the device state, stops receiving (the RAM file is durable and closed), starts the VM on
   * the RAM file and resumes it. A retry after success answers the same; a failure stops the VM
   * and leaves every file in place.
   */
  resume(request: ResumeVmRequest): Promise<ResumeVmReply> {
    return this.lock.run(request.migrationId, async () => {
      this.checkRunning();
      const session = this.session(request.migrationId);
      const done = session.resumeReply();
      if (done) {
        if (done.vmId !== request.vmId) {
          throw new MigrationConflictError({
            migrationId: request.migrationId,
            field: 'vmId',
            message: `VM ${done.vmId} already runs from the RAM of migration ${request.migrationId}`,
          });
        }
        return done;
      }
      const state = await this.finalState(session, request);
      return this.vms.start(session, request, state);
    });
  }

  /**
   * What a resume checks, and the receiving VM made ready, without running it: the source holds its switchover on
   * this answer (the route moves after it), so a mismatch is found while a rollback still leaves nothing behind.
   */
  check(request: ResumeVmRequest): Promise<CheckResumeReply> {
    return this.lock.run(request.migrationId, async () => {
      this.checkRunning();
      const session = this.session(request.migrationId);
      checkNotRunning(session.resumedVm?.vmId, request.migrationId);
      await this.finalState(session, request);
      const ready = await this.vms.ready(session, request, true);
      return { migrationId: request.migrationId, ...ready };
    });
  }

  /** The device state a resume would use, once the last data is durable (or has stopped coming). */
  private async finalState(session: MemorySession, request: ResumeVmRequest): Promise<HeldDeviceState> {
    if (request.driver !== this.driver.name) {
      throw new ValidationError(
        [`driver: ${request.driver} is not available at this site (it runs ${this.driver.name})`],
        'ResumeVmRequest',
      );
    }
    // The last pages and the state may still be on their way: they travel on the data plane,
    // this request on the control plane. Wait for both, durable, before judging them.
    await waitForFinalData(session, request.deviceStateSha256);
    const state = checkDeviceState(session.deviceState, request);
    if (!session.isFinished) {
      this.logger.warn(`resuming ${request.migrationId} before the end of its memory stream: the source decides`);
    }
    return state;
  }

  release(request: ReleaseMemoryRequest): Promise<ReleaseMemoryReply> {
    return this.lock.run(request.migrationId, async () => {
      this.checkRunning();
      const { migrationId } = request;
      const deleteRam = request.deleteRam === true;
      const paths = this.memory.paths(migrationId);
      const session = this.sessions.get(migrationId);
      const onDisk = session ? undefined : await this.manifestOnDisk(migrationId);
      if (!session && onDisk === undefined) throw new MigrationNotFoundError(migrationId, 'memory');
      const running = session?.resumedVm ?? onDisk?.vm;
      const vm = session?.incomingVm;
      // A VM that never ran is stopped; a running one is the migrated VM now, unless this is a rollback
      // (then it is stopped too, found by id when an earlier delta-apply process started it).
      const stop = running ? deleteRam : vm !== undefined;
      const vmStopped = stop && (await this.vms.stop(running?.vmId ?? '', vm));
      if (session) {
        await session.close();
        this.sessions.delete(migrationId);
      }
      await this.memory.remove(paths, deleteRam);
      this.logger.log(
        `released memory of ${migrationId}` +
          (vmStopped ? `, stopped VM ${running?.vmId ?? ''}` : '') +
          (deleteRam ? ' and deleted its RAM file' : `, RAM file kept at ${paths.ram}`),
      );
      return { migrationId, ramPath: paths.ram, ramDeleted: deleteRam, vmStopped };
    });
  }

  /**
   * Stops taking work, stops every receiver after its sync under way, and stops a VM that was
   * started but never ran; running VMs are the migrated VMs and stay.
   */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    await this.lock.drain();
    const sessions = [...this.sessions.values()];
    const results = await Promise.allSettled(
      sessions.map(async (session) => {
        await session.close();
        const vm = session.incomingVm;
        if (vm && !session.resumedVm) await vm.stop();
      }),
    );
    results.forEach((result, i) => {
      if (result.status === 'rejected') {
        this.logger.error(`closing memory of ${sessions[i].migrationId} failed: ${describe(result.reason)}`);
      }
    });
    this.sessions.clear();
    const running = sessions.filter((session) => session.resumedVm).length;
    this.logger.log(`stopped ${sessions.length} memory receiver(s)${running ? `, ${running} VM(s) left running` : ''}`);
  }

  /** A new migration: room check, manifest, sparse RAM file, receivers; on failure, nothing is left behind. */
  private async create(request: PrepareMemoryRequest): Promise<MemorySession> {
    const { migrationId, ramBytes } = request;
    const paths = this.memory.paths(migrationId);
    const provisioned = await this.memory.provision(request, await this.room.reservedOn(paths.ram));
    try {
      const session = await this.openSession(provisioned.manifest, true);
      this.logger.log(`prepared memory of ${migrationId}: ${ramBytes} bytes at ${paths.ram}`);
      return session;
    } catch (err) {
      await provisioned
        .undo()
        .catch((cleanup: unknown) =>
          this.logger.error(`cleaning up a failed memory prepare of ${migrationId}: ${describe(cleanup)}`),
        );
      throw err;
    }
  }

  private async loadManifest(migrationId: string): Promise<MemoryManifest | null> {
    const manifest = await this.memory.manifests(migrationId).load();
    if (manifest && manifest.migrationId !== migrationId) {
      throw new MigrationStateError({
        migrationId,
        path: this.memory.paths(migrationId).manifest,
        message: 'memory manifest names another migration',
      });
    }
    return manifest;
  }

  /** A migration known on disk only; an unreadable manifest still marks one (release can clean it up). */
  private async manifestOnDisk(migrationId: string): Promise<Partial<MemoryManifest> | undefined> {
    try {
      return (await this.loadManifest(migrationId)) ?? undefined;
    } catch (err) {
      if (err instanceof MigrationStateError) return {};
      throw err;
    }
  }

  private async openSession(manifest: MemoryManifest, fresh = false): Promise<MemorySession> {
    if (!fresh) fresh = await this.memory.recreateMissingRam(manifest, await this.room.reservedOn(manifest.ramPath));
    const options = { nc: this.dataPlane.nc, paths: this.memory.paths(manifest.migrationId), logger: this.logger };
    const session = await MemorySession.open(manifest, options, fresh);
    this.sessions.set(manifest.migrationId, session);
    // Reopened after a restart: the receiving VM started early by the process before is this one's now.
    if (!fresh) await this.vms.adopt(session);
    return session;
  }

  private session(migrationId: string): MemorySession {
    const session = this.sessions.get(migrationId);
    if (!session) throw new MigrationNotFoundError(migrationId, 'memory');
    return session;
  }

  private checkRunning(): void {
    if (this.stopping) throw new ServiceStoppingError();
  }
}

/** A prepare for a known migration must describe the same RAM. */
function checkSame(request: PrepareMemoryRequest, known: { ramBytes: number; pageSize: number }): void {
  const { migrationId } = request;
  for (const field of ['ramBytes', 'pageSize'] as const) {
    if (request[field] !== known[field]) {
      throw new MigrationConflictError({
        migrationId,
        field,
        message: `migration ${migrationId} is already prepared with ${field} ${known[field]}, not ${request[field]}`,
      });
    }
  }
}

/** Once a VM runs from the RAM, nothing may be received into it again. */
function checkNotRunning(vmId: string | undefined, migrationId: string): void {
  if (vmId === undefined) return;
  throw new MigrationConflictError({
    migrationId,
    field: 'migrationId',
    message: `VM ${vmId} already runs from the RAM of migration ${migrationId}: nothing more can be received into it`,
  });
}

/** How long the last data may keep a resume waiting, and how long it may stall before judging. */
const FINAL_DATA_MAX_WAIT_MS = 8_000;
const FINAL_DATA_STALL_MS = 1_000;

/**
 * Waits until the memory stream's End and the expected device state are durable. Stops waiting
 * when nothing has arrived for a second (nothing more is coming: the checks then say what is
 * missing) or after a few seconds in all, so the caller always gets an answer before its timeout.
 */
async function waitForFinalData(session: MemorySession, sha256: string): Promise<void> {
  const start = performance.now();
  let lastSeen = '';
  let lastChange = start;
  for (;;) {
    if (session.isFinished && session.deviceState?.sha256 === sha256) return;
    const now = performance.now();
    const status = session.status();
    const seen = `${status.nextSeq}/${status.deviceStateBytes}/${status.deviceStateSha256 ?? ''}`;
    if (seen !== lastSeen) {
      lastSeen = seen;
      lastChange = now;
    }
    if (now - lastChange > FINAL_DATA_STALL_MS || now - start > FINAL_DATA_MAX_WAIT_MS) return;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
