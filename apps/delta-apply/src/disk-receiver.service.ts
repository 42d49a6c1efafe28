import { mkdir, readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  Inject,
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import {
  isUuid,
  type DiskDigestReply,
  type DiskDigestRequest,
  type DiskPresentReply,
  type DiskStatusReply,
  type MigrationRef,
  type PrepareDiskReply,
  type PrepareDiskRequest,
  type ReleaseDiskReply,
  type ReleaseDiskRequest,
} from '@wanmig/protocol';
import { DataPlaneConnection } from './data-plane.connection.js';
import type { DeltaApplyConfig } from './delta-apply.config.js';
import { DELTA_APPLY_CONFIG, STAT_FS } from './delta-apply.tokens.js';
import { DiskProvisioner } from './disk.provisioner.js';
import { describe, DiskSession } from './disk.session.js';
import {
  MigrationConflictError,
  MigrationNotFoundError,
  MigrationStateError,
  PresentMapTooLargeError,
  ServiceStoppingError,
} from './errors.js';
import type { StatFs } from './free-space.check.js';
import { digestRange, maxDigestRegions } from './image.digest.js';
import { KeyedLock } from './keyed.lock.js';
import type { DiskManifest } from './manifest.store.js';
import { RoomLedger } from './room.ledger.js';

/**
 * The destination disks of this site: prepares, resumes, reports on, digests and releases them.
 * Every operation on one migration runs under that migration's lock, so retries and races of the
 * same request see one consistent state and start at most one receiver.
 */
@Injectable()
export class DiskReceiverService implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('delta-apply');
  private readonly sessions = new Map<string, DiskSession>();
  private readonly lock = new KeyedLock();
  private readonly disks: DiskProvisioner;
  private stopping = false;

  constructor(
    @Inject(DELTA_APPLY_CONFIG) private readonly config: DeltaApplyConfig,
    @Inject(STAT_FS) statFs: StatFs,
    @Inject(DataPlaneConnection) private readonly dataPlane: DataPlaneConnection,
    @Inject(RoomLedger) private readonly room: RoomLedger,
  ) {
    this.disks = new DiskProvisioner(config.dataDir, statFs);
    room.register(() =>
      [...this.sessions.values()]
        .filter((session) => !session.isFinished)
        .map((session) => ({ path: session.path, sizeBytes: session.sizeBytes })),
    );
  }

  /** Migrations this process is serving. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Resumes every migration found under the data directory before the control subjects open, so
   * a service restarted after a crash is receiving again before anyone can ask it anything.
   * Finished migrations get their receiver too: a sender that restarts after the end learns at
   * once that everything is there. One that cannot be opened is logged and left on disk.
   */
  async onApplicationBootstrap(): Promise<void> {
    await mkdir(this.config.dataDir, { recursive: true });
    const entries = await readdir(this.config.dataDir, { withFileTypes: true });
    for (const entry of entries) {
      if (!entry.isDirectory() || !isUuid(entry.name)) continue;
      await this.lock.run(entry.name, async () => {
        try {
          const session = await this.reopen(entry.name);
          if (!session) return;
          const { nextSeq, cursor, presentBlocks } = session.prepareReply(true);
          this.logger.log(
            `resumed ${session.migrationId}: seq ${nextSeq}, cursor ${cursor}, ${presentBlocks} blocks present` +
              (session.isFinished ? ' (finished)' : ''),
          );
        } catch (err) {
          this.logger.error(`cannot resume ${entry.name}: ${describe(err)}`);
        }
      });
    }
  }

  prepare(request: PrepareDiskRequest): Promise<PrepareDiskReply> {
    return this.lock.run(request.migrationId, async () => {
      this.checkRunning();
      const session = this.sessions.get(request.migrationId);
      if (session) {
        checkSame(request, session);
        return session.prepareReply(true);
      }
      const manifest = await this.disks.manifests(request.migrationId).load();
      if (manifest) {
        checkSame(request, manifest);
        return (await this.openSession(manifest)).prepareReply(true);
      }
      return (await this.create(request)).prepareReply(false);
    });
  }

  status(ref: MigrationRef): DiskStatusReply {
    return this.session(ref.migrationId).status();
  }

  /**
   * The present map in one reply. A map too large for one message (a huge disk with scattered blocks) is refused:
   * the sender then treats nothing as present and sends everything again, never too little.
   */
  present(ref: MigrationRef): DiskPresentReply {
    const reply = this.session(ref.migrationId).presentReply();
    // The reply's envelope and fields beside the map take little; keep a margin for them.
    const limit = this.dataPlane.maxPayload - 1024;
    if (reply.map.length > limit) throw new PresentMapTooLargeError(ref.migrationId, reply.map.length, limit);
    return reply;
  }

  async digest(request: DiskDigestRequest): Promise<DiskDigestReply> {
    const session = this.session(request.migrationId);
    const range = digestRange(session.sizeBytes, request, maxDigestRegions(this.dataPlane.maxPayload));
    return { regionBytes: range.regionBytes, offset: range.offset, digests: await session.digest(range) };
  }

  release(request: ReleaseDiskRequest): Promise<ReleaseDiskReply> {
    return this.lock.run(request.migrationId, async () => {
      this.checkRunning();
      const { migrationId } = request;
      const session = this.sessions.get(migrationId);
      const paths = this.disks.paths(migrationId);
      // Not being served (it failed to resume, say) but still on disk: releasing cleans it up all the same.
      const path = session?.path ?? (await this.disks.imagePathOnDisk(migrationId));
      if (path === undefined) throw new MigrationNotFoundError(migrationId);
      if (session) {
        await session.close();
        this.sessions.delete(migrationId);
      }
      const imageDeleted = request.deleteImage === true;
      await this.disks.remove(paths, imageDeleted ? path : undefined);
      this.logger.log(`released ${migrationId}${imageDeleted ? ' and deleted its image' : `, image kept at ${path}`}`);
      return { migrationId, path, imageDeleted };
    });
  }

  /** Stops taking work, then stops every receiver after its sync under way and closes the images. */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    // A prepare or release under way finishes first (later ones are refused), so no session opens after this.
    await this.lock.drain();
    const sessions = [...this.sessions.values()];
    const results = await Promise.allSettled(sessions.map((session) => session.close()));
    results.forEach((result, i) => {
      if (result.status === 'rejected') {
        this.logger.error(`closing ${sessions[i].migrationId} failed: ${describe(result.reason)}`);
      }
    });
    this.sessions.clear();
    // Let receivers drop what they still had queued while the data connection is open.
    await new Promise((resolve) => setImmediate(resolve));
    this.logger.log(`stopped ${sessions.length} receiver(s)`);
  }

  /** A new migration: room check, manifest, sparse image, receiver; on failure, nothing is left behind. */
  private async create(request: PrepareDiskRequest): Promise<DiskSession> {
    const { migrationId, sizeBytes, blockSize } = request;
    const path = await this.disks.imagePathFor(request, (p) => this.sessionAt(p)?.migrationId);
    const provisioned = await this.disks.provision(request, path, await this.reservedOn(path));
    try {
      const session = await this.openSession(provisioned.manifest, true);
      this.logger.log(`prepared ${migrationId}: ${sizeBytes} bytes in blocks of ${blockSize} at ${path}`);
      return session;
    } catch (err) {
      await provisioned
        .undo()
        .catch((cleanup: unknown) =>
          this.logger.error(`cleaning up a failed prepare of ${migrationId}: ${describe(cleanup)}`),
        );
      throw err;
    }
  }

  /** A migration known on disk but not being served (boot, or a prepare after a failed resume). */
  private async reopen(migrationId: string): Promise<DiskSession | undefined> {
    const manifest = await this.disks.manifests(migrationId).load();
    if (!manifest) return undefined;
    if (manifest.migrationId !== migrationId) {
      throw new MigrationStateError({
        migrationId,
        path: this.disks.paths(migrationId).manifest,
        message: 'manifest names another migration',
      });
    }
    return this.openSession(manifest);
  }

  private async openSession(manifest: DiskManifest, fresh = false): Promise<DiskSession> {
    if (!fresh) fresh = await this.disks.recreateMissingImage(manifest, await this.reservedOn(manifest.path));
    const paths = this.disks.paths(manifest.migrationId);
    const options = {
      nc: this.dataPlane.nc,
      paths,
      presentMapIntervalMs: this.config.presentMapIntervalMs,
      logger: this.logger,
    };
    const session = await DiskSession.open(manifest, options, fresh);
    this.sessions.set(manifest.migrationId, session);
    return session;
  }

  /** Room the unfinished images and RAM files on the file system of `path` may still claim as they fill. */
  private reservedOn(path: string): Promise<number> {
    return this.room.reservedOn(path);
  }

  private session(migrationId: string): DiskSession {
    const session = this.sessions.get(migrationId);
    if (!session) throw new MigrationNotFoundError(migrationId);
    return session;
  }

  private sessionAt(path: string): DiskSession | undefined {
    return [...this.sessions.values()].find((session) => session.path === path);
  }

  private checkRunning(): void {
    if (this.stopping) throw new ServiceStoppingError();
  }
}

/** A prepare for a known migration must describe the same disk; omitting `path` means "wherever it is". */
function checkSame(request: PrepareDiskRequest, known: { sizeBytes: number; blockSize: number; path: string }): void {
  const { migrationId } = request;
  const clash = (field: string, asked: unknown, held: unknown): MigrationConflictError =>
    new MigrationConflictError({
      migrationId,
      field,
      message: `migration ${migrationId} is already prepared with ${field} ${String(held)}, not ${String(asked)}`,
    });
  if (request.sizeBytes !== known.sizeBytes) throw clash('sizeBytes', request.sizeBytes, known.sizeBytes);
  if (request.blockSize !== known.blockSize) throw clash('blockSize', request.blockSize, known.blockSize);
  if (request.path !== undefined && resolve(request.path) !== known.path) throw clash('path', request.path, known.path);
}
