import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockMap, geometryForSize } from '@wanmig/blockmap';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileAtomic } from './atomic-file.writer.js';
import { PRESENT_MAP_FILE, PresentMapStore } from './present-map.store.js';

const geometry = geometryForSize(64 * 4096 + 100, 4096);
const batch = (...ranges: Array<[number, number]>): BlockMap => {
  const map = new BlockMap(geometry);
  for (const [start, count] of ranges) map.setRange(start, count);
  return map;
};
const journals = async (dir: string): Promise<string[]> =>
  (await readdir(dir)).filter((name) => name.startsWith('present.journal.')).sort();

describe('PresentMapStore', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'present-map-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('starts empty and round-trips through a snapshot on close', async () => {
    const { store, problems } = await PresentMapStore.open(dir, geometry, { intervalMs: 1000 });
    expect(problems).toEqual([]);
    expect(store.durable.count).toBe(0);
    await store.commit(batch([0, 3], [64, 1]));
    expect(store.durable.toArray()).toEqual([0, 1, 2, 64]);
    await store.close();
    expect(await journals(dir)).toEqual([]);
    const reopened = await PresentMapStore.open(dir, geometry, { intervalMs: 1000 });
    expect(reopened.store.durable.toArray()).toEqual([0, 1, 2, 64]);
    await reopened.store.close();
  });

  it('recovers every committed block after a crash, before any snapshot was written', async () => {
    const { store } = await PresentMapStore.open(dir, geometry, { intervalMs: 60_000 });
    await store.commit(batch([0, 1])); // first commit: snapshot due at once
    await store.flush();
    await store.commit(batch([5, 2]));
    await store.commit(batch([40, 10]));
    // kill -9 now: no close(); the journal alone has the last two commits.
    const recovered = await PresentMapStore.open(dir, geometry, { intervalMs: 60_000 });
    expect(recovered.store.durable.toArray()).toEqual([0, 5, 6, ...Array.from({ length: 10 }, (_, i) => 40 + i)]);
    await recovered.store.close();
    await store.close().catch(() => undefined);
  });

  it('writes the snapshot at most once per interval and deletes only the journals it covers', async () => {
    const writes: number[] = [];
    let allTwenty!: () => void;
    const lastSnapshotStarted = new Promise<void>((resolve) => (allTwenty = resolve));
    const { store } = await PresentMapStore.open(dir, geometry, {
      intervalMs: 300,
      writeSnapshot: async (path, data) => {
        const count = BlockMap.deserialize(data).count;
        writes.push(count);
        if (count === 20) allTwenty();
        await writeFileAtomic(path, data);
      },
    });
    const started = performance.now();
    for (let block = 0; block < 20; block++) await store.commit(batch([block, 1]));
    const elapsed = performance.now() - started;
    // The first commit snapshots at once; after that, at most one snapshot per interval.
    expect(writes.length).toBeLessThanOrEqual(1 + Math.ceil(elapsed / 300));
    expect(writes.length).toBeLessThan(20);
    // The interval's timer, not a flush, writes the snapshot of all 20 (however late a loaded machine runs it);
    // flush() then only waits for that write and the journal deletion behind it: nothing is left to snapshot.
    await lastSnapshotStarted;
    const snapshots = writes.length;
    await store.flush();
    expect(writes).toHaveLength(snapshots);
    expect(writes.at(-1)).toBe(20);
    expect(await journals(dir)).toHaveLength(1); // only the one commits go to now
    const onDisk = BlockMap.deserialize(await readFile(join(dir, PRESENT_MAP_FILE)), geometry);
    expect(onDisk.count).toBe(20);
    await store.close();
  });

  it('keeps the journals when a snapshot cannot be written, and never loses a block', async () => {
    let fail = true;
    const errors: unknown[] = [];
    const { store } = await PresentMapStore.open(dir, geometry, {
      intervalMs: 0,
      writeSnapshot: (path, data) => (fail ? Promise.reject(new Error('EIO')) : writeFileAtomic(path, data)),
      onError: (err) => errors.push(err),
    });
    await store.commit(batch([1, 1]));
    await store.flush();
    await store.commit(batch([2, 1]));
    await store.flush();
    expect(errors.length).toBeGreaterThan(0);
    expect((await journals(dir)).length).toBeGreaterThan(1);
    const recovered = await PresentMapStore.open(dir, geometry, { intervalMs: 0 });
    expect(recovered.store.durable.toArray()).toEqual([1, 2]);
    fail = false;
    await store.close();
    await recovered.store.close();
  });

  it('ignores a corrupt snapshot and a torn journal tail, reporting both (the map only shrinks)', async () => {
    await writeFile(join(dir, PRESENT_MAP_FILE), Buffer.from('not a block map'));
    const { store } = await PresentMapStore.open(dir, geometry, { intervalMs: 60_000 });
    await store.commit(batch([3, 2]));
    const [journal] = await journals(dir);
    await writeFile(join(dir, journal), Buffer.from([1, 2, 3, 4, 5]), { flag: 'a' });
    const recovered = await PresentMapStore.open(dir, geometry, { intervalMs: 60_000 });
    expect(recovered.store.durable.toArray()).toEqual([3, 4]);
    expect(recovered.problems).toEqual([expect.stringMatching(/present\.map/), expect.stringMatching(/torn record/)]);
    await recovered.store.close();
    await store.close();
  });

  it('refuses a snapshot of another geometry', async () => {
    await writeFile(join(dir, PRESENT_MAP_FILE), BlockMap.full(geometryForSize(4096 * 8, 4096)).serialize());
    const { store, problems } = await PresentMapStore.open(dir, geometry, { intervalMs: 0 });
    expect(store.durable.count).toBe(0);
    expect(problems).toHaveLength(1);
    await store.close();
  });

  it('refuses commits once closed', async () => {
    const { store } = await PresentMapStore.open(dir, geometry, { intervalMs: 0 });
    await store.close();
    await expect(store.commit(batch([0, 1]))).rejects.toThrow(/closed/);
  });
});
