import { randomBytes, randomUUID } from 'node:crypto';
import { StreamKind } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { FakeNats } from './fake-nats.spec-helper.js';
import { MemorySink } from './memory.sink.spec-helper.js';
import { StreamReceiver } from './stream.receiver.js';
import { StreamSender } from './stream.sender.js';
import { MemoryWatermarkStore } from './watermark.store.js';

const FRAME = 16 * 1024;

async function transfer(nats: FakeNats, data: Buffer, opts: { store?: MemoryWatermarkStore; sink?: MemorySink } = {}) {
  const migrationId = randomUUID();
  const sink = opts.sink ?? new MemorySink();
  const receiver = new StreamReceiver({
    nc: nats.connection(),
    migrationId,
    streamId: 1,
    sink,
    store: opts.store,
    ackIntervalMs: 5,
  });
  await receiver.start();
  const sender = new StreamSender({
    nc: nats.connection(),
    migrationId,
    streamId: 1,
    kind: StreamKind.Bulk,
    windowBytes: 8 * FRAME,
    minRtoMs: 30,
    giveUpAfterMs: 5000,
  });
  await sender.open();
  for (let offset = 0; offset < data.length; offset += FRAME) {
    const payload = data.subarray(offset, offset + FRAME);
    await sender.send({ offset, length: payload.length, flags: 0, payload });
  }
  await sender.drain();
  sender.close();
  await receiver.stop();
  return { sink, sender, receiver };
}

