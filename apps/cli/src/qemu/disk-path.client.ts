import type { NatsConnection } from '@nats-io/nats-core';
import {
  callControl,
  controlSubject,
  DiskPhase,
  DiskTransferVerb,
  DiskVerb,
  ServiceName,
  type DiskMigrationReport,
  type DiskProgress,
  type DiskStatusReply,
  type ExportDiskReply,
  type ReleaseDiskReply,
} from '@wanmig/protocol';
import { sleep } from '@wanmig/testing';
import { QemuMigrationInterruptedError } from './qemu-migration.errors.js';

/** disk-transfer's view of a migration (`disk.progress`): its progress, then its report or its error. */
export type DiskMigrationState = DiskProgress & {
  report?: DiskMigrationReport;
  error?: { code: string; message: string };
};

/** The final drain reads, sends and (when asked) verifies a whole image's digests: allow for a slow one. */
export const DEFAULT_FINALIZE_TIMEOUT_MS = 120_000;
const HOLDING_POLL_MS = 250;

/**
 * The disk half of a QEMU VM migration, as calls to disk-transfer (source site) and delta-apply (destination site)
 * over NATS: the export QEMU mirrors into, the held migration and its final drain, the destination image's release.
 */
export class DiskPathClient {
  constructor(
    private readonly nc: NatsConnection,
    private readonly sourceSite: string,
    private readonly destSite: string,
  ) {}

  private source(verb: DiskTransferVerb): string {
    return controlSubject(this.sourceSite, ServiceName.DiskTransfer, verb);
  }

  private dest(verb: DiskVerb): string {
    return controlSubject(this.destSite, ServiceName.DeltaApply, verb);
  }

  /**
   * Serves `imagePath` as a `mirror-target` export (QEMU writes the image, the export tracks blocks): on the unix
   * socket `socket` when given, else on a free port of 127.0.0.1.
   */
  exportMirrorTarget(name: string, imagePath: string, socket?: string): Promise<ExportDiskReply> {
    return callControl<ExportDiskReply>(this.nc, this.source(DiskTransferVerb.Export), {
      name,
      imagePath,
      role: 'mirror-target',
      ...(socket === undefined ? { port: 0 } : { socket }),
    });
  }

  unexport(name: string): Promise<{ name: string }> {
    return callControl(this.nc, this.source(DiskTransferVerb.Unexport), { name });
  }

  /** Starts a held migration of the export (it replies at once); the destination image goes to `destPath`. */
  migrateHeld(request: {
    migrationId: string;
    exportName: string;
    destPath: string;
    downtimeMs: number;
    verify: boolean;
    bandwidthBps?: number;
  }): Promise<{ migrationId: string }> {
    const { bandwidthBps, ...rest } = request;
    return callControl(this.nc, this.source(DiskTransferVerb.Migrate), {
      ...rest,
      toSite: this.destSite,
      hold: true,
      ...(bandwidthBps ? { bandwidthBps: Math.round(bandwidthBps) } : {}),
    });
  }

  progress(migrationId: string): Promise<DiskMigrationState> {
    return callControl<DiskMigrationState>(this.nc, this.source(DiskTransferVerb.Progress), { migrationId });
  }

  /** Polls until the migration holds the destination in step; a failed migration or a timeout rejects. */
  async waitHolding(migrationId: string, timeoutMs: number): Promise<DiskMigrationState> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const state = await this.progress(migrationId);
      const failure = DiskPathClient.failureOf(migrationId, state);
      if (failure) throw failure;
      if (state.phase === DiskPhase.Holding) return state;
      if (performance.now() > deadline) {
        throw new QemuMigrationInterruptedError({
          migrationId,
          what: 'disk-migration',
          detail: `still ${state.phase} after ${timeoutMs} ms (bulk ${state.bulkBytes} of ${state.sizeBytes} bytes)`,
        });
      }
      await sleep(HOLDING_POLL_MS);
    }
  }

  /** The migration's failure, if its state shows one. */
  static failureOf(migrationId: string, state: DiskMigrationState): QemuMigrationInterruptedError | undefined {
    if (!state.error && state.phase !== DiskPhase.Failed) return undefined;
    return new QemuMigrationInterruptedError({
      migrationId,
      what: 'disk-migration',
      detail: state.error ? `${state.error.code}: ${state.error.message}` : 'failed',
    });
  }

  setBandwidth(migrationId: string, bandwidthBps: number): Promise<DiskMigrationState> {
    return callControl(this.nc, this.source(DiskTransferVerb.SetBandwidth), {
      migrationId,
      bandwidthBps: Math.max(1, Math.round(bandwidthBps)),
    });
  }

  /** The final drain (the guest is stopped): resolves once every block is durable at the destination. */
  finalize(migrationId: string, timeoutMs = DEFAULT_FINALIZE_TIMEOUT_MS): Promise<DiskMigrationReport> {
    return callControl<DiskMigrationReport>(
      this.nc,
      this.source(DiskTransferVerb.Finalize),
      { migrationId },
      timeoutMs,
    );
  }

  /** Stops the migration, or thaws the writes a finished one left frozen. */
  abort(migrationId: string): Promise<DiskMigrationState> {
    return callControl(this.nc, this.source(DiskTransferVerb.Abort), { migrationId });
  }

  /** delta-apply's side of the migration (crosses the WAN: one round trip). */
  destinationStatus(migrationId: string): Promise<DiskStatusReply> {
    return callControl<DiskStatusReply>(this.nc, this.dest(DiskVerb.Status), { migrationId });
  }

  /** delta-apply forgets the migration; with `deleteImage` the destination image goes too. */
  release(migrationId: string, deleteImage: boolean): Promise<ReleaseDiskReply> {
    return callControl<ReleaseDiskReply>(this.nc, this.dest(DiskVerb.Release), { migrationId, deleteImage }, 30_000);
  }
}
