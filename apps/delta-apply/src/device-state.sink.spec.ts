import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Zstd } from '@wanmig/codec';
import { ErrorCode, FrameFlag, StreamKind, type Frame } from '@wanmig/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeviceStateSink, sha256 } from './device-state.sink.js';
import { DeviceStateFrameError } from './errors.js';

const MIGRATION = randomUUID();
let seq = 0;

function frame(offset: number, payload: Buffer, flags = 0, length = payload.length): Frame {
  return {
    header: {
      version: 1,
      kind: StreamKind.DeviceState,
      flags,
      migrationId: MIGRATION,
      streamId: 3,
      seq: seq++,
      offset,
      length,
      payloadLength: payload.length,
      checksum: 0,
    },
    payload,
  };
}

describe('DeviceStateSink', () => {
  let dir: string;
  let path: string;
  const open = (maxBytes = 1024 * 1024): Promise<DeviceStateSink> =>
    DeviceStateSink.open({ migrationId: MIGRATION, path, maxBytes });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-device-state-'));
    path = join(dir, 'device-state.bin');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('holds a raw frame at offset 0 only once it is synced, and writes it to its file', async () => {
    const sink = await open();
    const blob = randomBytes(3000);
    await sink.apply(frame(0, blob, FrameFlag.End));
    expect(sink.durable).toBeUndefined();
    expect(existsSync(path)).toBe(false);
    await sink.sync();
    expect(sink.durable).toEqual({ blob, sha256: sha256(blob) });
    expect(await readFile(path)).toEqual(blob);
    expect(existsSync(`${path}.tmp`)).toBe(false);
  });

  it('copies the payload: the message buffer may be reused after apply', async () => {
    const sink = await open();
    const payload = Buffer.from('device state');
    await sink.apply(frame(0, payload));
    payload.fill(0);
    await sink.sync();
    expect(sink.durable?.blob.toString()).toBe('device state');
  });

  it('joins consecutive frames, replaces the state on a new frame at 0, and is the same after a replay', async () => {
    const sink = await open();
    const blob = randomBytes(10_000);
    const frames = [
      frame(0, blob.subarray(0, 4000)),
      frame(4000, blob.subarray(4000, 8000)),
      frame(8000, blob.subarray(8000)),
    ];
    for (const f of frames) await sink.apply(f);
    await sink.sync();
    expect(sink.durable?.sha256).toBe(sha256(blob));
    // Frames applied again after a restart (they were past the watermark): the same blob.
    for (const f of frames.slice(1)) await sink.apply(f);
    await sink.sync();
    expect(sink.durable?.blob).toEqual(blob);
    const again = randomBytes(100);
    await sink.apply(frame(0, again));
    await sink.sync();
    expect(sink.durable?.blob).toEqual(again);
  });

  it('ignores an empty frame (End or Barrier alone)', async () => {
    const sink = await open();
    const blob = randomBytes(64);
    await sink.apply(frame(0, blob));
    await sink.apply(frame(0, Buffer.alloc(0), FrameFlag.End));
    await sink.sync();
    expect(sink.durable?.blob).toEqual(blob);
  });

  it('takes a zstd frame', async () => {
    const zstd = await Zstd.load();
    const blob = Buffer.alloc(50_000, 'abc');
    const sink = await open();
    await sink.apply(frame(0, zstd.compress(blob), FrameFlag.Zstd, blob.length));
    await sink.sync();
    expect(sink.durable?.sha256).toBe(sha256(blob));
  });

  it('refuses records, gaps, lengths that lie and states over the limit, holding nothing of them', async () => {
    const sink = await open(4096);
    const refused = async (f: Frame, code: ErrorCode): Promise<void> => {
      const err: unknown = await sink.apply(f).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DeviceStateFrameError);
      expect((err as DeviceStateFrameError).code).toBe(code);
      expect((err as DeviceStateFrameError).migrationId).toBe(MIGRATION);
    };
    await refused(frame(0, randomBytes(64), FrameFlag.Records), ErrorCode.FrameBadFlags);
    await refused(frame(10, randomBytes(64)), ErrorCode.FrameOutOfRange);
    await refused(frame(0, randomBytes(64), 0, 65), ErrorCode.RecordCorrupt);
    await refused(frame(0, randomBytes(5000)), ErrorCode.FrameOutOfRange);
    await refused(frame(0, randomBytes(64), FrameFlag.Zstd), ErrorCode.RecordCorrupt);
    await sink.sync();
    expect(sink.durable).toBeUndefined();
    expect(existsSync(path)).toBe(false);
  });

  it('reads its file back when opened again (a restart)', async () => {
    const blob = randomBytes(777);
    const first = await open();
    await first.apply(frame(0, blob));
    await first.sync();
    const second = await open();
    expect(second.durable).toEqual({ blob, sha256: sha256(blob) });
    // It continues from what it held: a frame appended at the end.
    const tail = randomBytes(23);
    await second.apply(frame(blob.length, tail));
    await second.sync();
    expect(second.durable?.blob).toEqual(Buffer.concat([blob, tail]));
  });
});
