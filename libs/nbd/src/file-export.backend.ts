import { open, stat, type FileHandle } from 'node:fs/promises';
import { AllocationMap } from './allocation.map.js';
import { NbdBackendError } from './errors.js';
import { type ExportBackend } from './export.backend.js';
import { AllocationFlag, NbdErrno } from './nbd.constants.js';
import { type BlockExtent } from './reply.codec.js';

const ZERO_CHUNK = 1024 * 1024;
const SCAN_CHUNK = 4 * 1024 * 1024;
const HOLE_ZERO = AllocationFlag.Hole | AllocationFlag.Zero;

/**
 * How the backend learns, when it opens the file, which parts read as zeroes (Node has no
 * lseek(SEEK_DATA/SEEK_HOLE), so the kernel's own map cannot be asked):
 * - `data`: report everything as allocated data;
 * - `scan`: read the whole file once and mark every all-zero granule as hole+zero;
 * - `auto` (default): a file with no allocated blocks is one hole; a sparse file no larger than
 *   `scanLimit` is scanned; anything else is data.
 */
export type InitialAllocation = 'auto' | 'scan' | 'data';

export interface FileExportBackendOptions {
  readOnly?: boolean;
  initialAllocation?: InitialAllocation;
  /** Granule of the zero scan, in bytes (power of two); default 4096. */
  scanGranularity?: number;
  /** Largest file `auto` scans; default 1 GiB. */
  scanLimit?: number;
}

/**
 * An export over a local raw (usually sparse) image file: pread/pwrite through one FileHandle,
 * fdatasync on FLUSH and after FUA writes.
 *
 * Block status comes from an in-memory AllocationMap: the file's state when opened (see
 * InitialAllocation), then every write (data), write-zeroes (zero; hole+zero ranges are left as
 * they are unless NO_HOLE asks for allocation) and trim. TRIM leaves the bytes and the map as they
 * are: Node cannot punch holes, and proto.md lets a server ignore TRIM (the `onWrite` hook still
 * fires). WRITE_ZEROES skips ranges already known to read as zeroes, which makes copying a sparse
 * image in cheap — so the file must not change behind the backend's back (see forgetAllocation).
 */
export class FileExportBackend implements ExportBackend {
  readonly multiConn = true;
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly size: number,
    readonly readOnly: boolean,
    private readonly map: AllocationMap,
  ) {}

  static async open(path: string, options: FileExportBackendOptions = {}): Promise<FileExportBackend> {
    const readOnly = options.readOnly ?? false;
    const fh = await open(path, readOnly ? 'r' : 'r+');
    try {
      const st = await stat(path);
      if (!st.isFile()) throw new NbdBackendError(NbdErrno.EINVAL, `${path} is not a regular file`);
      const map = await initialMap(fh, st.size, st.blocks * 512, options);
      return new FileExportBackend(fh, path, st.size, readOnly, map);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /**
   * Forget what is known of [offset, +length) (default: everything) and report it as data from now
   * on. The map assumes every change goes through this backend: whoever writes the file another way
   * must call this, or WRITE_ZEROES could skip a range it believes is already zero.
   */
  forgetAllocation(offset = 0, length = this.size - offset): void {
    this.map.set(offset, length, 0);
  }

  /** Runs in the allocation map (diagnostics). */
  get allocationRuns(): number {
    return this.map.runCount;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) {
        buf.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    return buf;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await this.pwriteAll(data, offset);
    this.map.set(offset, data.length, 0);
    if (fua) await this.fh.datasync();
  }

  async flush(): Promise<void> {
    await this.fh.datasync();
  }

  async trim(_offset: number, _length: number, fua: boolean): Promise<void> {
    if (fua) await this.fh.datasync();
  }

  async writeZeroes(offset: number, length: number, noHole: boolean, fua: boolean): Promise<void> {
    for (const r of this.rangesToZero(offset, length, noHole)) {
      await this.zeroFill(r.offset, r.length);
      this.map.set(r.offset, r.length, AllocationFlag.Zero);
    }
    if (fua) await this.fh.datasync();
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return Promise.resolve(this.map.query(offset, length));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  /**
   * Parts of [offset, +length) that must really be written: whatever may not read as zeroes, and
   * with NO_HOLE also the holes (they must end up allocated).
   */
  private rangesToZero(offset: number, length: number, noHole: boolean): { offset: number; length: number }[] {
    const out: { offset: number; length: number }[] = [];
    let at = offset;
    for (const e of this.map.query(offset, length)) {
      const zero = (e.flags & AllocationFlag.Zero) !== 0;
      const hole = (e.flags & AllocationFlag.Hole) !== 0;
      if (!zero || (noHole && hole)) {
        const last = out[out.length - 1];
        if (last && last.offset + last.length === at) last.length += e.length;
        else out.push({ offset: at, length: e.length });
      }
      at += e.length;
    }
    return out;
  }

  private async zeroFill(offset: number, length: number): Promise<void> {
    const zeroes = Buffer.alloc(Math.min(ZERO_CHUNK, length));
    for (let done = 0; done < length;) {
      const n = Math.min(zeroes.length, length - done);
      await this.pwriteAll(n === zeroes.length ? zeroes : zeroes.subarray(0, n), offset + done);
      done += n;
    }
  }

  private async pwriteAll(data: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }
}

async function initialMap(
  fh: FileHandle,
  size: number,
  allocatedBytes: number,
  options: FileExportBackendOptions,
): Promise<AllocationMap> {
  const mode = options.initialAllocation ?? 'auto';
  if (mode === 'data') return new AllocationMap(size, 0);
  if (mode === 'auto') {
    if (allocatedBytes === 0) return new AllocationMap(size, HOLE_ZERO);
    if (allocatedBytes >= size || size > (options.scanLimit ?? 1024 * 1024 * 1024)) return new AllocationMap(size, 0);
  }
  return scanZeroes(fh, size, options.scanGranularity ?? 4096);
}

/** Read the file once and mark each all-zero granule as hole+zero. */
async function scanZeroes(fh: FileHandle, size: number, granule: number): Promise<AllocationMap> {
  const map = new AllocationMap(size, 0);
  const buf = Buffer.allocUnsafe(SCAN_CHUNK);
  const zero = Buffer.alloc(granule);
  let runStart = -1;
  for (let pos = 0; pos < size;) {
    const want = Math.min(SCAN_CHUNK, size - pos);
    const { bytesRead } = await fh.read(buf, 0, want, pos);
    if (bytesRead === 0) break;
    for (let g = 0; g < bytesRead; g += granule) {
      const len = Math.min(granule, bytesRead - g);
      const isZero = buf.subarray(g, g + len).equals(len === granule ? zero : zero.subarray(0, len));
      if (isZero && runStart < 0) runStart = pos + g;
      else if (!isZero && runStart >= 0) {
        map.set(runStart, pos + g - runStart, HOLE_ZERO);
        runStart = -1;
      }
    }
    pos += bytesRead;
  }
  if (runStart >= 0) map.set(runStart, size - runStart, HOLE_ZERO);
  return map;
}
