import { open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { syncDirectory } from './atomic-file.writer.js';

/**
 * Creates a sparse image of `sizeBytes`: it occupies nothing until written, and reads as zeros,
 * which is what lets zero extents of the source cost no writes. `wx`: an existing file is never
 * truncated here (it may be someone's disk). The size and the directory entry are made durable
 * before the caller records the image in its manifest.
 */
export async function createSparseImage(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    await fh.truncate(sizeBytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await syncDirectory(dirname(path));
}
