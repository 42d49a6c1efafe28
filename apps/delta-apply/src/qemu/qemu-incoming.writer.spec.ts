import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Zstd, ZstdStreamEncoder } from '@wanmig/codec';
import { ErrorCode, FrameFlag, StreamKind, type Frame } from '@wanmig/protocol';
import { QemuIncomingError } from './qemu-incoming.errors.js';
import { QemuIncomingWriter } from './qemu-incoming.writer.js';
import { QEMU_MIGRATION_STREAM_ID } from './qemu-stream.constants.js';

const migrationId = randomUUID();

function frame(seq: number, offset: number, payload: Buffer, flags = 0, length = payload.length): Frame {
  return {
    header: {
      version: 1,
      kind: StreamKind.Memory,
      flags,
      migrationId,
      streamId: QEMU_MIGRATION_STREAM_ID,
      seq,
      offset,
      length,
      payloadLength: payload.length,
      checksum: 0,
    },
    payload,
  };
}

const sha256 = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();
/** The relay's Digest frame closing the segment that ends at `offset`: `bytes` are that segment's. */
const digest = (seq: number, offset: number, bytes: Buffer, end = true) =>
  frame(seq, offset, sha256(bytes), FrameFlag.Digest | (end ? FrameFlag.End : 0), 0);

/** Stands in for a destination QEMU's `-incoming unix:` socket: keeps what it reads, notes the end. */
class FakeIncomingQemu {
  readonly received: Buffer[] = [];
  ended = false;
  socket?: Socket;
  private constructor(readonly server: Server) {}

  static listen(path: string): Promise<FakeIncomingQemu> {
    return new Promise((resolve) => {
      const server = createServer();
      const qemu = new FakeIncomingQemu(server);
      server.on('connection', (socket) => {
        qemu.socket = socket;
        socket.on('data', (chunk: Buffer) => qemu.received.push(chunk));
        socket.on('end', () => (qemu.ended = true));
        socket.on('error', () => undefined);
      });
      server.listen(path, () => resolve(qemu));
    });
  }

  get bytes(): Buffer {
    return Buffer.concat(this.received);
  }