describe('stream sender and receiver', () => {
  it('delivers everything in order on a clean link, with no re-sends', async () => {
    const data = randomBytes(40 * FRAME);
    const { sink, sender, receiver } = await transfer(new FakeNats(), data);
    expect(sink.contents().equals(data)).toBe(true);
    expect(sender.stats.resentBytes).toBe(0);
    expect(receiver.watermark.nextSeq).toBe(40);
    expect(receiver.watermark.cursor).toBe(data.length);
  });

  it('repairs lost frames and lost acks', async () => {
    const nats = new FakeNats();
    let n = 0;
    nats.drop = (subject) => ++n % 7 === 0 && !subject.endsWith('.status');
    const data = randomBytes(60 * FRAME);
    const { sink, sender } = await transfer(nats, data);
    expect(sink.contents().equals(data)).toBe(true);
    expect(sender.stats.resentFrames).toBeGreaterThan(0);
  });

  it('rejects a corrupted frame, counts it, and gets it again', async () => {
    const nats = new FakeNats();
    let corrupted = false;
    nats.drop = (subject, bytes) => {
      if (!corrupted && subject.includes('.data.') && bytes.length > 1000) {
        corrupted = true;
        bytes[bytes.length - 1] ^= 0xff; // flipped on the wire; the checksum must catch it
      }
      return false;
    };
    const data = randomBytes(10 * FRAME);
    const { sink, receiver } = await transfer(nats, data);
    expect(sink.contents().equals(data)).toBe(true);
    expect(receiver.stats.rejected.FRAME_BAD_CHECKSUM).toBe(1);
  });

  it('re-requests a frame the sink failed to apply', async () => {
    const sink = new MemorySink();
    sink.failNext = 2;
    const data = randomBytes(10 * FRAME);
    const { receiver } = await transfer(new FakeNats(), data, { sink });
    expect(sink.contents().equals(data)).toBe(true);
    expect(receiver.stats.rejected.INTERNAL).toBe(2);
  });

  it('stops the sender when the receiver gives up on the stream, instead of re-sending forever', async () => {
    const nats = new FakeNats();
    const migrationId = randomUUID();
    const sink = new MemorySink();
    sink.failNext = 1_000;
    const receiver = new StreamReceiver({
      nc: nats.connection(),
      migrationId,
      streamId: 1,
      sink,
      maxApplyFailures: 3,
    });
    await receiver.start();
    const sender = new StreamSender({
      nc: nats.connection(),
      migrationId,
      streamId: 1,
      kind: StreamKind.Bulk,
      minRtoMs: 30,
    });
    await sender.open();
    const data = randomBytes(4 * FRAME);
    const sending = (async () => {
      for (let offset = 0; offset < data.length; offset += FRAME) {
        await sender.send({ offset, length: FRAME, flags: 0, payload: data.subarray(offset, offset + FRAME) });
      }
      await sender.drain();
    })();
    await expect(sending).rejects.toMatchObject({ code: 'RECORD_CORRUPT' });
    await expect(receiver.finished()).rejects.toMatchObject({ code: 'RECORD_CORRUPT' });
    await receiver.stop();
  });

  it("numbers a new sender after an earlier sender's frames that arrived but are not durable yet", async () => {
    const nats = new FakeNats();
    const migrationId = randomUUID();
    const sink = new MemorySink();
    const receiver = new StreamReceiver({ nc: nats.connection(), migrationId, streamId: 1, sink, ackIntervalMs: 5 });
    await receiver.start();
    const first = new StreamSender({ nc: nats.connection(), migrationId, streamId: 1, kind: StreamKind.Bulk });
    await first.open();
    const data = randomBytes(6 * FRAME);
    for (let offset = 0; offset < 3 * FRAME; offset += FRAME) {
      await first.send({ offset, length: FRAME, flags: 0, payload: data.subarray(offset, offset + FRAME) });
    }
    first.close(); // gone before its acks: the receiver may hold frames it has not made durable
    const second = new StreamSender({ nc: nats.connection(), migrationId, streamId: 1, kind: StreamKind.Bulk });
    const mark = await second.open();
    expect(mark.nextSeq).toBe(3);
    for (let offset = 3 * FRAME; offset < data.length; offset += FRAME) {
      await second.send({ offset, length: FRAME, flags: 0, payload: data.subarray(offset, offset + FRAME) });
    }
    await second.drain();
    second.close();
    await receiver.stop();
    expect(sink.contents().equals(data)).toBe(true);
  });

  it('after a link cut re-sends no more than one window', async () => {
    const nats = new FakeNats();
    const migrationId = randomUUID();
    const sink = new MemorySink();
    const receiver = new StreamReceiver({ nc: nats.connection(), migrationId, streamId: 1, sink, ackIntervalMs: 5 });
    await receiver.start();
    const windowBytes = 8 * FRAME;
    const sender = new StreamSender({
      nc: nats.connection(),
      migrationId,
      streamId: 1,
      kind: StreamKind.Bulk,
      windowBytes,
      minRtoMs: 30,
    });
    await sender.open();
    const data = randomBytes(64 * FRAME);
    for (let offset = 0; offset < data.length; offset += FRAME) {
      if (offset === 32 * FRAME) {
        nats.linkUp = false;
        setTimeout(() => (nats.linkUp = true), 400);
      }
      await sender.send({ offset, length: FRAME, flags: 0, payload: data.subarray(offset, offset + FRAME) });
    }
    await sender.drain();
    sender.close();
    await receiver.stop();
    expect(sink.contents().equals(data)).toBe(true);
    expect(sender.stats.probes).toBeGreaterThan(0);
    expect(sender.stats.resentBytes).toBeLessThanOrEqual(windowBytes + 64 * 10);
  });

  it('resumes a new receiver from the persisted watermark, not from zero', async () => {
    const store = new MemoryWatermarkStore();
    const data = randomBytes(20 * FRAME);
    const nats = new FakeNats();
    const sink = new MemorySink();
    await transfer(nats, data.subarray(0, 10 * FRAME), { store, sink });
    const mark = await store.load();
    expect(mark).toEqual({ nextSeq: 10, cursor: 10 * FRAME });

    // A restarted receiver and sender: the sender learns where to continue from the receiver.
    const migrationId = randomUUID();
    await store.save({ nextSeq: 10, cursor: 10 * FRAME });
    const receiver = new StreamReceiver({ nc: nats.connection(), migrationId, streamId: 1, sink, store });
    await receiver.start();
    const sender = new StreamSender({ nc: nats.connection(), migrationId, streamId: 1, kind: StreamKind.Bulk });
    const resume = await sender.open();
    expect(resume).toEqual({ nextSeq: 10, cursor: 10 * FRAME });
    for (let offset = resume.cursor; offset < data.length; offset += FRAME) {
      await sender.send({ offset, length: FRAME, flags: 0, payload: data.subarray(offset, offset + FRAME) });
    }
    await sender.drain();
    sender.close();
    await receiver.stop();
    expect(sink.contents().equals(data)).toBe(true);
    expect(sender.stats.bytesSent).toBeLessThan(11 * (FRAME + 64));
  });
});
