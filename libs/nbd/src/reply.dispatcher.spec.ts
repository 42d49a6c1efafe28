import { describe, expect, it } from 'vitest';
import { ByteReader } from './byte.reader.js';
import { NbdCommandError, NbdProtocolError } from './errors.js';
import { NbdCommand, NbdErrno, ReplyFlag, ReplyType } from './nbd.constants.js';
import {
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataHead,
  encodeOffsetHoleChunk,
  encodeSimpleReply,
  encodeStructuredHeader,
} from './reply.codec.js';
import { ReplyDispatcher } from './reply.dispatcher.js';

function setup(structuredReplies: boolean) {
  const reader = new ByteReader();
  const dispatcher = new ReplyDispatcher(reader, { structuredReplies, baseAllocationId: 1 }, () => undefined);
  const running = dispatcher.run().catch((e: unknown) => e);
  /** Feed bytes in small pieces, as a fragmented TCP stream would deliver them. */
  const feed = (...bufs: Buffer[]) => {
    const all = Buffer.concat(bufs);
    for (let at = 0; at < all.length; at += 7) reader.push(all.subarray(at, at + 7));
  };
  return { reader, dispatcher, running, feed };
}

describe('ReplyDispatcher', () => {
  it('matches simple replies to requests by cookie, out of order, with READ data', async () => {
    const { dispatcher, feed } = setup(false);
    const read = dispatcher.expect(1, { type: NbdCommand.Read, offset: 0, length: 5 });
    const write = dispatcher.expect(2, { type: NbdCommand.Write, offset: 0, length: 5 });
    const bad = dispatcher.expect(3, { type: NbdCommand.Read, offset: 9, length: 5 });
    feed(
      encodeSimpleReply(0, 2n),
      encodeSimpleReply(NbdErrno.EINVAL, 3n),
      encodeSimpleReply(0, 1n),
      Buffer.from('hello'),
    );
    expect(await write).toBeUndefined();
    expect(await read).toEqual(Buffer.from('hello'));
    const err = await bad.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdCommandError);
    expect(err).toMatchObject({ errno: NbdErrno.EINVAL, offset: 9, command: 'READ' });
    expect(dispatcher.size).toBe(0);
  });

  it('assembles a structured READ from data and hole chunks in any order', async () => {
    const { dispatcher, feed } = setup(true);
    const read = dispatcher.expect(7, { type: NbdCommand.Read, offset: 1000, length: 30 });
    feed(
      encodeOffsetDataHead(7n, 1020, 10, false),
      Buffer.alloc(10, 0xbb),
      encodeOffsetHoleChunk(7n, 1010, 10),
      encodeOffsetDataHead(7n, 1000, 10, false),
      Buffer.alloc(10, 0xaa),
      encodeNoneChunk(7n),
    );
    expect((await read)!).toEqual(Buffer.concat([Buffer.alloc(10, 0xaa), Buffer.alloc(10), Buffer.alloc(10, 0xbb)]));
  });

  it('reports an error chunk with its message, and block status extents', async () => {
    const { dispatcher, feed } = setup(true);
    const read = dispatcher.expect(1, { type: NbdCommand.Read, offset: 0, length: 4 });
    const status = dispatcher.expect(2, { type: NbdCommand.BlockStatus, offset: 0, length: 8192 });
    feed(
      encodeErrorChunk(1n, NbdErrno.EIO, 'disk on fire'),
      encodeBlockStatusChunk(2n, 1, [
        { length: 4096, flags: 0 },
        { length: 4096, flags: 3 },
      ]),
    );
    await expect(read).rejects.toMatchObject({ errno: NbdErrno.EIO, serverMessage: 'disk on fire' });
    expect(await status).toEqual([
      { length: 4096, flags: 0 },
      { length: 4096, flags: 3 },
    ]);
  });

  it('treats a reply for an unknown cookie, a bad magic or a short READ as a protocol violation', async () => {
    for (const bytes of [
      encodeSimpleReply(0, 99n),
      Buffer.alloc(16, 0x11),
      Buffer.concat([encodeOffsetDataHead(1n, 0, 2, true), Buffer.alloc(2)]),
      encodeStructuredHeader({ flags: ReplyFlag.Done, type: ReplyType.OffsetHole + 40, cookie: 1n, length: 0 }),
    ]) {
      const { dispatcher, feed, running } = setup(true);
      const read = dispatcher.expect(1, { type: NbdCommand.Read, offset: 0, length: 4 });
      feed(bytes);
      expect(await running).toBeInstanceOf(NbdProtocolError);
      dispatcher.failAll(new Error('gone'));
      await expect(read).rejects.toThrow();
    }
  });
});
