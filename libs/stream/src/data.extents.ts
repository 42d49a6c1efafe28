import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface ImageExtent {
  offset: number;
  length: number;
  /** False: the range reads as zeroes (a hole, or allocated and known zero). */
  data: boolean;
}

const MAP_TIMEOUT_MS = 10_000;

/**
 * Where a raw image holds data, as `qemu-img map` finds it (SEEK_DATA/SEEK_HOLE, which Node does not expose), with
 * the data ranges widened to whole blocks; undefined when the map cannot be had (no qemu-img, not raw, odd output),
 * and the caller then reads everything. A 2 GiB guest disk holding 150 MB is mapped in a few ms, where reading its
 * holes costs over a second of kernel time spent zero-filling, and more to find the zeroes again.
 *
 * The map is a moment's view: a write after it may land in a range it called a hole. Its users catch such writes
 * another way: the disk's bulk pass leaves a hole's dirty bits alone, so they go in catch-up; a RegionDigestCache
 * marks the region stale before it maps, so it is hashed again.
 */
export async function mapDataExtents(
  imagePath: string,
  sizeBytes: number,
  blockSize: number,
): Promise<ImageExtent[] | undefined> {
  let raw: string;
  try {
    ({ stdout: raw } = await execFileAsync('qemu-img', ['map', '--output=json', '-f', 'raw', imagePath], {
      timeout: MAP_TIMEOUT_MS,
      maxBuffer: 64 * 1024 * 1024,
    }));
  } catch {
    return undefined;
  }
  return parseQemuImgMap(raw, sizeBytes, blockSize);
}

/** `qemu-img map --output=json` → extents covering [0, sizeBytes) in order; undefined if it does not parse so. */
export function parseQemuImgMap(json: string, sizeBytes: number, blockSize: number): ImageExtent[] | undefined {
  let entries: unknown;
  try {
    entries = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (!Array.isArray(entries)) return undefined;
  // Data ranges widened to whole blocks and merged; the holes are what is left between them.
  const data: Array<{ from: number; to: number }> = [];
  let at = 0;
  for (const e of entries as Array<Record<string, unknown>>) {
    const { start, length } = e;
    if (typeof start !== 'number' || typeof length !== 'number' || start !== at || length <= 0) return undefined;
    at = start + length;
    if (e.data !== true || e.zero === true || start >= sizeBytes) continue;
    const from = Math.floor(start / blockSize) * blockSize;
    const to = Math.min(sizeBytes, Math.ceil(at / blockSize) * blockSize);
    const last = data[data.length - 1];
    if (last && from <= last.to) last.to = Math.max(last.to, to);
    else data.push({ from, to });
  }
  // qemu-img rounds a raw image up to whole 512-byte sectors: a map may run past the size, never fall short.
  if (at < sizeBytes) return undefined;
  const out: ImageExtent[] = [];
  let end = 0;
  for (const { from, to } of data) {
    if (from > end) out.push({ offset: end, length: from - end, data: false });
    out.push({ offset: from, length: to - from, data: true });
    end = to;
  }
  if (end < sizeBytes) out.push({ offset: end, length: sizeBytes - end, data: false });
  return out;
}
