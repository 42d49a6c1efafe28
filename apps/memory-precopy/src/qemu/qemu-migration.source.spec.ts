import { createHash, randomBytes } from 'node:crypto';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type Socket, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Zstd, ZstdStreamDecoder } from '@wanmig/codec';
import { ErrorCode, FrameFlag } from '@wanmig/protocol';
import { StreamClosedError } from '@wanmig/stream';
import { QemuStreamAbortedError, QemuStreamError } from './qemu-migration.errors.js';
import { QemuMigrationSource, QemuStreamCompression, type QemuFrameOutlet } from './qemu-migration.source.js';

interface SentFrame {
  offset: number;
  length: number;
  flags: number;
  payload: Buffer;
}

/** A sender whose window is `windowFrames` frames; `ack()` frees them. */
class FakeOutlet implements QemuFrameOutlet {
  readonly frames: SentFrame[] = [];
  closed = false;
  failWith?: Error;
  private acked = 0;
  private waiters: Array<() => void> = [];
  constructor(private windowFrames = Infinity) {}

  async send(frame: { offset: number; length: number; flags: number; payload: Uint8Array }): Promise<void> {
    if (this.failWith) throw this.failWith;
    if (this.closed) throw new StreamClosedError({ migrationId: 'm', streamId: 4 });
    this.frames.push({ ...frame, payload: Buffer.from(frame.payload) });
    while (this.frames.length - this.acked > this.windowFrames) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      if (this.closed) throw new StreamClosedError({ migrationId: 'm', streamId: 4 });
    }
  }
  async drain(): Promise<void> {
    while (this.acked < this.frames.length) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      if (this.closed) throw new StreamClosedError({ migrationId: 'm', streamId: 4 });
    }
  }
  ack(all = true): void {
    this.acked = all ? this.frames.length : Math.min(this.frames.length, this.acked + 1);
    for (const wake of this.waiters.splice(0)) wake();
  }
  close(): void {
    this.closed = true;
    for (const wake of this.waiters.splice(0)) wake();
  }
}

function dialQemu(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

const tick = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms));

