import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdClient } from '@wanmig/nbd';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskExport, ExportRole } from './disk.export.js';

describe('DiskExport', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-export-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function exportAndWrite(role: ExportRole) {
    const imagePath = join(dir, `${role}.img`);
    const disk = await DiskExport.open({
      imagePath,
      role,
      createSize: 1 << 20,
      blockSize: 65536,
      listen: { path: join(dir, `${role}.sock`) },
    });
    const told: Array<[number, number]> = [];
    const unwatch = disk.onWrite((offset, length) => told.push([offset, length]));
    const client = await NbdClient.connect({ path: join(dir, `${role}.sock`) });
    await client.write(70_000, Buffer.alloc(4096, 0xaa));
    await client.writeZeroes(200_000, 100);
    unwatch();
    await client.write(0, Buffer.alloc(10, 1));
    await client.disconnect();
    const dirty = disk.dirty.toArray();
    await disk.close();
    return { image: await readFile(imagePath), dirty, told };
  }

  it('serve role: writes reach the image and mark the blocks they touch', async () => {
    const { image, dirty, told } = await exportAndWrite(ExportRole.Serve);
    expect(image[70_000]).toBe(0xaa);
    expect(dirty).toEqual([0, 1, 3]);
    // Write listeners hear of every write until they unsubscribe.
    expect(told).toEqual([
      [70_000, 4096],
      [200_000, 100],
    ]);
  });

  it("mirror-target role: writes only mark the dirty map; the source image is QEMU's to write", async () => {
    const { image, dirty, told } = await exportAndWrite(ExportRole.MirrorTarget);
    expect(image[70_000]).toBe(0);
    expect(dirty).toEqual([0, 1, 3]);
    expect(told).toHaveLength(2);
  });
});
