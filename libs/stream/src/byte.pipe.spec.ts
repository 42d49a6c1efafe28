import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, StreamKind } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { BytePipeSender, BytePipeSink } from './byte.pipe.js';
import { FakeNats } from './fake-nats.spec-helper.js';
import { StreamReceiver } from './stream.receiver.js';

const address = (nats: FakeNats, migrationId: string) => ({ nc: nats.connection(), migrationId, streamId: 5 });

describe('BytePipeSender / BytePipeSink', () => {
  it('carries pushed bytes in order, through lost frames, and ends', async () => {
    const nats = new FakeNats();
    let n = 0;
    nats.drop = (subject) => ++n % 5 === 0 && !subject.endsWith('.status');
    const migrationId = randomUUID();
    const got: Buffer[] = [];
    let ended = false;
    const sink = new BytePipeSink(
      async (data) => {
        got.push(data);
        await new Promise((resolve) => setTimeout(resolve, 1)); // a socket's write callback
      },
      () => (ended = true),
    );
    // The sender opens its stream at the first byte pushed.
    const pipe = new BytePipeSender({ ...address(nats, migrationId), kind: StreamKind.Memory, minRtoMs: 30 });
    const chunks = Array.from({ length: 40 }, (_, i) => randomBytes(1 + ((i * 997) % 9000)));
    const receiver = new StreamReceiver({ ...address(nats, migrationId), sink, ackIntervalMs: 5 });
    await receiver.start();
    for (const chunk of chunks) {
      pipe.push(chunk);
      if (chunk.length % 3 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await pipe.end();
    await receiver.stop();
    expect(Buffer.concat(got).equals(Buffer.concat(chunks))).toBe(true);
    expect(ended).toBe(true);
    expect(pipe.stats.bytes).toBe(Buffer.concat(chunks).length);
    expect(pipe.error).toBeUndefined();
  });

  it('refuses a frame that does not continue the pipe, or carries a codec', async () => {
    const sink = new BytePipeSink(() => Promise.resolve());
    const header = { version: 1, kind: StreamKind.Memory, migrationId: 'm', streamId: 5, seq: 0, checksum: 0 };
    const frame = (offset: number, payload: Buffer, flags = 0) => ({
      header: { ...header, flags, offset, length: payload.length, payloadLength: payload.length },
      payload,
    });
    await sink.apply(frame(0, Buffer.from('abc')));
    await expect(sink.apply(frame(5, Buffer.from('d')))).rejects.toMatchObject({ code: ErrorCode.FrameOutOfRange });
    await expect(sink.apply(frame(3, Buffer.from('d'), 2))).rejects.toMatchObject({ code: ErrorCode.FrameBadFlags });
    expect(sink.stats.bytes).toBe(3);
  });

  it('a closed pipe drops what is pushed, and cannot end', async () => {
    const pipe = new BytePipeSender({ ...address(new FakeNats(), randomUUID()), kind: StreamKind.Memory });
    pipe.close();
    pipe.push(Buffer.from('late'));
    expect(pipe.stats.bytes).toBe(0);
    expect(pipe.error).toBeUndefined();
    await expect(pipe.end()).rejects.toMatchObject({ code: ErrorCode.StreamClosed });
  });
});
