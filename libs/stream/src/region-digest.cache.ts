import { open } from 'node:fs/promises';
import { BlockMap, geometryForSize } from '@wanmig/blockmap';
import { mapDataExtents } from './data.extents.js';
import { hashRegions, type DataRange } from './region.hasher.js';

/**
 * A refresh that reads at least this much maps the file's holes first (one `qemu-img map`, a few ms) so it skips
 * them; below it, reading costs less than starting a process.
 */
export const MAP_HOLES_FROM_BYTES = 64 * 1024 * 1024;

/**
 * Background passes rest at least this many times as long as the last pass took: they take at most a fifth of a core
 * from the guest and the copy, however much the guest writes.
 */
const BACKGROUND_REST_FACTOR = 4;

export interface RegionDigestCacheOptions {
  path: string;
  sizeBytes: number;
  regionBytes: number;
  /**
   * Where the file holds data, ascending (undefined: not known, read it all). Default: {@link mapDataExtents}. A hole
   * it names must read as zeros at the time of the call.
   */
  mapData?: (path: string, sizeBytes: number) => Promise<readonly DataRange[] | undefined>;
  /** Refreshes reading at least this many bytes map the holes first (default MAP_HOLES_FROM_BYTES). */
  mapHolesFromBytes?: number;
  /** Called before the file is read: a writer that still buffers writes (FileChunkTarget) puts them in the file. */
  beforeRead?: () => void;
}

/** What one refresh did. */
export interface DigestRefresh {
  /** Regions hashed again (they were touched, or never hashed). */
  regions: number;
  /** Bytes read from the file for them (holes are not read). */
  bytesRead: number;
  ms: number;
}

/**
 * The region digests of an image file that is being written, kept current incrementally: every region has its sha256
 * (the plain digest of its bytes, as digestRegions gives), and a "stale" mark that the owner sets with `touch` for
 * every write that reaches the file. A refresh re-reads only the stale regions; the others keep their digest. So
 * asking for all digests after a few writes costs O(regions written), not O(image).
 *
 * The marks are cleared when a region's hashing starts, before the file is read: a write that lands while or after
 * it is read marks the region again, and the next refresh hashes it again. For that to hold, `touch` must be called
 * for every write, once the write is in the file (or held where `beforeRead` puts it there), never before.
 *
 * What this trusts: that every write is touched. A write into a region after its digest was taken that nobody
 * touched (another process writing the file, a bit flip on the disk) is not seen: the region keeps its old digest.
 */
export class RegionDigestCache {
  readonly path: string;
  readonly sizeBytes: number;
  readonly regionBytes: number;
  private readonly digestOf: Array<string | undefined>;
  /** Regions written since their digest was taken, or never hashed: what the next refresh reads. */
  private readonly stale: BlockMap;
  private queue: Promise<unknown> = Promise.resolve();
  private lastPass = { endedAt: -Infinity, ms: 0 };
  private readonly mapData: (path: string, sizeBytes: number) => Promise<readonly DataRange[] | undefined>;

  constructor(private readonly o: RegionDigestCacheOptions) {
    this.path = o.path;
    this.sizeBytes = o.sizeBytes;
    this.regionBytes = o.regionBytes;
    this.stale = BlockMap.full(geometryForSize(o.sizeBytes, o.regionBytes));
    this.digestOf = new Array<string | undefined>(this.stale.blockCount).fill(undefined);
    this.mapData = o.mapData ?? mapDataRanges;
  }

  get regionCount(): number {
    return this.stale.blockCount;
  }

  /** Regions the next refresh will hash. */
  get staleRegions(): number {
    return this.stale.count;
  }

  /**
   * When a background refresh may start (a performance.now() time): after a rest proportional to the last pass, so
   * a guest that writes all the time does not have its regions hashed all the time. The final ask does not wait.
   */
  get backgroundDueAt(): number {
    return this.lastPass.endedAt + BACKGROUND_REST_FACTOR * this.lastPass.ms;
  }

  /** A write of [offset, offset + length) reached the file: its regions are hashed again at the next refresh. */
  touch(offset: number, length: number): void {
    const end = Math.min(offset + length, this.sizeBytes);
    if (offset < end) this.stale.markBytes(offset, end - offset);
  }

  /**
   * Hashes the stale regions again. One refresh runs at a time; each starts with the marks of every touch made
   * before it starts. On failure the regions it took stay stale.
   */
  refresh(): Promise<DigestRefresh> {
    const run = this.queue.then(() => this.refreshOnce());
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Every region's digest after a refresh: current for every write touched before the call. */
  async digests(): Promise<{ digests: string[]; refresh: DigestRefresh }> {
    const refresh = await this.refresh();
    const digests = this.digestOf.map((digest, region) => {
      // A region another refresh is hashing right now keeps its last digest until then; never hashed cannot be.
      if (digest === undefined) throw new Error(`region ${region} of ${this.path} was never hashed`);
      return digest;
    });
    return { digests, refresh };
  }

  private async refreshOnce(): Promise<DigestRefresh> {
    const started = performance.now();
    // Cleared before anything is read: a write from here on marks its region again.
    const taken = this.stale.drain();
    if (taken.isEmpty) return { regions: 0, bytesRead: 0, ms: 0 };
    try {
      this.o.beforeRead?.();
      const wanted = taken.count * this.regionBytes;
      const data =
        wanted >= (this.o.mapHolesFromBytes ?? MAP_HOLES_FROM_BYTES)
          ? await this.mapData(this.path, this.sizeBytes)
          : undefined;
      let bytesRead = 0;
      const fh = await open(this.path, 'r');
      try {
        for (const run of taken.extents()) {
          const offset = run.start * this.regionBytes;
          const end = Math.min(this.sizeBytes, (run.start + run.count) * this.regionBytes);
          const hashed = await hashRegions(
            fh,
            { offset, length: end - offset, regionBytes: this.regionBytes },
            { data },
          );
          hashed.digests.forEach((digest, i) => (this.digestOf[run.start + i] = digest));
          bytesRead += hashed.bytesRead;
        }
      } finally {
        await fh.close();
      }
      const ms = performance.now() - started;
      this.lastPass = { endedAt: performance.now(), ms };
      return { regions: taken.count, bytesRead, ms };
    } catch (err) {
      this.stale.unionInPlace(taken);
      throw err;
    }
  }
}

async function mapDataRanges(path: string, sizeBytes: number): Promise<DataRange[] | undefined> {
  // Block size 1: the data ranges as the file system reports them, not widened.
  return (await mapDataExtents(path, sizeBytes, 1))?.filter((extent) => extent.data);
}
