import { AllocationMap } from './allocation.map.js';
import { type ExportBackend } from './export.backend.js';
import { AllocationFlag } from './nbd.constants.js';
import { type BlockExtent } from './reply.codec.js';

/**
 * An export held in memory (tests, small embedded disks). It starts as one hole reading as zeroes;
 * TRIM and WRITE_ZEROES without NO_HOLE turn ranges back into holes. FLUSH and FUA have nothing to
 * persist.
 */
export class MemoryExportBackend implements ExportBackend {
  readonly multiConn = true;
  readonly data: Buffer;
  private readonly map: AllocationMap;

  constructor(
    sizeOrData: number | Buffer,
    readonly readOnly = false,
  ) {
    this.data = typeof sizeOrData === 'number' ? Buffer.alloc(sizeOrData) : sizeOrData;
    this.map = new AllocationMap(
      this.data.length,
      typeof sizeOrData === 'number' ? AllocationFlag.Hole | AllocationFlag.Zero : 0,
    );
  }

  get size(): number {
    return this.data.length;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return Promise.resolve(Buffer.from(this.data.subarray(offset, offset + length)));
  }

  write(offset: number, data: Buffer, _fua: boolean): Promise<void> {
    data.copy(this.data, offset);
    this.map.set(offset, data.length, 0);
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  trim(offset: number, length: number, _fua: boolean): Promise<void> {
    this.data.fill(0, offset, offset + length);
    this.map.set(offset, length, AllocationFlag.Hole | AllocationFlag.Zero);
    return Promise.resolve();
  }

  writeZeroes(offset: number, length: number, noHole: boolean, _fua: boolean): Promise<void> {
    this.data.fill(0, offset, offset + length);
    this.map.set(offset, length, noHole ? AllocationFlag.Zero : AllocationFlag.Hole | AllocationFlag.Zero);
    return Promise.resolve();
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return Promise.resolve(this.map.query(offset, length));
  }
}
