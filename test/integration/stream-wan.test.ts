import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { FrameFlag, StreamKind, type Frame } from '@wanmig/protocol';
import { FileWatermarkStore, StreamReceiver, StreamSender, TokenBucket, type FrameSink } from '@wanmig/stream';
import { startTwoSites, type TwoSites } from '@wanmig/testing';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

class BufferSink implements FrameSink {
  readonly data: Buffer;
  constructor(size: number) {
    this.data = Buffer.alloc(size);
  }
  apply(frame: Frame): Promise<void> {
    frame.payload.copy(this.data, frame.header.offset);
    return Promise.resolve();
  }
  sync(): Promise<void> {
    return Promise.resolve();
  }
}

const FRAME = 128 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('stream across two NATS sites joined by the WAN emulator', () => {
  let sites: TwoSites;
  let ncA: NatsConnection;
  let ncB: NatsConnection;
  let dir: string;

  beforeAll(async () => {
    sites = await startTwoSites({ delayMs: 20, bandwidthBps: 100e6 });
    ncA = await connect({ servers: sites.a.url });
    ncB = await connect({ servers: sites.b.url });
    dir = await mkdtemp(join(tmpdir(), 'wanmig-stream-'));
  });

  afterAll(async () => {
    await ncA?.close();
    await ncB?.close();
    await sites?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function run(data: Buffer, opts: { cutAtFrame?: number; cutMs?: number; limiter?: TokenBucket } = {}) {
    const migrationId = randomUUID();
    const sink = new BufferSink(data.length);
    const receiver = new StreamReceiver({
      nc: ncB,
      migrationId,
      streamId: 1,
      sink,
      store: new FileWatermarkStore(join(dir, `${migrationId}.json`)),
    });
    await receiver.start();
    const sender = new StreamSender({
      nc: ncA,
      migrationId,
      streamId: 1,
      kind: StreamKind.Bulk,
      windowBytes: 4 * 1024 * 1024,
      limiter: opts.limiter,
    });
    await sender.open();
    const started = performance.now();
    for (let i = 0, offset = 0; offset < data.length; i++, offset += FRAME) {
      if (i === opts.cutAtFrame) sites.wan.cut(opts.cutMs ?? 2000);
      const payload = data.subarray(offset, offset + FRAME);
      const last = offset + FRAME >= data.length;
      await sender.send({ offset, length: payload.length, flags: last ? FrameFlag.End : 0, payload });
    }
    await receiver.finished();
    await sender.drain();
    const seconds = (performance.now() - started) / 1000;
    sender.close();
    await receiver.stop();
    return { sink, sender, receiver, seconds };
  }

  it('moves data intact, and the bytes cross the emulator', async () => {
    sites.wan.resetStats();
    const data = randomBytes(16 * 1024 * 1024);
    const { sink, receiver } = await run(data);
    expect(sha(sink.data)).toBe(sha(data));
    expect(receiver.stats.framesApplied).toBe(128);
    const wire = sites.wan.stats();
    expect(wire.aToB).toBeGreaterThan(data.length);
    expect(wire.aToB).toBeLessThan(data.length * 1.03);
  });

  it('survives a 2 s cut of the link and re-sends at most one window', async () => {
    await sites.waitForLink();
    const data = randomBytes(24 * 1024 * 1024);
    const { sink, sender } = await run(data, { cutAtFrame: 80, cutMs: 2000 });
    expect(sha(sink.data)).toBe(sha(data));
    expect(sender.stats.probes).toBeGreaterThan(0);
    expect(sender.stats.resentBytes).toBeLessThanOrEqual(4 * 1024 * 1024 + 64 * 64);
  });

  it('keeps to the shared bandwidth budget', async () => {
    await sites.waitForLink();
    const data = randomBytes(8 * 1024 * 1024);
    const limiter = new TokenBucket(4 * 1024 * 1024, 256 * 1024); // 4 MiB/s, well under the link
    const { sink, seconds } = await run(data, { limiter });
    expect(sha(sink.data)).toBe(sha(data));
    // 8 MiB at 4 MiB/s: about 2 s; the budget must not be exceeded.
    expect(seconds).toBeGreaterThan(1.8);
  });
});