  close(): Promise<void> {
    this.socket?.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe('QemuIncomingWriter', () => {
  let dir: string;
  let socketPath: string;
  let zstd: Zstd;
  const cleanups: Array<() => unknown> = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qin-'));
    socketPath = join(dir, 'incoming.sock');
    zstd = await Zstd.load();
  });

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  const writer = (connectTimeoutMs = 5000) => {
    const w = new QemuIncomingWriter({ migrationId, socketPath, connectTimeoutMs, zstd });
    cleanups.push(() => w.close());
    return w;
  };
  const fakeQemu = async () => {
    const qemu = await FakeIncomingQemu.listen(socketPath);
    cleanups.push(() => qemu.close());
    return qemu;
  };

  it('waits for the socket, writes decompressed bytes in order, and closes the write side on End', async () => {
    const w = writer();
    const a = Buffer.alloc(100_000, 1);
    const b = randomBytes(50_000);
    const applying = w.apply(frame(0, 0, zstd.compress(a), FrameFlag.Zstd, a.length));
    await new Promise((resolve) => setTimeout(resolve, 200)); // QEMU starts late
    const qemu = await fakeQemu();
    await applying;
    await w.apply(frame(1, a.length, b));
    await w.apply(digest(2, a.length + b.length, Buffer.concat([a, b])));
    await w.sync();
    await expect.poll(() => qemu.ended).toBe(true);
    expect(qemu.bytes.equals(Buffer.concat([a, b]))).toBe(true);
    expect(w.stats).toMatchObject({
      bytesWritten: a.length + b.length,
      frames: 2,
      ended: true,
      connected: true,
      verifiedBytes: a.length + b.length,
      endVerified: true,
    });
    expect(w.streamSha256).toBe(createHash('sha256').update(sha256(a, b)).digest('hex'));
    expect(w.stats.payloadBytes).toBeLessThan(a.length + b.length);
  });

  it('decodes zstd-stream frames in order; a segment that does not decode fails with RECORD_CORRUPT', async () => {
    const qemu = await fakeQemu();
    const w = writer();
    const encoder = await ZstdStreamEncoder.create();
    const a = randomBytes(64 * 1024);
    const b = Buffer.concat([Buffer.from('x'), a]);
    await w.apply(frame(0, 0, encoder.push(a), FrameFlag.ZstdStream, a.length));
    const second = encoder.push(b);
    expect(second.length).toBeLessThan(b.length / 4); // it refers back into the first frame
    await w.apply(frame(1, a.length, second, FrameFlag.ZstdStream, b.length));
    await expect.poll(() => qemu.bytes.length).toBe(a.length + b.length);
    expect(qemu.bytes.equals(Buffer.concat([a, b]))).toBe(true);
    await expect(
      w.apply(frame(2, a.length + b.length, Buffer.from('not zstd'), FrameFlag.ZstdStream, 10)),
    ).rejects.toMatchObject({ code: ErrorCode.RecordCorrupt, seq: 2 });
  });

  it('refuses a frame that does not continue the stream, or carries records, before writing anything', async () => {
    const qemu = await fakeQemu();
    const w = writer();
    await w.apply(frame(0, 0, Buffer.from('abcd')));
    await expect(w.apply(frame(1, 8, Buffer.from('efgh')))).rejects.toMatchObject({
      code: ErrorCode.FrameOutOfRange,
      position: 4,
      seq: 1,
    });
    await expect(w.apply(frame(1, 4, Buffer.from('efgh'), FrameFlag.Records))).rejects.toMatchObject({
      code: ErrorCode.FrameBadFlags,
    });
    await expect(w.apply(frame(1, 4, randomBytes(16), FrameFlag.Zstd, 16))).rejects.toMatchObject({
      code: ErrorCode.RecordCorrupt,
    });
    await expect(w.apply(frame(1, 4, Buffer.from('efgh'), 0, 5))).rejects.toMatchObject({
      code: ErrorCode.RecordCorrupt,
    });
    // Only a Digest frame ends a stream: a bare End is refused.
    await expect(w.apply(frame(1, 4, Buffer.from('efgh'), FrameFlag.End))).rejects.toMatchObject({
      code: ErrorCode.FrameBadFlags,
    });
    await w.apply(frame(1, 4, Buffer.from('efgh')));
    await w.apply(digest(2, 8, Buffer.from('abcdefgh')));
    await expect.poll(() => qemu.ended).toBe(true);
    expect(qemu.bytes.toString()).toBe('abcdefgh');
    await expect(w.apply(frame(2, 8, Buffer.from('x')))).rejects.toMatchObject({ code: ErrorCode.StreamClosed });
  });

  it('gives up when no QEMU listens within the connect timeout', async () => {
    const w = writer(300);
    const err = await w.apply(frame(0, 0, Buffer.from('QEVM'))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuIncomingError);
    expect(err).toMatchObject({ code: ErrorCode.Unavailable, socketPath });
  });

  it('fails the next frame with bytes once the destination QEMU has gone, and the sync after it', async () => {
    const qemu = await fakeQemu();
    const w = writer();
    await w.apply(frame(0, 0, Buffer.from('QEVM')));
    await qemu.close();
    await expect.poll(() => w.stats.connected && qemu.socket?.destroyed).toBe(true);
    // Gone is not failed yet: QEMU closes once it has the whole stream.
    await expect(w.sync()).resolves.toBeUndefined();
    await expect(w.apply(frame(1, 4, randomBytes(1 << 20)))).rejects.toMatchObject({ code: ErrorCode.Unavailable });
    await expect(w.sync()).rejects.toBeInstanceOf(QemuIncomingError);
  });

  it('accepts the empty End frame after QEMU closed, having read the whole stream (the end of a post-copy)', async () => {
    const qemu = await fakeQemu();
    const w = writer();
    await w.apply(frame(0, 0, Buffer.from('QEVM')));
    await expect.poll(() => qemu.bytes.length).toBe(4);
    await qemu.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await w.apply(digest(1, 4, Buffer.from('QEVM')));
    await expect(w.sync()).resolves.toBeUndefined();
    expect(w.stats).toMatchObject({ ended: true, endVerified: true });
  });

  it("checks each segment against the relay's digest; one that differs fails for good and drops QEMU", async () => {
    const qemu = await fakeQemu();
    const w = writer();
    const a = randomBytes(1000);
    await w.apply(frame(0, 0, a));
    await w.apply(digest(1, 1000, a, false));
    expect(w.stats).toMatchObject({ verifiedBytes: 1000, endVerified: false, ended: false });
    // A digest frame must close the segment exactly where the stream is.
    await expect(w.apply(frame(2, 999, sha256(a), FrameFlag.Digest, 0))).rejects.toMatchObject({
      code: ErrorCode.FrameBadFlags,
    });
    const b = randomBytes(1000);
    await w.apply(frame(2, 1000, b));
    const sent = Buffer.from(b);
    sent[612] ^= 0x40; // what the source QEMU wrote, one bit apart from what arrived
    const err = await w.apply(digest(3, 2000, sent)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuIncomingError);
    expect(err).toMatchObject({ code: ErrorCode.DigestMismatch, final: true, seq: 3 });
    expect((err as Error).message).toMatch(/differs in bytes \[1000, 2000\)/);
    await expect.poll(() => qemu.socket?.destroyed).toBe(true);
    expect(w.stats).toMatchObject({ verifiedBytes: 1000, endVerified: false });
    // Nothing after it is taken, whatever it is.
    await expect(w.apply(digest(3, 2000, b))).rejects.toBe(err);
  });
});
