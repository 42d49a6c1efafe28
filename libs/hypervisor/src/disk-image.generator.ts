import { open } from 'node:fs/promises';
import { createRng, DEFAULT_MIX, mixedDataset, type DatasetMix } from '@wanmig/codec';

export interface GeneratedImage {
  path: string;
  sizeBytes: number;
  writtenBytes: number;
  extents: number;
}

/**
 * A sparse image that looks like a used VM disk: `writtenBytes` of VM-like data (zero, duplicate, text and random
 * pages) in extents of 4 MiB scattered over `sizeBytes`, holes elsewhere. The orchestrator makes its sim VMs' disks
 * with it; the disk demo and bench their source images.
 */
export async function generateSparseImage(options: {
  path: string;
  sizeBytes: number;
  writtenBytes: number;
  seed?: number;
  mix?: DatasetMix;
}): Promise<GeneratedImage> {
  const extentBytes = 4 * 1024 * 1024;
  const slots = Math.floor(options.sizeBytes / extentBytes);
  const extents = Math.min(slots, Math.ceil(options.writtenBytes / extentBytes));
  const rng = createRng(options.seed ?? 11);
  // Choose distinct slots (partial Fisher-Yates), then write them in ascending order.
  const order = Array.from({ length: slots }, (_, i) => i);
  for (let i = 0; i < extents; i++) {
    const j = i + rng.int(slots - i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const chosen = order.slice(0, extents).sort((a, b) => a - b);
  const fh = await open(options.path, 'w');
  try {
    await fh.truncate(options.sizeBytes);
    const data = mixedDataset({
      size: extents * extentBytes,
      seed: options.seed ?? 11,
      mix: options.mix ?? DEFAULT_MIX,
      chunkSize: extentBytes,
    });
    let i = 0;
    for (const chunk of data) {
      await fh.write(chunk.data, 0, chunk.data.length, chosen[i++] * extentBytes);
    }
  } finally {
    await fh.close();
  }
  return { path: options.path, sizeBytes: options.sizeBytes, writtenBytes: extents * extentBytes, extents };
}
