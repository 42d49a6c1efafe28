import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { BlockMap } from '@wanmig/blockmap';
import { SIM_PAGE_SIZE } from './sim.constants.js';

export interface GuestRamStats {
  /** Page-granular writes (a run of n pages counts n). */
  pageWrites: number;
  /** Bytes written to RAM, small field updates included. */
  bytesWritten: number;
}

/**
 * Guest RAM backed by a file, the role guest memory plays for a hypervisor: the file is the truth,
 * readable by other processes (the migration reads it directly). Pages are loaded into an
 * in-process cache on first access, so a guest resumed from a migrated file starts without reading
 * it all. Every write goes to the file first (synchronous pwrite) and is marked in the dirty log
 * after, so a page read after its bit was drained is either current or dirty again.
 */
export class GuestRam {
  readonly pageCount: number;
  readonly stats: GuestRamStats = { pageWrites: 0, bytesWritten: 0 };
  private readonly cache = new Map<number, Buffer>();
  private readonly maxCachedPages: number;
  /** Undefined while dirty logging is off. */
  private dirty: BlockMap | undefined;

  private constructor(
    private readonly fd: number,
    readonly ramBytes: number,
    cacheBytes: number,
  ) {
    this.pageCount = ramBytes / SIM_PAGE_SIZE;
    this.maxCachedPages = Math.max(1, Math.floor(cacheBytes / SIM_PAGE_SIZE));
  }

  /**
   * Opens (creating when missing) a RAM file of `ramBytes`; a shorter file is extended (sparse).
   * A longer one belongs to another guest and is refused.
   */
  static open(path: string, ramBytes: number, cacheBytes: number): GuestRam {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    try {
      const size = fstatSync(fd).size;
      if (size > ramBytes)
        throw new Error(`RAM file ${path} holds ${size} bytes, more than the ${ramBytes} of this guest`);
      if (size < ramBytes) ftruncateSync(fd, ramBytes);
      return new GuestRam(fd, ramBytes, cacheBytes);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Empties the file (sparse zeros) before a fresh boot fill. */
  clear(): void {
    ftruncateSync(this.fd, 0);
    ftruncateSync(this.fd, this.ramBytes);
    this.cache.clear();
  }

  /** Forget every cached page: the file may have been written by someone else (incoming RAM). */
  dropCache(): void {
    this.cache.clear();
  }

  get cachedPages(): number {
    return this.cache.size;
  }

  /** Page `n`, loaded from the file on first access. The buffer is the cache's: do not change it. */
  page(n: number): Buffer {
    let page = this.cache.get(n);
    if (page === undefined) {
      page = Buffer.alloc(SIM_PAGE_SIZE);
      this.readAt(page, n * SIM_PAGE_SIZE);
      this.remember(n, page);
    }
    return page;
  }

  /** Bytes within one page, through the cache. */
  bytes(offset: number, length: number): Buffer {
    const n = Math.floor(offset / SIM_PAGE_SIZE);
    const at = offset - n * SIM_PAGE_SIZE;
    if (at + length > SIM_PAGE_SIZE) throw new RangeError('bytes() reads within one page');
    return this.page(n).subarray(at, at + length);
  }

  /** Replaces page `n` with `data` (a page-sized buffer the RAM now owns). */
  writePage(n: number, data: Buffer): void {
    this.writeAt(data, n * SIM_PAGE_SIZE);
    this.remember(n, data);
    this.stats.pageWrites++;
    this.stats.bytesWritten += SIM_PAGE_SIZE;
    this.dirty?.set(n);
  }

  /** Writes consecutive whole pages from `first` in one pwrite; `data` stays the caller's. */
  writePages(first: number, data: Buffer): void {
    const count = data.length / SIM_PAGE_SIZE;
    this.writeAt(data, first * SIM_PAGE_SIZE);
    for (let n = first; n < first + count; n++) this.cache.delete(n);
    this.stats.pageWrites += count;
    this.stats.bytesWritten += data.length;
    this.dirty?.setRange(first, count);
  }

  /** Writes a few bytes (a field, a slot) in place; the page stays cached if it was. */
  writeBytes(offset: number, data: Buffer): void {
    this.writeAt(data, offset);
    const first = Math.floor(offset / SIM_PAGE_SIZE);
    const last = Math.floor((offset + data.length - 1) / SIM_PAGE_SIZE);
    for (let n = first; n <= last; n++) {
      const cached = this.cache.get(n);
      if (cached === undefined) continue;
      const pageStart = n * SIM_PAGE_SIZE;
      const from = Math.max(offset, pageStart);
      const to = Math.min(offset + data.length, pageStart + SIM_PAGE_SIZE);
      data.copy(cached, from - pageStart, from - offset, to - offset);
    }
    this.stats.pageWrites += last - first + 1;
    this.stats.bytesWritten += data.length;
    this.dirty?.setRange(first, last - first + 1);
  }

  get dirtyLogging(): boolean {
    return this.dirty !== undefined;
  }

  /**
   * Pages written since the previous call. The first call starts dirty logging and returns an empty
   * map (nothing was logged before it), as enabling KVM's dirty log does.
   */
  drainDirty(): BlockMap {
    if (this.dirty === undefined) {
      this.dirty = BlockMap.forSize(this.ramBytes, SIM_PAGE_SIZE);
      return BlockMap.forSize(this.ramBytes, SIM_PAGE_SIZE);
    }
    return this.dirty.drain();
  }

  stopDirtyLog(): void {
    this.dirty = undefined;
  }

  close(): void {
    this.cache.clear();
    closeSync(this.fd);
  }

  private remember(n: number, page: Buffer): void {
    if (!this.cache.has(n) && this.cache.size >= this.maxCachedPages) {
      const oldest = this.cache.keys().next().value as number;
      this.cache.delete(oldest);
    }
    this.cache.set(n, page);
  }

  private readAt(out: Buffer, position: number): void {
    let done = 0;
    while (done < out.length) {
      const n = readSync(this.fd, out, done, out.length - done, position + done);
      if (n === 0) {
        out.fill(0, done);
        return;
      }
      done += n;
    }
  }

  private writeAt(data: Buffer, position: number): void {
    let done = 0;
    while (done < data.length) done += writeSync(this.fd, data, done, data.length - done, position + done);
  }
}
