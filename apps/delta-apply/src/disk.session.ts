import type { NatsConnection } from '@nats-io/nats-core';
import { geometryForSize } from '@wanmig/blockmap';
import {
  DiskStreamId,
  toWireError,
  type DiskPresentReply,
  type DiskStatusReply,
  type PrepareDiskReply,
  type WireError,
} from '@wanmig/protocol';
import { FileChunkTarget, FileWatermarkStore, RecordSink, StreamReceiver, type DigestRange } from '@wanmig/stream';
import { ClosableSink } from './closable.sink.js';
import { MigrationStateError } from './errors.js';
import { ImageDigests } from './image.digest.js';

import { ManifestStore, type DiskManifest } from './manifest.store.js';
import type { MigrationPaths } from './migration.paths.js';
import { PresentMapStore } from './present-map.store.js';
import { PresentTrackingTarget } from './present-tracking.target.js';

export interface SessionLogger {
  log(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface DiskSessionOptions {
  nc: NatsConnection;
  paths: MigrationPaths;
  presentMapIntervalMs: number;
  logger: SessionLogger;
}

/**
 * One migration's destination disk while this process serves it: the open image, the present map
 * and the stream receiver that applies frames to it. Opening a session always resumes: the
 * receiver starts from its persisted watermark (zero for a fresh image) and the present map from
 * its file, so a first prepare, a retried one and a restart after kill -9 all take the same path.
 */
export class DiskSession {
  private finished: boolean;
  private failure?: WireError;
  private closing?: Promise<void>;
  private readonly background = new Set<Promise<void>>();

  private constructor(
    private manifest: DiskManifest,
    private readonly options: DiskSessionOptions,
    private readonly image: FileChunkTarget,
    private readonly present: PresentTrackingTarget,
    private readonly presentStore: PresentMapStore,
    private readonly sink: ClosableSink,
    private readonly receiver: StreamReceiver,
    private readonly digests: ImageDigests,
  ) {
    this.finished = manifest.finished;
  }

  /**
   * Opens the image named by the manifest and starts receiving from the persisted watermark.
   * `fresh`: the image was created empty just now, so zero records beyond the highest byte written
   * can leave its holes alone (FileChunkTarget's `create`). A reopened image gets real zero writes:
   * frames applied but not yet durable before a crash may have left data anywhere.
   */
  static async open(manifest: DiskManifest, options: DiskSessionOptions, fresh = false): Promise<DiskSession> {
    const { migrationId } = manifest;
    let image: FileChunkTarget;
    try {
      image = new FileChunkTarget(manifest.path, manifest.sizeBytes, { create: fresh });
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw cause;
      throw new MigrationStateError({
        migrationId,
        path: manifest.path,
        message: `image ${manifest.path} of migration ${migrationId} is gone: release it and prepare again`,
        cause,
      });
    }
    try {
      const { logger, paths } = options;
      const geometry = geometryForSize(manifest.sizeBytes, manifest.blockSize);
      const { store: presentStore, problems } = await PresentMapStore.open(paths.dir, geometry, {
        intervalMs: options.presentMapIntervalMs,
        onError: (err) => logger.warn(`present map of ${migrationId} not saved (will retry): ${describe(err)}`),
      });
      for (const problem of problems) logger.warn(`present map of ${migrationId}: ${problem} (ignored)`);
      const digests = new ImageDigests(image, (err) =>
        logger.warn(
          `digests of ${migrationId} not taken in the background (the next ask takes them): ${describe(err)}`,
        ),
      );
      const present = new PresentTrackingTarget(image, presentStore, (offset, length) => digests.touch(offset, length));
      const sink = new ClosableSink(new RecordSink(present), migrationId);
      const receiver = new StreamReceiver({
        nc: options.nc,
        migrationId,
        streamId: DiskStreamId,
        sink,
        store: new FileWatermarkStore(paths.watermark),
      });
      const session = new DiskSession(manifest, options, image, present, presentStore, sink, receiver, digests);
      try {
        await receiver.start();
      } catch (err) {
        await presentStore.close().catch(() => undefined);
        throw err;
      }
      session.watchEnd();
      return session;
    } catch (err) {
      image.close();
      throw err;
    }
  }

  get migrationId(): string {
    return this.manifest.migrationId;
  }

  get path(): string {
    return this.manifest.path;
  }

  get sizeBytes(): number {
    return this.manifest.sizeBytes;
  }

  get blockSize(): number {
    return this.manifest.blockSize;
  }

  get isFinished(): boolean {
    return this.finished;
  }

  prepareReply(resumed: boolean): PrepareDiskReply {
    const { nextSeq, cursor } = this.receiver.watermark;
    return { path: this.path, resumed, nextSeq, cursor, presentBlocks: this.present.durable.count };
  }

  /** The durable present map, for a sender that restarted and must find out what it still has to send. */
  presentReply(): DiskPresentReply {
    const map = this.present.durable;
    return {
      migrationId: this.migrationId,
      blockSize: this.blockSize,
      presentBlocks: map.count,
      map: map.serialize().toString('base64'),
    };
  }

  status(): DiskStatusReply {
    const { nextSeq, cursor } = this.receiver.watermark;
    const stats = this.receiver.stats;
    const reply: DiskStatusReply = {
      migrationId: this.migrationId,
      path: this.path,
      sizeBytes: this.sizeBytes,
      blockSize: this.blockSize,
      nextSeq,
      cursor,
      presentBlocks: this.present.durable.count,
      // Since this process opened the session: the watermark says how far the stream is overall.
      bytesApplied: stats.bytesApplied,
      finished: this.finished,
      rejectedFrames: Object.values(stats.rejected).reduce<number>((sum, n) => sum + (n ?? 0), 0),
    };
    if (this.failure) reply.failure = this.failure;
    return reply;
  }

  /** Region digests of the image as it is now (a moving target while frames still arrive); see ImageDigests. */
  digest(range: DigestRange): Promise<string[]> {
    return this.digests.digest(range);
  }

  /**
   * Stops receiving after the sync under way, waits for the frame being applied, saves the present
   * map, and closes the image. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.receiver.stop();
      await this.sink.close();
      await Promise.allSettled([...this.background]);
      await this.presentStore.close();
      this.digests.close();
      this.image.close();
    })();
    return this.closing;
  }

  /** Once the End frame is durable, the manifest records it (status and restarts report it). */
  private watchEnd(): void {
    this.receiver.finished().then(
      () => this.runInBackground(this.markFinished()),
      (err: unknown) => {
        if (this.closing) return;
        this.failure = toWireError(err);
        this.options.logger.error(`receive of ${this.migrationId} failed: ${describe(err)}`);
      },
    );
  }

  private async markFinished(): Promise<void> {
    if (this.closing || this.finished) return;
    this.finished = true;
    this.manifest = { ...this.manifest, finished: true };
    await new ManifestStore(this.options.paths.manifest).save(this.manifest);
    await this.presentStore.flush();
    const { nextSeq, cursor } = this.receiver.watermark;
    this.options.logger.log(
      `migration ${this.migrationId} finished: seq ${nextSeq}, cursor ${cursor}, ${this.present.durable.count} blocks present`,
    );
  }

  private runInBackground(work: Promise<void>): void {
    const tracked = work.catch((err: unknown) =>
      this.options.logger.error(`migration ${this.migrationId}: ${describe(err)}`),
    );
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
