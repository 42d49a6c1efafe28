import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@wanmig/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NoSpaceError } from './errors.js';
import { allocatedBytes, ensureRoom, nearestExisting, type StatFs } from './free-space.check.js';

const MiB = 1024 * 1024;
/** A file system with `free` bytes available, in 4 KiB blocks; records the path it was asked about. */
const fakeStatFs = (free: number, asked: string[] = []): StatFs => {
  return (path) => {
    asked.push(path);
    return Promise.resolve({ bavail: Math.floor(free / 4096), bsize: 4096 });
  };
};

describe('room check', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'room-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('passes when the free space holds the image, and asks about the nearest existing directory', async () => {
    const asked: string[] = [];
    const path = join(dir, 'not', 'yet', 'disk.img');
    await ensureRoom({ path, sizeBytes: 10 * MiB }, fakeStatFs(10 * MiB, asked));
    expect(asked).toEqual([dir]);
    expect(existsSync(join(dir, 'not'))).toBe(false);
  });

  it('fails with NO_SPACE, the numbers, and nothing created', async () => {
    const path = join(dir, 'm', 'disk.img');
    const err = await ensureRoom({ migrationId: 'm', path, sizeBytes: 10 * MiB }, fakeStatFs(4 * MiB)).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NoSpaceError);
    expect(err).toMatchObject({ code: ErrorCode.NoSpace, neededBytes: 10 * MiB, availableBytes: 4 * MiB, path });
    expect(existsSync(join(dir, 'm'))).toBe(false);
  });

  it('counts what the file already occupies as room it has', async () => {
    const path = join(dir, 'disk.img');
    await writeFile(path, Buffer.alloc(4 * MiB, 1));
    const occupied = await allocatedBytes(path);
    expect(occupied).toBeGreaterThanOrEqual(4 * MiB);
    await ensureRoom({ path, sizeBytes: 6 * MiB }, fakeStatFs(6 * MiB - occupied));
    await expect(ensureRoom({ path, sizeBytes: 6 * MiB }, fakeStatFs(6 * MiB - occupied - 4096))).rejects.toThrow(
      NoSpaceError,
    );
  });

  it('adds the room other unfinished images have been promised', async () => {
    const path = join(dir, 'disk.img');
    await ensureRoom({ path, sizeBytes: 4 * MiB, reservedBytes: 4 * MiB }, fakeStatFs(8 * MiB));
    await expect(
      ensureRoom({ path, sizeBytes: 4 * MiB, reservedBytes: 4 * MiB + 1 }, fakeStatFs(8 * MiB)),
    ).rejects.toMatchObject({ neededBytes: 8 * MiB + 1 });
  });

  it('finds the nearest existing ancestor', async () => {
    expect(await nearestExisting(join(dir, 'a', 'b', 'c'))).toBe(dir);
    expect(await nearestExisting(dir)).toBe(dir);
  });
});
