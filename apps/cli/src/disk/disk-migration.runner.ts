import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import {
  callControl,
  controlSubject,
  DiskTransferVerb,
  ServiceName,
  Subjects,
  type DiskMigrationReport,
  type DiskProgress,
  type ExportDiskReply,
} from '@wanmig/protocol';
import { Site, type LocalBed } from '@wanmig/testing';
import { generateSparseImage, sha256File } from '@wanmig/testing';
import { RandomWriteWorkload, type WorkloadStats } from './random-write.workload.js';

export type DiskReport = DiskMigrationReport;
export type DiskProgressEvent = DiskProgress & { type: 'progress' };

export interface DiskRunOptions {
  imagePath?: string;
  sizeBytes: number;
  writtenBytes: number;
  budgetBps?: number;
  downtimeMs: number;
  workloadBytesPerSecond: number;
  workloadData?: 'mixed' | 'random';
  codec: boolean;
  verify: boolean;
  /** Kill -9 the destination service once the bulk pass reaches this fraction (0: never). */
  crashDestinationAt?: number;
  onProgress?: (event: DiskProgressEvent) => void;
  log?: (line: string) => void;
}

export interface DiskRunResult {
  report: DiskReport;
  wire: { aToB: number; bToA: number };
  imageBytes: { size: number; written: number };
  /** sha256 of both images, taken while writes were still frozen after the final drain. */
  sourceSha256: string;
  destinationSha256: string;
  workload: WorkloadStats | null;
  destinationRestarts: number;
}

/** One disk migration across the bed, with an optional writing guest, measured end to end. */
export async function runDiskMigration(bed: LocalBed, o: DiskRunOptions): Promise<DiskRunResult> {
  const log = o.log ?? (() => undefined);
  let imagePath = o.imagePath;
  let written = o.writtenBytes;
  if (!imagePath) {
    imagePath = join(bed.dir, 'source.img');
    log(`generating a ${o.sizeBytes}-byte sparse image with ${o.writtenBytes} bytes written`);
    written = (await generateSparseImage({ path: imagePath, sizeBytes: o.sizeBytes, writtenBytes: o.writtenBytes }))
      .writtenBytes;
  }
  const on = (verb: DiskTransferVerb) => controlSubject(Site.A, ServiceName.DiskTransfer, verb);
  const exported = await callControl<ExportDiskReply>(bed.nc, on(DiskTransferVerb.Export), {
    name: 'disk',
    imagePath,
    port: 0,
  });
  const url = new URL(exported.uri);
  const workload =
    o.workloadBytesPerSecond > 0
      ? await RandomWriteWorkload.start(
          { host: url.hostname, port: Number(url.port) },
          { bytesPerSecond: o.workloadBytesPerSecond, data: o.workloadData },
        )
      : null;

  const migrationId = randomUUID();
  const events = bed.nc.subscribe(Subjects.diskEvents(migrationId));
  bed.sites.wan.resetStats();
  await callControl(bed.nc, on(DiskTransferVerb.Migrate), {
    migrationId,
    exportName: 'disk',
    toSite: Site.B,
    bandwidthBps: o.budgetBps,
    downtimeMs: o.downtimeMs,
    codec: o.codec,
    verify: o.verify,
    keepFrozen: true,
  });
  let report: DiskReport | undefined;
  let restarts = 0;
  try {
    for await (const msg of events) {
      const event = msg.json<{ type: string; report?: DiskReport; error?: { message: string } }>();
      if (event.type === 'progress') {
        const progress = event as unknown as DiskProgressEvent;
        o.onProgress?.(progress);
        const crashAt = o.crashDestinationAt ?? 0;
        if (
          crashAt > 0 &&
          restarts === 0 &&
          progress.phase === 'bulk' &&
          progress.bulkBytes >= crashAt * exported.sizeBytes
        ) {
          restarts++;
          log(`kill -9 of delta-apply at ${((100 * progress.bulkBytes) / exported.sizeBytes).toFixed(0)} % of bulk`);
          await bed.crashAndRestartDeltaApply(500);
          log('delta-apply restarted');
        }
      } else if (event.type === 'completed') {
        report = event.report!;
        break;
      } else if (event.type === 'failed') {
        throw new Error(`disk migration failed: ${event.error?.message ?? 'unknown error'}`);
      }
    }
  } finally {
    events.unsubscribe();
  }
  if (!report) throw new Error('disk migration events ended without an outcome');
  const wire = bed.sites.wan.stats();
  // Writes are still frozen: both images are the state at the end of the final drain.
  const [sourceSha256, destinationSha256] = await Promise.all([sha256File(imagePath), sha256File(report.destPath)]);
  // Stop the guest, then close the export: that thaws the write it is blocked in.
  const stopping = workload?.stop();
  await callControl(bed.nc, on(DiskTransferVerb.Unexport), { name: 'disk' });
  const workloadStats = (await stopping) ?? null;
  return {
    report,
    wire: { aToB: wire.aToB, bToA: wire.bToA },
    imageBytes: { size: exported.sizeBytes, written },
    sourceSha256,
    destinationSha256,
    workload: workloadStats,
    destinationRestarts: restarts,
  };
}
