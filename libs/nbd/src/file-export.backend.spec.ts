import { mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileExportBackend } from './file-export.backend.js';
import { AllocationFlag } from './nbd.constants.js';

const HZ = AllocationFlag.Hole | AllocationFlag.Zero;

describe('FileExportBackend', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-nbd-file-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function sparse(name: string, size: number, data: { offset: number; bytes: Buffer }[] = []) {
    const path = join(dir, name);
    await writeFile(path, '');
    await truncate(path, size);
    const { open } = await import('node:fs/promises');
    const fh = await open(path, 'r+');
    for (const d of data) await fh.write(d.bytes, 0, d.bytes.length, d.offset);
    await fh.close();
    return path;
  }

  it('treats a file with no allocated blocks as one hole, and tracks writes and zeroes', async () => {
    const backend = await FileExportBackend.open(await sparse('blank.raw', 1 << 20));
    expect(await backend.blockStatus(0, 1 << 20)).toEqual([{ length: 1 << 20, flags: HZ }]);
    await backend.write(4096, Buffer.alloc(4096, 1), false);
    await backend.writeZeroes(65536, 4096, true, true);
    expect(await backend.blockStatus(0, 1 << 20)).toEqual([
      { length: 4096, flags: HZ },
      { length: 4096, flags: 0 },
      { length: 65536 - 8192, flags: HZ },
      { length: 4096, flags: AllocationFlag.Zero },
      { length: (1 << 20) - 65536 - 4096, flags: HZ },
    ]);
    await backend.writeZeroes(4096, 4096, false, false);
    expect((await backend.read(4096, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await backend.flush();
    await backend.close();
  });

  it('scans a sparse file for zero granules when opened', async () => {
    const path = await sparse('scan.raw', 1 << 20, [{ offset: 8192, bytes: Buffer.alloc(100, 5) }]);
    const backend = await FileExportBackend.open(path);
    expect(await backend.blockStatus(0, 1 << 20)).toEqual([
      { length: 8192, flags: HZ },
      { length: 4096, flags: 0 },
      { length: (1 << 20) - 12288, flags: HZ },
    ]);
    await backend.close();
    const asData = await FileExportBackend.open(path, { initialAllocation: 'data' });
    expect(await asData.blockStatus(0, 1 << 20)).toEqual([{ length: 1 << 20, flags: 0 }]);
    await asData.close();
  });

  it('does not write zeroes over a known hole unless NO_HOLE asks for allocation', async () => {
    const path = await sparse('zero.raw', 4 << 20);
    const backend = await FileExportBackend.open(path);
    await backend.writeZeroes(0, 4 << 20, false, false);
    expect((await stat(path)).blocks).toBe(0);
    await backend.writeZeroes(0, 1 << 20, true, false);
    expect((await stat(path)).blocks * 512).toBeGreaterThanOrEqual(1 << 20);
    await backend.close();
  });

  it('opens read-only', async () => {
    const backend = await FileExportBackend.open(await sparse('ro.raw', 4096), { readOnly: true });
    expect(backend.readOnly).toBe(true);
    await expect(backend.write(0, Buffer.alloc(1), false)).rejects.toThrow();
    await backend.close();
  });
});
