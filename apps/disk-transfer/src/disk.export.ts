import { open } from 'node:fs/promises';
import { BlockMap } from '@wanmig/blockmap';
import { FileExportBackend, NbdServer, type NbdAddress } from '@wanmig/nbd';
import { DEFAULT_BLOCK_SIZE } from '@wanmig/protocol';
import { MirrorTargetBackend } from './mirror-target.backend.js';
import { WriteGate } from './write.gate.js';
import { WriteThrottle } from './write.throttle.js';

export const ExportRole = {
  /** The export is the VM's disk: reads and writes hit the image. */
  Serve: 'serve',
  /** A running QEMU mirrors its writes here: only which blocks changed is kept. */
  MirrorTarget: 'mirror-target',
} as const;
export type ExportRole = (typeof ExportRole)[keyof typeof ExportRole];

export interface DiskExportOptions {
  imagePath: string;
  role?: ExportRole;
  /** Create a sparse image of this size when the file does not exist. */
  createSize?: number;
  blockSize?: number;
  listen: { host?: string; port?: number } | { path: string };
  name?: string;
}

/**
 * One disk on the source side: an NBD export over the image, the dirty map every write marks, the
 * gate that freezes writes for the final drain, and the throttle that paces them when the guest
 * outruns the link.
 */
export class DiskExport {
  private constructor(
    readonly imagePath: string,
    readonly role: ExportRole,
    readonly dirty: BlockMap,
    readonly gate: WriteGate,
    readonly throttle: WriteThrottle,
    readonly server: NbdServer,
    readonly address: NbdAddress,
  ) {}

  get size(): number {
    return this.gate.size;
  }

  static async open(options: DiskExportOptions): Promise<DiskExport> {
    const role = options.role ?? ExportRole.Serve;
    if (options.createSize !== undefined) await createSparse(options.imagePath, options.createSize);
    const file = await FileExportBackend.open(options.imagePath, { readOnly: role === ExportRole.MirrorTarget });
    const dirty = BlockMap.forSize(file.size, options.blockSize ?? DEFAULT_BLOCK_SIZE);
    const backend = role === ExportRole.MirrorTarget ? new MirrorTargetBackend(file) : file;
    const gate = new WriteGate(backend, (offset, length) => dirty.markBytes(offset, length));
    const throttle = new WriteThrottle();
    const server = new NbdServer({
      exports: [
        {
          name: options.name ?? 'disk',
          description: `wanmig ${role} export of ${options.imagePath}`,
          backend: gate,
          beforeWriteReply: (_offset, length) => throttle.beforeReply(length),
        },
      ],
    });
    try {
      const address = await server.listen(options.listen);
      return new DiskExport(options.imagePath, role, dirty, gate, throttle, server, address);
    } catch (err) {
      await gate.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    this.gate.thaw();
    await this.server.close();
    await this.gate.close();
  }
}

/** Creates a sparse image when none exists; an existing file is left as it is. */
async function createSparse(path: string, size: number): Promise<void> {
  let fh;
  try {
    fh = await open(path, 'wx');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return;
    throw err;
  }
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}
