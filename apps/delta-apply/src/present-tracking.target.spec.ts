import { BlockMap, geometryForSize } from '@wanmig/blockmap';
import { BufferTarget } from '@wanmig/codec';
import { describe, expect, it } from 'vitest';
import { PresentTrackingTarget, type ImageTarget, type PresentMapCommitter } from './present-tracking.target.js';

const BLOCK = 4096;
const SIZE = 16 * BLOCK + 10;

class FakeImage extends BufferTarget implements ImageTarget {
  syncs = 0;
  failNextSync = false;
  /** Resolves the sync under way, so tests can act while it is pending. */
  release?: () => void;
  hold = false;

  async sync(): Promise<void> {
    if (this.hold) await new Promise<void>((resolve) => (this.release = resolve));
    if (this.failNextSync) {
      this.failNextSync = false;
      throw new Error('EIO');
    }
    this.syncs++;
  }
}

class FakeCommitter implements PresentMapCommitter {
  readonly durable = new BlockMap(geometryForSize(SIZE, BLOCK));
  commits: number[][] = [];
  commit(batch: BlockMap): Promise<void> {
    this.commits.push(batch.toArray());
    this.durable.unionInPlace(batch);
    return Promise.resolve();
  }
}

const setup = () => {
  const image = new FakeImage(Buffer.alloc(SIZE));
  const present = new FakeCommitter();
  return { image, present, target: new PresentTrackingTarget(image, present) };
};

describe('PresentTrackingTarget', () => {
  it('marks written and zeroed blocks, partial ones included, and reports them only after a sync', async () => {
    const { image, present, target } = setup();
    await target.write(BLOCK - 1, Buffer.from([1, 2])); // touches blocks 0 and 1
    await target.zero(10 * BLOCK, 2 * BLOCK);
    await target.write(16 * BLOCK, Buffer.alloc(10, 7)); // the short last block
    expect(present.durable.count).toBe(0);
    expect(target.pendingBlocks).toBe(5);
    await target.sync();
    expect(image.syncs).toBe(1);
    expect(present.durable.toArray()).toEqual([0, 1, 10, 11, 16]);
    expect(image.buffer[BLOCK]).toBe(2);
    await target.sync(); // nothing new: no empty commit
    expect(present.commits).toHaveLength(1);
  });

  it('counts a write made during a sync in the next sync, not this one', async () => {
    const { image, present, target } = setup();
    await target.write(0, Buffer.alloc(BLOCK, 1));
    image.hold = true;
    const syncing = target.sync();
    await new Promise((resolve) => setImmediate(resolve));
    await target.write(5 * BLOCK, Buffer.alloc(BLOCK, 1));
    image.release?.();
    await syncing;
    expect(present.durable.toArray()).toEqual([0]);
    image.hold = false;
    await target.sync();
    expect(present.durable.toArray()).toEqual([0, 5]);
  });

  it('tells its listener of every write and zero once the image holds it (the digests follow the frames)', async () => {
    const image = new FakeImage(Buffer.alloc(SIZE));
    const told: Array<[number, number, number]> = [];
    const target = new PresentTrackingTarget(image, new FakeCommitter(), (offset, length) =>
      told.push([offset, length, image.buffer[offset]]),
    );
    await target.write(BLOCK + 3, Buffer.from([9, 9]));
    await target.zero(2 * BLOCK, BLOCK);
    await target.write(0, Buffer.alloc(0));
    expect(told).toEqual([
      [BLOCK + 3, 2, 9],
      [2 * BLOCK, BLOCK, 0],
    ]);
  });

  it('keeps blocks pending when the sync fails', async () => {
    const { image, present, target } = setup();
    await target.write(3 * BLOCK, Buffer.alloc(1));
    image.failNextSync = true;
    await expect(target.sync()).rejects.toThrow('EIO');
    expect(present.durable.count).toBe(0);
    expect(target.pendingBlocks).toBe(1);
    await target.sync();
    expect(present.durable.toArray()).toEqual([3]);
  });
});
