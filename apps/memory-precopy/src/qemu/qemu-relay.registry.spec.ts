import { createHash, randomUUID } from 'node:crypto';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '@wanmig/protocol';
import { recommendedWindowBytes } from '@wanmig/stream';
import {
  QemuMigrationSource,
  type QemuMigrationSourceOptions,
  type QemuSourceProgress,
} from './qemu-migration.source.js';
import { QemuRelayRegistry, type QemuRelayDeps, type RelaySender } from './qemu-relay.registry.js';
import type { QemuStreamSenderOptions } from './qemu-stream.sender.js';

/** A sender whose every frame is acknowledged at once; it records the frames and how it was opened. */
class FakeSender implements RelaySender {
  readonly stats = { bytesSent: 0, resentBytes: 0 };
  readonly frames: Array<{ offset: number; length: number; flags: number }> = [];
  closed = false;
  send(frame: { offset: number; length: number; flags: number; payload: Uint8Array }): Promise<void> {
    if (this.closed) return Promise.reject(new Error('closed'));
    this.frames.push({ offset: frame.offset, length: frame.length, flags: frame.flags });
    this.stats.bytesSent += frame.payload.length + 64;
    return Promise.resolve();
  }
  drain(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.closed = true;
  }
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

function dial(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('QemuRelayRegistry', () => {
  let dir: string;
  let registry: QemuRelayRegistry;
  let opened: Array<QemuStreamSenderOptions & { sender: FakeSender }>;
  let listened: QemuMigrationSourceOptions[];
  let receiverAnswers: boolean;
  const nc = {} as NatsConnection;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-relay-'));
    opened = [];
    listened = [];
    receiverAnswers = true;
    const deps: QemuRelayDeps = {
      probeReceiver: async () => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (!receiverAnswers) throw new Error('503 no responders');
        return 40;
      },
      openSender: (options) => {
        const sender = new FakeSender();
        opened.push({ ...options, sender });
        return Promise.resolve(sender);
      },
      listen: (options) => {
        listened.push(options);
        // The return path needs a real connection: here the source listens without it (see the post-copy case).
        return QemuMigrationSource.listen({ ...options, returnPath: undefined, zstd: false, frameBytes: 4096 });
      },
    };
    registry = new QemuRelayRegistry(nc, dir, deps);
  });

