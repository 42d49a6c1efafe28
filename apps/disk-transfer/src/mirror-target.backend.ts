import type { ExportBackend } from '@wanmig/nbd';

/**
 * The export a running QEMU mirrors its guest writes into (`blockdev-mirror`, sync=none,
 * copy-mode=write-blocking). QEMU writes the source image itself, so the data arriving here is
 * only news of *which* blocks changed: it is dropped once the gate has marked the dirty map, and
 * the migration reads those blocks from the source image. Reads (QEMU never needs them) are served
 * from the source image.
 */
export class MirrorTargetBackend implements ExportBackend {
  readonly multiConn = true;

  constructor(private readonly source: ExportBackend) {}

  get size(): number {
    return this.source.size;
  }
  read(offset: number, length: number): Promise<Buffer> {
    return this.source.read(offset, length);
  }
  write(): Promise<void> {
    return Promise.resolve();
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  trim(): Promise<void> {
    return Promise.resolve();
  }
  writeZeroes(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return this.source.close?.() ?? Promise.resolve();
  }
}
