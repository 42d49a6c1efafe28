import { type Extent } from './block.geometry.js';
import { type RoaringBitmap32 } from './roaring.js';

export interface ExtentOptions {
  /** First block to consider (default 0). */
  from?: number;
  /** Block after the last one to consider (default: the end of the map). */
  to?: number;
  /** Split runs longer than this into several extents (default: no limit). */
  maxCount?: number;
}

/** Values read from the bitmap per native call: big enough to amortise the call, small enough to stay in cache. */
const PAGE_VALUES = 4096;

/**
 * Runs of consecutive set values in [from, to), in ascending order.
 *
 * Values are read a page at a time (`rangeUint32Array` pages by index) and grouped in JS, which is
 * fast for fragmented maps. When a run reaches the end of a page it may go on for millions of
 * blocks (a fully dirty disk), so its end is found by galloping with `hasRange` instead of
 * reading every value. Each page is re-anchored by value (`rank`), not by index, so a caller that
 * changes the bitmap between steps never makes the iteration skip or repeat blocks it has not
 * reached yet; what it sees is the bitmap as it is when each page is read.
 */
export function* iterateExtents(
  bitmap: RoaringBitmap32,
  limit: number,
  options: ExtentOptions = {},
): Generator<Extent> {
  const to = Math.min(options.to ?? limit, limit);
  const maxCount = options.maxCount ?? Infinity;
  let pos = options.from ?? 0;
  while (pos < to) {
    const index = pos === 0 ? 0 : bitmap.rank(pos - 1);
    const page = bitmap.rangeUint32Array(index, PAGE_VALUES);
    if (page.length === 0) return;
    let i = 0;
    while (i < page.length) {
      const start = page[i];
      if (start >= to) return;
      let j = i + 1;
      while (j < page.length && page[j] === page[j - 1] + 1) j++;
      const atPageEnd = j === page.length;
      let end = page[j - 1] + 1;
      if (atPageEnd) end = runEnd(bitmap, end, to);
      end = Math.min(end, to);
      yield* split(start, end - start, maxCount);
      pos = end;
      if (atPageEnd) break;
      i = j;
    }
  }
}

/** The first value >= `from` that is not set, given that `from - 1` is set; at most `to`. */
function runEnd(bitmap: RoaringBitmap32, from: number, to: number): number {
  if (from >= to || !bitmap.has(from)) return from;
  // Known set: [from, lo). Double the probe until it fails, then bisect.
  let lo = from + 1;
  let step = 1;
  let hi = lo;
  while (hi < to) {
    hi = Math.min(lo + step, to);
    if (!bitmap.hasRange(lo, hi)) break;
    lo = hi;
    step *= 2;
  }
  if (lo >= to) return to;
  // Invariant: [from, lo) set; some value in [lo, hi) unset. It ends with hi = lo + 1, so lo is unset.
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (bitmap.hasRange(lo, mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

function* split(start: number, count: number, maxCount: number): Generator<Extent> {
  while (count > maxCount) {
    yield { start, count: maxCount };
    start += maxCount;
    count -= maxCount;
  }
  if (count > 0) yield { start, count };
}
