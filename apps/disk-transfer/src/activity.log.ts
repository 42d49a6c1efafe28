import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { BlockMap, type BlockGeometry } from '@wanmig/blockmap';
import { writeFileAtomic } from '@wanmig/service';
import { ActivityLogError } from './errors.js';

/**
 * Granularity of the log: one record covers this many bytes of the disk (whole blocks), as DRBD's AL extents do (its
 * are 4 MiB). Smaller means less to send again after a crash, more syncs for scattered writes: a guest writing 2 MB/s
 * in small random writes leaves some 3 MiB unsure per 250 ms between checkpoints at this size.
 */
export const AL_EXTENT_BYTES = 256 * 1024;
const MAGIC = 0x574d414c; // 'WMAL'
const VERSION = 1;
const HEADER_BYTES = 16;
const RECORD_BYTES = 8;

/** Unregisters a write once it is applied and marked in the dirty map. */
export type WriteRelease = () => void;
const NOTHING_TO_RELEASE: WriteRelease = () => undefined;

export interface OpenedActivityLog {
  log: ActivityLog;
  /** What could not be read (a torn tail, a foreign file): the log then says "everything is unsure". */
  problems: string[];
}

/**
 * The activity log of a disk being migrated (DRBD's activity log, simplified). disk-transfer's dirty map lives in
 * memory: killed, it would forget which blocks the guest wrote since they were sent, and a resumed migration would
 * miss those writes. So, while a migration runs, every write first puts the extents it touches on record (appended
 * and fdatasynced, many writes sharing one sync), and only then reaches the image: after a crash, the blocks of the
 * recorded extents are the ones that may differ from what the destination holds, and they are sent again.
 *
 * The record only grows between checkpoints. A checkpoint, taken when everything sent so far is acknowledged as
 * durable at the destination, rewrites it (atomically) as the extents of the dirty map plus those of the writes in
 * flight: everything else is at the destination as it is here. While the new file is being written, only extents
 * that both the old and the new file hold count as recorded, so no write ever relies on a record that a rename is
 * about to drop.
 */
export class ActivityLog {
  private tracking = false;
  /** Extents certainly on record in the file that counts now. */
  private recorded = new Set<number>();
  /** Extents of writes between `ensure` and their release (applied and marked dirty), with a count each. */
  private readonly inFlight = new Map<number, number>();
  private queue: Promise<void> = Promise.resolve();
  private batch?: { extents: Set<number>; done: Promise<void> };
  private fh?: FileHandle;
  readonly extentBytes: number;
  private readonly blocksPerExtent: number;
  private readonly extentCount: number;

  private constructor(
    readonly path: string,
    readonly geometry: BlockGeometry,
    extentBytes: number,
  ) {
    this.blocksPerExtent = Math.max(1, Math.round(extentBytes / geometry.blockSize));
    this.extentBytes = this.blocksPerExtent * geometry.blockSize;
    this.extentCount = Math.ceil(geometry.blockCount / this.blocksPerExtent);
  }

  /** A log that tracks nothing yet; `start` begins a migration, `resume` picks up the one on file. */
  static create(path: string, geometry: BlockGeometry, extentBytes = AL_EXTENT_BYTES): ActivityLog {
    return new ActivityLog(path, geometry, extentBytes);
  }

  /**
   * Reads the log a killed process left and tracks on from it. A log that is missing or unreadable cannot say which
   * writes are unsure: then every block is (a problem says why), and the resumed migration sends everything again.
   */
  static async resume(
    path: string,
    geometry: BlockGeometry,
    extentBytes = AL_EXTENT_BYTES,
  ): Promise<OpenedActivityLog> {
    const log = new ActivityLog(path, geometry, extentBytes);
    const problems: string[] = [];
    let data: Buffer | undefined;
    try {
      data = await readFile(path);
    } catch (err) {
      problems.push(`${path}: ${(err as Error).message}`);
    }
    const read = data ? log.decode(data) : undefined;
    if (read?.problem) problems.push(`${path}: ${read.problem}`);
    if (!read || read.whole === false) {
      for (let e = 0; e < log.extentCount; e++) log.recorded.add(e);
    } else {
      for (const e of read.extents) log.recorded.add(e);
    }
    // What was read is rewritten as it is (plus everything, when unreadable), so appends continue a sound file.
    await log.rewrite(new Set(log.recorded));
    log.tracking = true;
    return { log, problems };
  }

  get isTracking(): boolean {
    return this.tracking;
  }

  /** The blocks of every recorded extent: those a migration resumed after a crash must send again. */
  unsureBlocks(): BlockMap {
    const map = new BlockMap(this.geometry);
    for (const e of this.recorded) map.setRange(e * this.blocksPerExtent, this.blocksInExtent(e));
    return map;
  }

  /** A migration starts: nothing is unsure yet (the destination holds nothing it could hold stale). */
  async start(): Promise<void> {
    this.recorded = new Set();
    this.batch = undefined;
    await this.enqueue(() => this.rewrite(new Set()));
    this.tracking = true;
  }

