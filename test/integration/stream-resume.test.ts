import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { ChunkEncoder, mixedDataset } from '@wanmig/codec';
import { encodeFrame, FrameFlag, StreamKind, Subjects } from '@wanmig/protocol';
import {
  FileChunkTarget,
  FileWatermarkStore,
  RecordSink,
  RecordStreamWriter,
  StreamReceiver,
  StreamSender,
} from '@wanmig/stream';
import { startTwoSites, type TwoSites } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const SIZE = 24 * 1024 * 1024;
const WINDOW = 2 * 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('stream resume and bad input across the two-site bed', () => {
  let sites: TwoSites;
  let ncA: NatsConnection;
  let ncB: NatsConnection;
  let dir: string;
  let data: Buffer;

  beforeAll(async () => {
    sites = await startTwoSites({ delayMs: 10, bandwidthBps: 200e6 });
    ncA = await connect({ servers: sites.a.url });
    ncB = await connect({ servers: sites.b.url });
    dir = await mkdtemp(join(tmpdir(), 'wanmig-resume-'));
    data = Buffer.concat([...mixedDataset({ size: SIZE, seed: 3, chunkSize: 1024 * 1024 })].map((c) => c.data));
  });

  afterAll(async () => {
    await ncA?.close();
    await ncB?.close();
    await sites?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  function receiverFor(migrationId: string) {
    const path = join(dir, `${migrationId}.img`);
    const target = new FileChunkTarget(path, SIZE, { create: false });
    const receiver = new StreamReceiver({
      nc: ncB,
      migrationId,
      streamId: 1,
      sink: new RecordSink(target),
      store: new FileWatermarkStore(`${path}.watermark`),
    });
    return { path, target, receiver };
  }

  function senderFor(migrationId: string) {
    const sender = new StreamSender({ nc: ncA, migrationId, streamId: 1, kind: StreamKind.Disk, windowBytes: WINDOW });
    return { sender, writer: new RecordStreamWriter(sender, new ChunkEncoder(), 256 * 1024) };
  }

  async function sendFrom(writer: RecordStreamWriter, from: number, to: number): Promise<void> {
    for (let offset = from; offset < to; offset += 256 * 1024) {
      await writer.write(offset, data.subarray(offset, Math.min(to, offset + 256 * 1024)));
    }
  }

  it('a receiver that stops mid-transfer and restarts resumes from its watermark', async () => {
    const migrationId = randomUUID();
    new FileChunkTarget(join(dir, `${migrationId}.img`), SIZE, { create: true }).close();
    let rx = receiverFor(migrationId);
    await rx.receiver.start();
    const { sender, writer } = senderFor(migrationId);
    await sender.open();
    await sendFrom(writer, 0, SIZE / 2);
    // The destination service goes away with frames in flight, then comes back.
    await rx.receiver.stop();
    rx.target.close();
    rx = receiverFor(migrationId);
    const mark = await rx.receiver.start();
    expect(mark.nextSeq).toBeGreaterThan(0);
    await sendFrom(writer, SIZE / 2, SIZE);
    await writer.finish();
    sender.close();
    await rx.receiver.stop();
    rx.target.close();
    expect(sha(await readFile(rx.path))).toBe(sha(data));
    // Only what was in flight when it stopped goes again.
    expect(sender.stats.resentBytes).toBeLessThanOrEqual(WINDOW + 64 * 16);
  });

  it('a sender that restarts resumes from the receiver cursor, never from zero', async () => {
    const migrationId = randomUUID();
    new FileChunkTarget(join(dir, `${migrationId}.img`), SIZE, { create: true }).close();
    const rx = receiverFor(migrationId);
    await rx.receiver.start();
    const first = senderFor(migrationId);
    await first.sender.open();
    await sendFrom(first.writer, 0, SIZE / 2);
    await first.writer.flush(FrameFlag.Barrier);
    await first.sender.drain();
    first.sender.close();

    // A new sender process: it learns where the receiver stands and continues from there.
    const second = senderFor(migrationId);
    const resume = await second.sender.open();
    expect(resume.cursor).toBe(SIZE / 2);
    await sendFrom(second.writer, resume.cursor, SIZE);
    await second.writer.finish();
    second.sender.close();
    await rx.receiver.stop();
    rx.target.close();
    expect(sha(await readFile(rx.path))).toBe(sha(data));
    expect(second.writer.stats.rawBytes).toBe(SIZE / 2);
  });

  it('rejects and counts truncated, corrupt, unknown and out-of-range frames; writes nothing corrupt', async () => {
    const migrationId = randomUUID();
    new FileChunkTarget(join(dir, `${migrationId}.img`), SIZE, { create: true }).close();
    const rx = receiverFor(migrationId);
    await rx.receiver.start();
    const valid = (fields: { seq: number; offset: number; flags?: number }, payload: Buffer) =>
      encodeFrame(
        {
          kind: StreamKind.Disk,
          flags: fields.flags ?? 0,
          migrationId,
          streamId: 1,
          length: payload.length,
          ...fields,
        },
        payload,
      );
    const junk = Buffer.alloc(4096, 0xee);
    const bad: Buffer[] = [];
    bad.push(valid({ seq: 0, offset: 0 }, junk).subarray(0, 100)); // truncated
    const flipped = valid({ seq: 0, offset: 0 }, junk);
    flipped[flipped.length - 1] ^= 1; // bad checksum
    bad.push(flipped);
    const version = valid({ seq: 0, offset: 0 }, junk);
    version[2] = 9; // unknown version
    bad.push(version);
    const flags = valid({ seq: 0, offset: 0 }, junk);
    flags.writeUInt16BE(0x4000, 4); // unknown flag
    bad.push(flags);
    bad.push(valid({ seq: 0, offset: SIZE - 100 }, junk)); // well-formed, but past the end of the target
    const subject = Subjects.data(migrationId, 1);
    // Published at B, as a faulty or hostile peer on the receiver's own site.
    for (const frame of bad) ncB.publish(subject, frame);
    await ncB.flush();

    const { sender, writer } = senderFor(migrationId);
    await sender.open();
    await sendFrom(writer, 0, SIZE);
    await writer.finish();
    sender.close();
    await rx.receiver.stop();
    rx.target.close();
    const rejected = rx.receiver.stats.rejected;
    expect(rejected.FRAME_TRUNCATED).toBe(1);
    expect(rejected.FRAME_BAD_CHECKSUM).toBe(1);
    expect(rejected.FRAME_BAD_VERSION).toBe(1);
    expect(rejected.FRAME_BAD_FLAGS).toBe(1);
    expect(rejected.FRAME_OUT_OF_RANGE).toBe(1);
    expect(sha(await readFile(rx.path))).toBe(sha(data));
  });
});