  afterEach(async () => {
    await registry.beforeApplicationShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  it('opens a relay on <runtimeDir>/qemu/<id>.sock with a window sized for the budget and the measured RTT', async () => {
    const migrationId = randomUUID();
    const reply = await registry.open({ migrationId, bandwidthBps: 80e6 });
    const windowBytes = recommendedWindowBytes(10e6, 40);
    expect(reply).toEqual({
      migrationId,
      socketPath: join(dir, 'qemu', `${migrationId}.sock`),
      windowBytes,
      rttMs: 40,
    });
    expect(await exists(reply.socketPath)).toBe(true);
    expect(opened).toHaveLength(1);
    expect(opened[0]).toMatchObject({ migrationId, windowBytes, nc });
    expect(opened[0].limiter).toBeDefined();
    // Pre-copy by default: no return path.
    expect(listened[0].returnPath).toBeUndefined();

    // The same request again, and two at once: the same relay, opened once.
    const again = await Promise.all([
      registry.open({ migrationId, bandwidthBps: 80e6 }),
      registry.open({ migrationId, bandwidthBps: 80e6 }),
    ]);
    expect(again).toEqual([reply, reply]);
    expect(opened).toHaveLength(1);

    // Other options for the same migration: refused.
    await expect(registry.open({ migrationId, windowBytes: 1 << 20 })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
    });
  });

  it('relays what QEMU writes; status follows it to the end', async () => {
    const migrationId = randomUUID();
    const { socketPath } = await registry.open({ migrationId, windowBytes: 1 << 20 });
    expect(opened[0]).toMatchObject({ windowBytes: 1 << 20, limiter: undefined });
    expect(registry.status({ migrationId })).toMatchObject({ connected: false, done: false, failed: false });

    const qemu = await dial(socketPath);
    await new Promise<void>((resolve) => qemu.end(Buffer.alloc(10_000, 7), resolve));
    await expect.poll(() => registry.status({ migrationId }).done).toBe(true);
    const status = registry.status({ migrationId });
    expect(status).toMatchObject({
      qemuBytes: 10_000,
      framedBytes: 10_000,
      connected: true,
      qemuClosed: true,
      failed: false,
      closed: false,
    });
    // Data frames, then the End with the stream's one digest segment.
    expect(status.frames + status.digestSegments).toBe(opened[0].sender.frames.length);
    const segment = createHash('sha256').update(Buffer.alloc(10_000, 7)).digest();
    expect(status).toMatchObject({
      digestSegments: 1,
      streamSha256: createHash('sha256').update(segment).digest('hex'),
    });
    expect(status.senderBytes).toBeGreaterThan(10_000);
    expect(status.streamMs).toBeGreaterThanOrEqual(0);
    expect(status.error).toBeUndefined();
    expect(status.returnBytes).toBe(0);
    // A delivered relay answers a repeat of its request still.
    expect((await registry.open({ migrationId, windowBytes: 1 << 20 })).socketPath).toBe(socketPath);
  });

  it('with returnPath, the source receives the destination’s return path on the service’s connection', async () => {
    const migrationId = randomUUID();
    const reply = await registry.open({ migrationId, returnPath: true });
    expect(listened).toHaveLength(1);
    expect(listened[0].returnPath?.nc).toBe(nc);
    // A repeat must ask for the same: with or without the return path is another relay.
    await expect(registry.open({ migrationId, returnPath: true })).resolves.toEqual(reply);
    await expect(registry.open({ migrationId })).rejects.toMatchObject({ code: ErrorCode.Conflict });
    await expect(registry.open({ migrationId, returnPath: false })).rejects.toMatchObject({ code: ErrorCode.Conflict });
    // false is the default: the same request as none.
    const plain = randomUUID();
    const first = await registry.open({ migrationId: plain });
    await expect(registry.open({ migrationId: plain, returnPath: false })).resolves.toEqual(first);
    expect(listened[1].returnPath).toBeUndefined();
  });

  it('status reports the return-path bytes the source wrote back into QEMU', async () => {
    const progress: QemuSourceProgress = {
      compression: 'none',
      qemuBytes: 1 << 20,
      framedBytes: 1 << 20,
      frameBytes: 1 << 20,
      frames: 16,
      compressedFrames: 0,
      readStalls: 0,
      readStalledMs: 0,
      returnBytes: 12_288,
      connected: true,
      qemuClosed: false,
      delivered: false,
      digestSegments: 0,
      streamSha256: '',
    };
    let abort!: (err: Error) => void;
    const fake = {
      done: new Promise((_, reject) => (abort = reject)),
      progress,
      close: () => Promise.resolve(abort(new Error('closed'))),
    } as unknown as QemuMigrationSource;
    const withFake = new QemuRelayRegistry(nc, dir, {
      probeReceiver: () => Promise.resolve(10),
      openSender: () => Promise.resolve(new FakeSender()),
      listen: (options) => {
        listened.push(options);
        return Promise.resolve(fake);
      },
    });
    const migrationId = randomUUID();
    await withFake.open({ migrationId, returnPath: true });
    expect(withFake.status({ migrationId })).toMatchObject({ returnBytes: 12_288, qemuBytes: 1 << 20, done: false });
    expect(listened[0].returnPath).toEqual({ nc });
    await withFake.beforeApplicationShutdown();
  });

  it('close stops relaying, removes the socket, is idempotent, and the relay is not opened again', async () => {
    const migrationId = randomUUID();
    const { socketPath } = await registry.open({ migrationId });
    const closed = await registry.close({ migrationId });
    expect(closed).toMatchObject({ closed: true, failed: true, done: false, error: { code: ErrorCode.StreamClosed } });
    expect(opened[0].sender.closed).toBe(true);
    expect(await exists(socketPath)).toBe(false);
    expect(await registry.close({ migrationId })).toEqual(closed);
    await expect(registry.open({ migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: expect.stringMatching(/closed; a QEMU stream starts again from byte 0/) as unknown,
    });
  });

  it('refuses bad requests, unknown migrations, and a relay with no receiver to send to', async () => {
    await expect(registry.open({ migrationId: 'nope' })).rejects.toMatchObject({ code: ErrorCode.InvalidRequest });
    await expect(registry.open({ migrationId: randomUUID(), windowBytes: 10 })).rejects.toMatchObject({
      code: ErrorCode.InvalidRequest,
    });
    await expect(registry.open({ migrationId: randomUUID().toUpperCase() })).rejects.toMatchObject({
      code: ErrorCode.InvalidRequest,
    });
    const unknown = { migrationId: randomUUID() };
    expect(() => registry.status(unknown)).toThrow(expect.objectContaining({ code: ErrorCode.NotFound }));
    await expect(registry.close(unknown)).rejects.toMatchObject({ code: ErrorCode.NotFound });

    receiverAnswers = false;
    const migrationId = randomUUID();
    await expect(registry.open({ migrationId })).rejects.toMatchObject({
      code: ErrorCode.Unavailable,
      message: expect.stringMatching(/start mem\.qemu\.incoming at the destination first/) as unknown,
    });
    expect(opened).toHaveLength(0);
    expect(await exists(join(dir, 'qemu', `${migrationId}.sock`))).toBe(false);
    // Nothing was left behind: once a receiver answers, the relay opens.
    receiverAnswers = true;
    await expect(registry.open({ migrationId })).resolves.toMatchObject({ migrationId });
  });

  it('closes the relays still under way when the service shuts down', async () => {
    const a = await registry.open({ migrationId: randomUUID() });
    await registry.beforeApplicationShutdown();
    expect(registry.status({ migrationId: a.migrationId })).toMatchObject({ closed: true, failed: true });
    await expect(registry.open({ migrationId: randomUUID() })).rejects.toMatchObject({ code: ErrorCode.Unavailable });
  });
});
