import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockMap, geometryForSize } from '@wanmig/blockmap';
import { ActivityLog } from './activity.log.js';

const KIB = 1024;
const MIB = 1024 * KIB;
// 16 MiB of 64 KiB blocks, extents of 1 MiB (16 blocks).
const geometry = geometryForSize(16 * MIB, 64 * KIB);
const create = (path: string) => ActivityLog.create(path, geometry, MIB);
const resume = (path: string) => ActivityLog.resume(path, geometry, MIB);

describe('ActivityLog', () => {
  let dir: string;
  let path: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-al-'));
    path = join(dir, 'disk.al');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const blocksOf = (map: BlockMap) => map.toArray();

  it('tracks nothing until a migration starts', async () => {
    const log = create(path);
    const release = await log.ensure(0, 4096);
    release();
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(log.unsureBlocks().count).toBe(0);
  });

  it('puts the extents of each write on record before it may go on, and a restart reads them back', async () => {
    const log = create(path);
    await log.start();
    // One write inside extent 2, one across extents 5 and 6.
    (await log.ensure(2 * MIB + 100, 4096))();
    (await log.ensure(6 * MIB - 4096, 8192))();
    await log.close();
    const { log: again, problems } = await resume(path);
    expect(problems).toEqual([]);
    const blocks = blocksOf(again.unsureBlocks());
    expect(blocks).toEqual([...range(32, 16), ...range(80, 32)]);
    expect(again.isTracking).toBe(true);
  });

  it('writes into an extent already on record need no sync', async () => {
    const log = create(path);
    await log.start();
    (await log.ensure(0, 4096))();
    const size = (await stat(path)).size;
    const second = log.ensure(8192, 4096);
    expect(typeof second).toBe('function');
    expect((await stat(path)).size).toBe(size);
  });

  it('a checkpoint keeps only the extents of dirty blocks and of writes in flight', async () => {
    const log = create(path);
    await log.start();
    for (const mib of [0, 3, 7, 9]) (await log.ensure(mib * MIB, 4096))();
    const inFlight = await log.ensure(9 * MIB + 5000, 100); // not released: its write is still on its way
    const dirty = new BlockMap(geometry).setRange(3 * 16 + 2, 1); // one block of extent 3
    await log.checkpoint(dirty);
    expect(new Set(blocksOf(log.unsureBlocks()).map((b) => Math.floor(b / 16)))).toEqual(new Set([3, 9]));
    inFlight();
    await log.close();
    const { log: again } = await resume(path);
    expect(new Set(blocksOf(again.unsureBlocks()).map((b) => Math.floor(b / 16)))).toEqual(new Set([3, 9]));
  });

  it('a write into an extent that a checkpoint drops waits for the new file and is in it', async () => {
    const log = create(path);
    await log.start();
    (await log.ensure(4 * MIB, 4096))();
    const checkpoint = log.checkpoint(new BlockMap(geometry));
    // Asked while the new file (without extent 4) is being written: must end up in the new file.
    const write = log.ensure(4 * MIB + 8192, 4096);
    expect(typeof write).not.toBe('function');
    await checkpoint;
    (await write)();
    await log.close();
    const { log: again } = await resume(path);
    expect(new Set(blocksOf(again.unsureBlocks()).map((b) => Math.floor(b / 16)))).toEqual(new Set([4]));
  });

  it('ignores a torn last record, and takes a missing or foreign log as "everything is unsure"', async () => {
    const log = create(path);
    await log.start();
    (await log.ensure(MIB, 1))();
    await log.close();
    await appendFile(path, Buffer.from([0, 0, 0, 7, 1, 2]));
    const torn = await resume(path);
    expect(torn.problems).toEqual([]);
    expect(blocksOf(torn.log.unsureBlocks())).toEqual(range(16, 16));
    await torn.log.close();

    await appendFile(path, Buffer.from([0, 0, 0, 7, 0, 0, 0, 0]));
    const bad = await resume(path);
    expect(bad.problems[0]).toMatch(/unreadable record/);
    expect(blocksOf(bad.log.unsureBlocks())).toEqual(range(16, 16));
    await bad.log.close();

    await writeFile(path, 'not a log');
    const foreign = await resume(path);
    expect(foreign.problems[0]).toMatch(/not an activity log/);
    expect(foreign.log.unsureBlocks().count).toBe(geometry.blockCount);
    await foreign.log.close();

    await rm(path);
    const missing = await resume(path);
    expect(missing.problems).toHaveLength(1);
    expect(missing.log.unsureBlocks().count).toBe(geometry.blockCount);
    // Rewritten as read: the next restart reads the same.
    await missing.log.close();
    const after = await resume(path);
    expect(after.problems).toEqual([]);
    expect(after.log.unsureBlocks().count).toBe(geometry.blockCount);
  });

  it('stop forgets everything and removes the file', async () => {
    const log = create(path);
    await log.start();
    (await log.ensure(0, 1))();
    await log.stop();
    await expect(readFile(path)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(log.isTracking).toBe(false);
  });
});

function range(start: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + i);
}
