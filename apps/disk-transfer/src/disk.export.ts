import { open } from 'node:fs/promises';
import { BlockMap } from '@wanmig/blockmap';
import { FileExportBackend, NbdServer, type NbdAddress } from '@wanmig/nbd';
import { DEFAULT_BLOCK_SIZE } from '@wanmig/protocol';
import { ActivityLog } from './activity.log.js';
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
  /**
   * Where the export keeps its activity log (see ActivityLog): writes are put on record there while a migration runs.
   * Without it a crash of this process forgets the writes not yet sent.
   */
  activityLogPath?: string;
  /** A migration of this export was under way when the process before stopped: its log is read and tracking goes on. */
  resumeActivity?: boolean;
}

/** Told of every write once it is in the image (see WriteGate's onApplied). */
export type WriteListener = (offset: number, length: number) => void;

/**
 * One disk on the source side: an NBD export over the image, the dirty map every write marks, the
 * gate that freezes writes for the final drain, and the throttle that paces them when the guest
 * outruns the link.
 */
export class DiskExport {
  private constructor(
    private readonly writeListeners: Set<WriteListener>,
    readonly imagePath: string,
    readonly role: ExportRole,
    readonly dirty: BlockMap,
    readonly gate: WriteGate,
    readonly throttle: WriteThrottle,
    readonly server: NbdServer,
    readonly address: NbdAddress,
    readonly activity: ActivityLog | undefined,
    /** What the activity log left by the process before could not say (then every block counts as unsure). */
    readonly activityProblems: string[],
  ) {}

  get size(): number {
    return this.gate.size;
  }

  /**
   * Calls `listener` for every write from now on, as the dirty map is marked: after the write reached the image
   * (for a mirror target, after QEMU wrote the source image). Returns the unsubscribe.
   */
  onWrite(listener: WriteListener): () => void {
    this.writeListeners.add(listener);
    return () => this.writeListeners.delete(listener);
  }

  static async open(options: DiskExportOptions): Promise<DiskExport> {
    const role = options.role ?? ExportRole.Serve;
    if (options.createSize !== undefined) await createSparse(options.imagePath, options.createSize);
    const file = await FileExportBackend.open(options.imagePath, { readOnly: role === ExportRole.MirrorTarget });
    const dirty = BlockMap.forSize(file.size, options.blockSize ?? DEFAULT_BLOCK_SIZE);
    const backend = role === ExportRole.MirrorTarget ? new MirrorTargetBackend(file) : file;
    let activity: ActivityLog | undefined;
    let activityProblems: string[] = [];
    if (options.activityLogPath && options.resumeActivity) {
      ({ log: activity, problems: activityProblems } = await ActivityLog.resume(
        options.activityLogPath,
        dirty.geometry,
      ));
    } else if (options.activityLogPath) {
      activity = ActivityLog.create(options.activityLogPath, dirty.geometry);
    }
    const writeListeners = new Set<WriteListener>();
    const gate = new WriteGate(
      backend,
      (offset, length) => {
        dirty.markBytes(offset, length);
        for (const listener of writeListeners) listener(offset, length);
      },
      activity,
    );
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
      return new DiskExport(
        writeListeners,
        options.imagePath,
        role,
        dirty,
        gate,
        throttle,
        server,
        address,
        activity,
        activityProblems,
      );
    } catch (err) {
      await activity?.close();
      await gate.close();
      throw err;
    }
  }

  /**
   * A migration starts: from now on every write is on record before it reaches the image. Writes already inside
   * finish first (a brief freeze), so none of them can land unrecorded after the copy has read its block.
   */
  async startTracking(): Promise<void> {
    if (!this.activity) return;
    const frozen = this.gate.isFrozen;
    if (!frozen) await this.gate.freeze();
    try {
      await this.activity.start();
    } finally {
      if (!frozen) this.gate.thaw();
    }
  }

  /** The migration ended for good: nothing more to put on record. */
  async stopTracking(): Promise<void> {
    await this.activity?.stop();
  }

  async close(): Promise<void> {
    this.gate.thaw();
    await this.server.close();
    await this.gate.close();
    // Kept on file: a migration under way resumes from it at the next start.
    await this.activity?.close();
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
