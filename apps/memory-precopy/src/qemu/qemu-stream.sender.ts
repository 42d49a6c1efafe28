import type { NatsConnection } from '@nats-io/nats-core';
import { StreamKind } from '@wanmig/protocol';
import { StreamSender, type TokenBucket } from '@wanmig/stream';
import { QemuStreamNotFreshError } from './qemu-migration.errors.js';
import { QEMU_MIGRATION_STREAM_ID } from './qemu-stream.constants.js';

export interface QemuStreamSenderOptions {
  nc: NatsConnection;
  migrationId: string;
  /** Keep it near `recommendedWindowBytes(link rate, RTT)`: every byte in it is one QEMU counts as sent. */
  windowBytes?: number;
  /** The migration's budget, shared with its disk stream. */
  limiter?: TokenBucket;
  minRtoMs?: number;
  giveUpAfterMs?: number;
}

/**
 * The sender of a QEMU migration stream (kind Memory, stream QEMU_MIGRATION_STREAM_ID), opened
 * against its receiver. Within one stream a cut link is repaired by the sender (re-send from the
 * receiver's watermark); but QEMU cannot restart its stream in the middle, so a receiver that
 * already holds part of a stream is refused with QemuStreamNotFreshError.
 */
export async function openQemuStreamSender(options: QemuStreamSenderOptions): Promise<StreamSender> {
  const sender = new StreamSender({ ...options, streamId: QEMU_MIGRATION_STREAM_ID, kind: StreamKind.Memory });
  try {
    const mark = await sender.open();
    if (mark.nextSeq !== 0 || mark.cursor !== 0) {
      throw new QemuStreamNotFreshError({ migrationId: options.migrationId, ...mark });
    }
    return sender;
  } catch (err) {
    sender.close();
    throw err;
  }
}