describe('QemuMigrationSource', () => {
  let dir: string;
  let socketPath: string;
  let zstd: Zstd;
  const sources: QemuMigrationSource[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qsrc-'));
    socketPath = join(dir, 'migrate.sock');
    zstd = await Zstd.load();
  });

  afterEach(async () => {
    await Promise.all(sources.splice(0).map((s) => s.close()));
    await rm(dir, { recursive: true, force: true });
  });

  const listen = async (
    outlet: QemuFrameOutlet,
    frameBytes = 64 * 1024,
    compression: QemuStreamCompression = QemuStreamCompression.Frame,
  ) => {
    const source = await QemuMigrationSource.listen({
      migrationId: 'm',
      socketPath,
      sender: outlet,
      zstd,
      frameBytes,
      compression,
    });
    sources.push(source);
    return source;
  };

  /**
   * Decodes what the outlet got back into QEMU's byte stream, checking offsets, that each Digest frame holds the
   * sha256 of the bytes since the one before (StreamDigester's segments), and that the last frame, and only it, is
   * the End with the last segment's digest.
   */
  const reassemble = async (frames: SentFrame[]): Promise<Buffer> => {
    let at = 0;
    let segmentStart = 0;
    const parts: Buffer[] = [];
    const stream = await ZstdStreamDecoder.create();
    frames.forEach((f, i) => {
      expect(f.offset).toBe(at);
      expect((f.flags & FrameFlag.End) !== 0).toBe(i === frames.length - 1);
      if (f.flags & FrameFlag.Digest) {
        expect(f.length).toBe(0);
        const segment = Buffer.concat(parts).subarray(segmentStart, at);
        expect(f.payload.equals(createHash('sha256').update(segment).digest())).toBe(true);
        segmentStart = at;
        return;
      }
      const body =
        f.flags & FrameFlag.ZstdStream
          ? stream.pull(f.payload, f.length)
          : f.flags & FrameFlag.Zstd
            ? zstd.decompress(f.payload)
            : f.payload;
      expect(body.length).toBe(f.length);
      parts.push(body);
      at += f.length;
    });
    expect(frames.at(-1)!.flags & FrameFlag.Digest).toBe(FrameFlag.Digest);
    return Buffer.concat(parts);
  };

  it('relays the bytes in order as frames, compressing what compresses, the End with the last digest', async () => {
    const outlet = new FakeOutlet();
    const source = await listen(outlet);
    const data = Buffer.concat([Buffer.alloc(300_000, 7), randomBytes(200_000), Buffer.from('tail')]);
    const qemu = await dialQemu(socketPath);
    qemu.end(data);
    await expect.poll(() => source.progress.qemuClosed).toBe(true);
    await expect.poll(() => outlet.frames.some((f) => f.flags & FrameFlag.End)).toBe(true);
    outlet.ack();
    const report = await source.done;
    expect((await reassemble(outlet.frames)).equals(data)).toBe(true);
    expect(report).toMatchObject({ qemuBytes: data.length, framedBytes: data.length, delivered: true });
    expect(report.compressedFrames).toBeGreaterThan(0);
    expect(report.compressedFrames).toBeLessThan(report.frames);
    expect(report.frameBytes).toBeLessThan(data.length);
    expect(outlet.closed).toBe(true);
    // Listening stopped at the first connection: the socket file is gone.
    await expect(access(socketPath)).rejects.toThrow(/ENOENT/);
  });

  it('by default runs one zstd stream through the frames: a page repeated frames later costs a reference', async () => {
    const outlet = new FakeOutlet();
    const source = await QemuMigrationSource.listen({
      migrationId: 'm',
      socketPath,
      sender: outlet,
      frameBytes: 65536,
    });
    sources.push(source);
    const pages = randomBytes(256 * 1024);
    const data = Buffer.concat([pages, Buffer.from('header'), pages]);
    const qemu = await dialQemu(socketPath);
    qemu.end(data);
    await expect.poll(() => outlet.frames.some((f) => f.flags & FrameFlag.End)).toBe(true);
    outlet.ack();
    const report = await source.done;
    expect(report.compression).toBe(QemuStreamCompression.Stream);
    expect(outlet.frames.every((f) => f.length === 0 || (f.flags & FrameFlag.ZstdStream) !== 0)).toBe(true);
    expect(outlet.frames.filter((f) => f.length === 0).every((f) => f.flags & FrameFlag.Digest)).toBe(true);
    expect((await reassemble(outlet.frames)).equals(data)).toBe(true);
    // Random bytes do not compress: only the repeat, 256 KiB back (four frames), can be saved.
    expect(report.frameBytes).toBeLessThan(pages.length * 1.1);
  });

  it("closes with an End frame that carries the last segment's digest and no bytes", async () => {
    const outlet = new FakeOutlet();
    const source = await listen(outlet, 4096);
    const qemu = await dialQemu(socketPath);
    const bytes = randomBytes(4096);
    qemu.write(bytes);
    await expect.poll(() => outlet.frames.length).toBe(1);
    qemu.end();
    await expect.poll(() => outlet.frames.length).toBe(2);
    outlet.ack();
    const report = await source.done;
    const sha256 = createHash('sha256').update(bytes).digest();
    expect(outlet.frames[1]).toMatchObject({ offset: 4096, length: 0, flags: FrameFlag.End | FrameFlag.Digest });
    expect(outlet.frames[1].payload.equals(sha256)).toBe(true);
    expect(report.digestSegments).toBe(1);
    expect(report.streamSha256).toBe(createHash('sha256').update(sha256).digest('hex'));
  });

  it("cuts frames at digest segment ends and sends each segment's digest after its last frame", async () => {
    const outlet = new FakeOutlet();
    const source = await QemuMigrationSource.listen({
      migrationId: 'm',
      socketPath,
      sender: outlet,
      frameBytes: 64 * 1024,
      compression: QemuStreamCompression.None,
      digestSegmentBytes: 100_000,
    });
    sources.push(source);
    const data = randomBytes(350_000);
    const qemu = await dialQemu(socketPath);
    qemu.end(data);
    await expect.poll(() => outlet.frames.some((f) => f.flags & FrameFlag.End)).toBe(true);
    outlet.ack();
    const report = await source.done;
    expect((await reassemble(outlet.frames)).equals(data)).toBe(true);
    const digests = outlet.frames.filter((f) => f.flags & FrameFlag.Digest);
    expect(digests.map((f) => f.offset)).toEqual([100_000, 200_000, 300_000, 350_000]);
    expect(
      outlet.frames.every(
        (f) => Math.floor(f.offset / 100_000) === Math.floor((f.offset + f.length - 1) / 100_000) || f.length === 0,
      ),
    ).toBe(true);
    const chain = createHash('sha256');
    for (const f of digests) chain.update(f.payload);
    expect(report).toMatchObject({ digestSegments: 4, streamSha256: chain.digest('hex') });
  });

  it('flushes a partial frame when QEMU pauses', async () => {
    const outlet = new FakeOutlet();
    await listen(outlet);
    const qemu = await dialQemu(socketPath);
    qemu.write(Buffer.from('QEVM'));
    await expect.poll(() => outlet.frames.length).toBe(1);
    expect(outlet.frames[0]).toMatchObject({ offset: 0, length: 4, flags: 0 });
    qemu.destroy();
  });

  it('stops reading while the window is full, so QEMU is held back, and resumes as acks come', async () => {
    const outlet = new FakeOutlet(2);
    const source = await listen(outlet);
    const data = randomBytes(32 * 1024 * 1024);
    const qemu = await dialQemu(socketPath);
    let written = false;
    qemu.write(data, () => (written = true));
    qemu.end();
    // The window fills and the source stops reading (however long a loaded machine takes to get there)...
    await expect.poll(() => source.progress.readStalls, { timeout: 10_000 }).toBeGreaterThan(0);
    // ...and reads no more while no ack comes.
    await tick(300);
    // Two frames in the window, about two read ahead, plus what the kernel buffers: far from 32 MiB.
    expect(source.progress.qemuBytes).toBeLessThan(4 * 1024 * 1024);
    expect(written).toBe(false);
    while (!source.progress.delivered) {
      outlet.ack();
      await tick(1);
    }
    const report = await source.done;
    expect(written).toBe(true);
    expect((await reassemble(outlet.frames)).equals(data)).toBe(true);
    expect(report.readStalledMs).toBeGreaterThanOrEqual(250);
  });

  it('refuses a second connection', async () => {
    const outlet = new FakeOutlet();
    await listen(outlet);
    const first = await dialQemu(socketPath);
    await expect
      .poll(() =>
        access(socketPath).then(
          () => true,
          () => false,
        ),
      )
      .toBe(false);
    await expect(dialQemu(socketPath)).rejects.toThrow(/ENOENT|ECONNREFUSED/);
    first.destroy();
  });

  it('close() aborts: QEMU loses its connection, the sender is closed, done rejects', async () => {
    const outlet = new FakeOutlet(0);
    const source = await listen(outlet);
    const qemu = await dialQemu(socketPath);
    const qemuClosed = new Promise((resolve) => qemu.once('close', resolve));
    qemu.on('error', () => undefined);
    qemu.write(randomBytes(200_000));
    await expect.poll(() => outlet.frames.length).toBeGreaterThan(0);
    await source.close();
    await expect(source.done).rejects.toBeInstanceOf(QemuStreamAbortedError);
    await qemuClosed;
    expect(outlet.closed).toBe(true);
  });

  it('a failing sender fails the relay and drops QEMU connection, so that QEMU fails the migration', async () => {
    const outlet = new FakeOutlet();
    outlet.failWith = new StreamClosedError({ migrationId: 'm', streamId: 4 });
    const source = await listen(outlet);
    const qemu = await dialQemu(socketPath);
    const qemuClosed = new Promise((resolve) => qemu.once('close', resolve));
    qemu.on('error', () => undefined);
    qemu.write(randomBytes(100_000));
    const err = await source.done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuStreamError);
    expect(err).toMatchObject({ code: ErrorCode.StreamClosed, migrationId: 'm' });
    await qemuClosed;
  });

  it('refuses a path another process listens on, or a file that is not a socket', async () => {
    await listen(new FakeOutlet());
    const again = () => QemuMigrationSource.listen({ migrationId: 'm', socketPath, sender: new FakeOutlet(), zstd });
    await expect(again()).rejects.toMatchObject({ code: ErrorCode.Conflict, message: /another process/ });
    socketPath = join(dir, 'plain-file');
    await writeFile(socketPath, 'x');
    await expect(again()).rejects.toMatchObject({ code: ErrorCode.Conflict, message: /not a socket/ });
  });
});
