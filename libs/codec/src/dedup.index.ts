import { PAGE_SIZE } from '@wanmig/protocol';
import { CodecUsageError } from './errors.js';

export interface DedupIndexOptions {
  /** Most pages remembered; the least recently used is forgotten first. Default 262 144 (1 GiB of pages). */
  maxEntries?: number;
  pageSize?: number;
}

export const DEFAULT_DEDUP_ENTRIES = 262_144;

/**
 * Which page-aligned offset the receiver holds a given content at (content key -> offset).
 *
 * The encoder records every full page it sends and invalidates every page a later record
 * overwrites, so a lookup only ever returns an offset whose content the receiver still has once
 * the records before it are applied. A reverse map (page -> key) makes invalidation O(pages
 * written). Bounded: past `maxEntries` the least recently used key is dropped (Map order is
 * insertion order, so a hit re-inserts its key). About 150 bytes of heap per entry.
 */
export class DedupIndex {
  readonly maxEntries: number;
  readonly pageSize: number;
  private readonly byKey = new Map<string, number>();
  private readonly byPage = new Map<number, string>();

  constructor(options: DedupIndexOptions = {}) {
    this.maxEntries = options.maxEntries ?? DEFAULT_DEDUP_ENTRIES;
    this.pageSize = options.pageSize ?? PAGE_SIZE;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new CodecUsageError(`dedup maxEntries must be a positive integer, got ${this.maxEntries}`);
    }
  }

  get size(): number {
    return this.byKey.size;
  }

  /** The offset the receiver holds this content at, if known. */
  lookup(key: string): number | undefined {
    const page = this.byKey.get(key);
    if (page === undefined) return undefined;
    this.byKey.delete(key);
    this.byKey.set(key, page);
    return page * this.pageSize;
  }

  /**
   * The receiver now holds content `key` at `offset` (page-aligned, one page). Call `invalidate`
   * for the page first. If the key is already known at another offset, that older location is
   * kept: it is still valid, and keeping it costs nothing.
   */
  record(key: string, offset: number): void {
    if (offset % this.pageSize !== 0)
      throw new CodecUsageError(`dedup offset ${offset} is not page-aligned`, { offset });
    if (this.byKey.has(key)) return;
    const page = offset / this.pageSize;
    this.dropPage(page);
    this.byKey.set(key, page);
    this.byPage.set(page, key);
    if (this.byKey.size > this.maxEntries) this.evictOldest();
  }

  /** The receiver's bytes in [offset, offset + length) change: forget every page they touch. */
  invalidate(offset: number, length: number): void {
    if (this.byPage.size === 0 || length <= 0) return;
    const first = Math.floor(offset / this.pageSize);
    const end = Math.ceil((offset + length) / this.pageSize);
    if (end - first > this.byPage.size) {
      // A huge range (a zero extent over gigabytes): walk the entries instead of the pages.
      for (const page of [...this.byPage.keys()]) if (page >= first && page < end) this.dropPage(page);
      return;
    }
    for (let page = first; page < end; page++) this.dropPage(page);
  }

  clear(): void {
    this.byKey.clear();
    this.byPage.clear();
  }

  private dropPage(page: number): void {
    const key = this.byPage.get(page);
    if (key === undefined) return;
    this.byPage.delete(page);
    this.byKey.delete(key);
  }

  private evictOldest(): void {
    const oldest = this.byKey.entries().next();
    if (oldest.done) return;
    const [key, page] = oldest.value;
    this.byKey.delete(key);
    this.byPage.delete(page);
  }
}