  /**
   * Called for every write before it touches the image: resolves once its extents are on record (at once when they
   * already are, or when no migration is tracked). The returned release is called once the write is applied and
   * marked in the dirty map.
   */
  ensure(offset: number, length: number): Promise<WriteRelease> | WriteRelease {
    if (!this.tracking || length <= 0) return NOTHING_TO_RELEASE;
    const first = Math.floor(offset / this.extentBytes);
    const last = Math.min(this.extentCount - 1, Math.floor((offset + length - 1) / this.extentBytes));
    const missing: number[] = [];
    for (let e = first; e <= last; e++) {
      // Registered at once: a checkpoint computed from now on keeps these extents.
      this.inFlight.set(e, (this.inFlight.get(e) ?? 0) + 1);
      if (!this.recorded.has(e)) missing.push(e);
    }
    const release = (): void => {
      for (let e = first; e <= last; e++) {
        const n = (this.inFlight.get(e) ?? 1) - 1;
        if (n <= 0) this.inFlight.delete(e);
        else this.inFlight.set(e, n);
      }
    };
    if (missing.length === 0) return release;
    return this.append(missing).then(
      () => release,
      (err: unknown) => {
        release();
        throw err;
      },
    );
  }

  /**
   * Everything sent so far is durable at the destination: the record shrinks to the extents of `dirty` (written since
   * they were last sent) and of the writes in flight.
   */
  checkpoint(dirty: BlockMap): Promise<void> {
    if (!this.tracking) return Promise.resolve();
    const next = new Set<number>(this.inFlight.keys());
    for (const extent of dirty.extents()) {
      const first = Math.floor(extent.start / this.blocksPerExtent);
      const last = Math.floor((extent.start + extent.count - 1) / this.blocksPerExtent);
      for (let e = first; e <= last; e++) next.add(e);
    }
    // Until the new file replaces the old one, only what both hold is certainly on record; and extents asked for from
    // now on go into the new file (a batch still open would append them to the old one).
    this.recorded = new Set([...this.recorded].filter((e) => next.has(e)));
    this.batch = undefined;
    return this.enqueue(async () => {
      await this.rewrite(next);
      for (const e of next) this.recorded.add(e);
    });
  }

  /** The migration ended (done, failed or aborted): nothing is tracked any more and the file goes. */
  async stop(): Promise<void> {
    this.tracking = false;
    this.recorded = new Set();
    await this.enqueue(async () => {
      await this.fh?.close();
      this.fh = undefined;
      await rm(this.path, { force: true });
    });
  }

  /** Closes the file, keeping it (a process that stops with a migration under way resumes it at its next start). */
  async close(): Promise<void> {
    this.tracking = false;
    await this.enqueue(async () => {
      await this.fh?.close();
      this.fh = undefined;
    });
  }

  /** Group commit: extents asked for while a sync is under way go together in the next one. */
  private append(extents: number[]): Promise<void> {
    let batch = this.batch;
    if (!batch) {
      const b: { extents: Set<number>; done: Promise<void> } = { extents: new Set(), done: Promise.resolve() };
      b.done = this.enqueue(async () => {
        if (this.batch === b) this.batch = undefined;
        const fresh = [...b.extents].filter((e) => !this.recorded.has(e));
        if (fresh.length > 0) {
          const records = Buffer.alloc(fresh.length * RECORD_BYTES);
          fresh.forEach((e, i) => encodeRecord(records, i * RECORD_BYTES, e));
          const fh = await this.handle();
          await fh.write(records);
          await fh.datasync();
        }
        for (const e of b.extents) this.recorded.add(e);
      });
      this.batch = batch = b;
    }
    for (const e of extents) batch.extents.add(e);
    return batch.done;
  }

  private async rewrite(extents: Set<number>): Promise<void> {
    const data = Buffer.alloc(HEADER_BYTES + extents.size * RECORD_BYTES);
    data.writeUInt32BE(MAGIC, 0);
    data.writeUInt8(VERSION, 4);
    data.writeUInt32BE(this.extentBytes, 8);
    data.writeUInt32BE(this.extentCount, 12);
    [...extents].forEach((e, i) => encodeRecord(data, HEADER_BYTES + i * RECORD_BYTES, e));
    await this.fh?.close();
    this.fh = undefined;
    await writeFileAtomic(this.path, data);
  }

  private async handle(): Promise<FileHandle> {
    this.fh ??= await open(this.path, 'a');
    return this.fh;
  }

  private enqueue(work: () => Promise<void>): Promise<void> {
    const run = this.queue.then(work);
    this.queue = run.catch(() => undefined);
    return run.catch((cause: unknown) => {
      throw new ActivityLogError(this.path, cause);
    });
  }

  private decode(data: Buffer): { extents: number[]; whole: boolean; problem?: string } {
    if (data.length < HEADER_BYTES || data.readUInt32BE(0) !== MAGIC || data.readUInt8(4) !== VERSION) {
      return { extents: [], whole: false, problem: 'not an activity log' };
    }
    if (data.readUInt32BE(8) !== this.extentBytes || data.readUInt32BE(12) !== this.extentCount) {
      return { extents: [], whole: false, problem: 'written for another geometry' };
    }
    const extents: number[] = [];
    for (let at = HEADER_BYTES; at + RECORD_BYTES <= data.length; at += RECORD_BYTES) {
      const extent = data.readUInt32BE(at);
      // Only a torn last append can fail its check, and its write never reached the image (it waits for the sync).
      if (data.readUInt32BE(at + 4) !== recordCheck(extent) || extent >= this.extentCount) {
        return { extents, whole: true, problem: `unreadable record at byte ${at}, ignored with what follows` };
      }
      extents.push(extent);
    }
    return { extents, whole: true };
  }

  private blocksInExtent(extent: number): number {
    return Math.min(this.blocksPerExtent, this.geometry.blockCount - extent * this.blocksPerExtent);
  }
}

function encodeRecord(buf: Buffer, at: number, extent: number): void {
  buf.writeUInt32BE(extent, at);
  buf.writeUInt32BE(recordCheck(extent), at + 4);
}

function recordCheck(extent: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(extent);
  return crc32(b) >>> 0;
}
