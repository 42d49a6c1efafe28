import { type BlockExtent } from './reply.codec.js';

/**
 * Byte-exact map of `base:allocation` status over an export: a sorted list of runs, each a start
 * offset and AllocationFlag bits, where neighbouring runs always differ. Memory grows with how
 * fragmented the state is, not with the export size.
 */
export class AllocationMap {
  private starts: number[] = [0];
  private values: number[];

  constructor(
    readonly size: number,
    initial = 0,
  ) {
    this.values = [initial];
  }

  /** Number of runs (for tests and diagnostics). */
  get runCount(): number {
    return this.size === 0 ? 0 : this.starts.length;
  }

  /** Mark [offset, offset + length) with `flags`. */
  set(offset: number, length: number, flags: number): void {
    const end = Math.min(offset + length, this.size);
    if (length <= 0 || offset >= end) return;
    const i = this.runAt(offset);
    const j = this.runAt(end - 1);
    if (i === j && this.values[i] === flags) return;
    const newStarts: number[] = [];
    const newValues: number[] = [];
    if (this.starts[i] < offset) {
      newStarts.push(this.starts[i]);
      newValues.push(this.values[i]);
    }
    newStarts.push(offset);
    newValues.push(flags);
    if (end < this.runEnd(j)) {
      newStarts.push(end);
      newValues.push(this.values[j]);
    }
    this.starts.splice(i, j - i + 1, ...newStarts);
    this.values.splice(i, j - i + 1, ...newValues);
    this.mergeAround(Math.max(0, i - 1), i + newStarts.length);
  }

  /** True when every byte of [offset, offset + length) has all bits of `flags` set. */
  every(offset: number, length: number, flags: number): boolean {
    const end = Math.min(offset + length, this.size);
    if (offset >= end) return true;
    for (let i = this.runAt(offset); i < this.starts.length && this.starts[i] < end; i++) {
      if ((this.values[i] & flags) !== flags) return false;
    }
    return true;
  }

  /** Extents covering [offset, offset + length) (clipped to it), at most `maxExtents` of them. */
  query(offset: number, length: number, maxExtents = Infinity): BlockExtent[] {
    const end = Math.min(offset + length, this.size);
    const out: BlockExtent[] = [];
    if (offset >= end) return out;
    for (let i = this.runAt(offset); i < this.starts.length && out.length < maxExtents; i++) {
      const from = Math.max(this.starts[i], offset);
      if (from >= end) break;
      out.push({ length: Math.min(this.runEnd(i), end) - from, flags: this.values[i] });
    }
    return out;
  }

  /** Index of the run containing `offset` (binary search). */
  private runAt(offset: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  private runEnd(i: number): number {
    return i + 1 < this.starts.length ? this.starts[i + 1] : this.size;
  }

  /** Merge equal neighbours among runs [from, to]. */
  private mergeAround(from: number, to: number): void {
    for (let k = Math.min(to, this.starts.length - 1); k > from; k--) {
      if (this.values[k] === this.values[k - 1]) {
        this.starts.splice(k, 1);
        this.values.splice(k, 1);
      }
    }
  }
}
