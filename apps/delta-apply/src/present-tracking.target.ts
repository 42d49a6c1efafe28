import { BlockMap } from '@wanmig/blockmap';
import type { SyncableTarget } from '@wanmig/stream';

/** What the tracker needs of the image underneath: a FileChunkTarget, or a buffer in tests. */
export interface ImageTarget extends SyncableTarget {
  zero?(offset: number, length: number): void | Promise<void>;
}

/** The present map's owner: `commit` makes a batch durable in the map and adds it to `durable`. */
export interface PresentMapCommitter {
  readonly durable: BlockMap;
  commit(batch: BlockMap): Promise<void>;
}

/**
 * Wraps the image target and records which blocks the destination has received. Every write and
 * zero marks its blocks in a pending map; a sync takes the pending map *before* flushing and
 * fsyncing the image, and only once that sync succeeds commits it to the present map. So the
 * durable map (the one that is reported and persisted) never names a block whose bytes are not on
 * disk, and taking the pending map costs nothing (BlockMap.drain swaps bitmaps, it copies nothing).
 * The stream receiver saves its watermark only after this sync returns, so every block below the
 * watermark is in the persisted present map too.
 *
 * A block counts as present when any part of it was written: the source sends whole blocks, and a
 * block split across two frames is completed by the next frame, which the stream resends if it
 * was not durable.
 */
export class PresentTrackingTarget implements SyncableTarget {
  private pending: BlockMap;

  constructor(
    private readonly image: ImageTarget,
    /** Where durable blocks go (PresentMapStore): it persists a batch, then adds it to `durable`. */
    private readonly present: PresentMapCommitter,
    /** Told of every write and zero once the image holds it (or buffers it until its next flush). */
    private readonly onWritten?: (offset: number, length: number) => void,
  ) {
    this.pending = new BlockMap(present.durable.geometry);
  }

  /** Blocks whose bytes are durable in the image. */
  get durable(): BlockMap {
    return this.present.durable;
  }

  get size(): number {
    return this.image.size;
  }

  /** Blocks written since the last successful sync. */
  get pendingBlocks(): number {
    return this.pending.count;
  }

  read(offset: number, length: number): Buffer | Promise<Buffer> {
    return this.image.read(offset, length);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    await this.image.write(offset, data);
    if (data.length > 0) this.marked(offset, data.length);
  }

  async zero(offset: number, length: number): Promise<void> {
    if (this.image.zero) await this.image.zero(offset, length);
    else await this.image.write(offset, Buffer.alloc(length));
    if (length > 0) this.marked(offset, length);
  }

  flushPending(): void {
    this.image.flushPending?.();
  }

  private marked(offset: number, length: number): void {
    this.pending.markBytes(offset, length);
    this.onWritten?.(offset, length);
  }

  async sync(): Promise<void> {
    const batch = this.pending.drain();
    try {
      await this.image.sync();
      if (!batch.isEmpty) await this.present.commit(batch);
    } catch (err) {
      // Not recorded as durable after all: keep the blocks pending so the next successful sync counts them.
      this.pending.unionInPlace(batch);
      throw err;
    }
  }
}
