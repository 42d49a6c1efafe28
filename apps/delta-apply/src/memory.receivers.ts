import type { NatsConnection } from '@nats-io/nats-core';
import { DeviceStateStreamId, MAX_DEVICE_STATE_BYTES, MemoryStreamId } from '@wanmig/protocol';
import {
  FileChunkTarget,
  FileWatermarkStore,
  RecordSink,
  StreamReceiver,
  type ReceiverStats,
  type Watermark,
} from '@wanmig/stream';
import { ClosableSink } from './closable.sink.js';
import { DeviceStateSink, type HeldDeviceState } from './device-state.sink.js';
import { MigrationStateError } from './errors.js';
import type { MemoryManifest } from './memory-manifest.store.js';
import type { MemoryPaths } from './migration.paths.js';
import { RamRangeGuard } from './ram-range.guard.js';

export interface MemoryReceiversOptions {
  nc: NatsConnection;
  paths: MemoryPaths;
}

/**
 * The two streams a migration's memory arrives on, while they are open: pages (codec records:
 * zero, ref, xbzrle, raw) into the RAM file through a range guard and the record decoder, whose
 * target size is the RAM size; and the device state into its own sink. Both resume from their
 * persisted watermarks. `stop` closes them for good and leaves the RAM file durable and closed.
 */
export class MemoryReceivers {
  private stopping?: Promise<void>;

  private constructor(
    private readonly ram: FileChunkTarget,
    private readonly pageSink: ClosableSink,
    private readonly deviceSink: DeviceStateSink,
    private readonly deviceClosable: ClosableSink,
    readonly pages: StreamReceiver,
    readonly deviceStateStream: StreamReceiver,
  ) {}

  /**
   * Opens the RAM file and starts both receivers. `fresh`: the file was created empty just now, so
   * zero records need not write (see FileChunkTarget); a reopened file gets real zero writes.
   */
  static async open(
    manifest: MemoryManifest,
    options: MemoryReceiversOptions,
    fresh = false,
  ): Promise<MemoryReceivers> {
    const { migrationId, ramPath, ramBytes } = manifest;
    const { nc, paths } = options;
    let ram: FileChunkTarget;
    try {
      ram = new FileChunkTarget(ramPath, ramBytes, { create: fresh });
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw cause;
      throw new MigrationStateError({
        migrationId,
        path: ramPath,
        message: `RAM file ${ramPath} of migration ${migrationId} is gone: release it and prepare again`,
        cause,
      });
    }
    const started: StreamReceiver[] = [];
    try {
      const pageSink = new ClosableSink(new RamRangeGuard(new RecordSink(ram), ramBytes, migrationId), migrationId);
      const deviceSink = await DeviceStateSink.open({
        migrationId,
        path: paths.deviceState,
        maxBytes: MAX_DEVICE_STATE_BYTES,
      });
      const deviceClosable = new ClosableSink(deviceSink, migrationId);
      const receiver = (streamId: number, sink: ClosableSink, watermark: string): StreamReceiver =>
        new StreamReceiver({ nc, migrationId, streamId, sink, store: new FileWatermarkStore(watermark) });
      const pages = receiver(MemoryStreamId, pageSink, paths.memoryWatermark);
      const deviceStateStream = receiver(DeviceStateStreamId, deviceClosable, paths.deviceStateWatermark);
      for (const stream of [pages, deviceStateStream]) {
        await stream.start();
        started.push(stream);
      }
      return new MemoryReceivers(ram, pageSink, deviceSink, deviceClosable, pages, deviceStateStream);
    } catch (err) {
      await Promise.allSettled(started.map((stream) => stream.stop()));
      ram.close();
      throw err;
    }
  }

  get watermark(): Watermark {
    return this.pages.watermark;
  }

  /** Bytes of pages applied since this process opened the streams. */
  get bytesApplied(): number {
    return this.pages.stats.bytesApplied;
  }

  /** Frames of either stream refused so far. */
  get rejectedFrames(): number {
    return rejected(this.pages.stats) + rejected(this.deviceStateStream.stats);
  }

  /** The device state as of its stream's last sync. */
  get deviceState(): HeldDeviceState | undefined {
    return this.deviceSink.durable;
  }

  /**
   * Stops both streams after the sync under way, waits for the frames being applied, then makes
   * the RAM file durable and closes it: nothing writes into it afterwards. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all([this.pages.stop(), this.deviceStateStream.stop()]);
      await Promise.all([this.pageSink.close(), this.deviceClosable.close()]);
      try {
        await this.ram.sync();
      } finally {
        this.ram.close();
      }
    })();
    return this.stopping;
  }
}

function rejected(stats: ReceiverStats): number {
  return Object.values(stats.rejected).reduce<number>((sum, n) => sum + (n ?? 0), 0);
}
