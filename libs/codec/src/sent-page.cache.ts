import { PAGE_SIZE } from '@wanmig/protocol';
import { CodecUsageError } from './errors.js';

export const DEFAULT_XBZRLE_CACHE_BYTES = 64 * 1024 * 1024;

/** Pages per slab: slabs are allocated as the cache fills, so a small migration never pays the full budget. */
const SLAB_PAGES = 256;
const UNKNOWN_CRC = -1;

export interface CachedPage {
  /** The page as last sent; a view into the cache, 4-byte aligned, valid until the next cache call. */
  bytes: Uint8Array;
  /** CRC-32 of `bytes`, or undefined when not computed yet. */
  crc: number | undefined;
}

/**
 * The last version of each page sent, for XBZRLE deltas: an LRU keyed by page number with a byte
 * budget (64 MiB by default, like QEMU's xbzrle cache). Pages live in preallocated slabs reused on
 * eviction, so steady state allocates nothing, and every page view is aligned for Uint32Array
 * comparison.
 */
export class SentPageCache {
  readonly capacity: number;
  readonly pageSize: number;
  private readonly slots = new Map<number, number>();
  private readonly slabs: Uint8Array[] = [];
  private readonly crcs: Float64Array;
  private readonly free: number[] = [];
  private used = 0;

  constructor(budgetBytes = DEFAULT_XBZRLE_CACHE_BYTES, pageSize = PAGE_SIZE) {
    if (!Number.isInteger(pageSize) || pageSize <= 0 || pageSize % 8 !== 0) {
      throw new CodecUsageError(`page size must be a positive multiple of 8, got ${pageSize}`);
    }
    this.pageSize = pageSize;
    this.capacity = Math.floor(budgetBytes / pageSize);
    if (this.capacity < 1) throw new CodecUsageError(`xbzrle cache budget ${budgetBytes} holds no page`);
    this.crcs = new Float64Array(this.capacity);
  }

  get size(): number {
    return this.slots.size;
  }

  /** The page's last sent version, marked most recently used. */
  get(page: number): CachedPage | undefined {
    const slot = this.slots.get(page);
    if (slot === undefined) return undefined;
    this.slots.delete(page);
    this.slots.set(page, slot);
    const crc = this.crcs[slot];
    return { bytes: this.view(slot), crc: crc === UNKNOWN_CRC ? undefined : crc };
  }

  /** Stores a copy of `data` (one page) as the page's last sent version. */
  put(page: number, data: Uint8Array, crc?: number): void {
    let slot = this.slots.get(page);
    if (slot === undefined) slot = this.allocate();
    else this.slots.delete(page);
    this.slots.set(page, slot);
    this.view(slot).set(data);
    this.crcs[slot] = crc ?? UNKNOWN_CRC;
  }

  delete(page: number): void {
    const slot = this.slots.get(page);
    if (slot === undefined) return;
    this.slots.delete(page);
    this.free.push(slot);
  }

  /** Forgets every page in [first, end). */
  deleteRange(first: number, end: number): void {
    if (this.slots.size === 0) return;
    if (end - first > this.slots.size) {
      for (const page of [...this.slots.keys()]) if (page >= first && page < end) this.delete(page);
      return;
    }
    for (let page = first; page < end; page++) this.delete(page);
  }

  clear(): void {
    for (const slot of this.slots.values()) this.free.push(slot);
    this.slots.clear();
  }

  private allocate(): number {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    if (this.used < this.capacity) {
      const slot = this.used++;
      if (slot % SLAB_PAGES === 0) {
        const pages = Math.min(SLAB_PAGES, this.capacity - slot);
        this.slabs.push(new Uint8Array(new ArrayBuffer(pages * this.pageSize)));
      }
      return slot;
    }
    // Full: every slot is in `slots` (capacity >= 1), so the oldest entry exists.
    const [page, slot] = this.slots.entries().next().value as [number, number];
    this.slots.delete(page);
    return slot;
  }

  private view(slot: number): Uint8Array {
    const slab = this.slabs[Math.floor(slot / SLAB_PAGES)];
    const at = (slot % SLAB_PAGES) * this.pageSize;
    return slab.subarray(at, at + this.pageSize);
  }
}
