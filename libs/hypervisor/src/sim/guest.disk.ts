import { NbdClient } from '@wanmig/nbd';
import { type NbdDiskAddress } from './nbd.uri.js';

export interface GuestDiskStats {
  writes: number;
  bytesWritten: number;
  flushes: number;
  errors: number;
}

/** Most writes the guest keeps in flight; beyond that it waits, as a VM's queue depth would make it. */
export const DISK_QUEUE_DEPTH = 8;

/**
 * The guest's disk, reached through NBD as a VM's disk is through its block layer: writes go out
 * without the main loop waiting (a queue of at most DISK_QUEUE_DEPTH), and `quiesce` waits for every
 * write in flight and flushes, so a paused guest has nothing on its way to the disk.
 */
export class GuestDisk {
  readonly stats: GuestDiskStats = { writes: 0, bytesWritten: 0, flushes: 0, errors: 0 };
  private readonly inFlight = new Set<Promise<void>>();
  private unflushed = false;
  private failure: Error | undefined;

  private constructor(
    private readonly client: NbdClient,
    private readonly log: (line: string) => void,
  ) {}

  static async connect(address: NbdDiskAddress, log: (line: string) => void): Promise<GuestDisk> {
    const client = await NbdClient.connect(address.target, { exportName: address.exportName, connectTimeoutMs: 5000 });
    return new GuestDisk(client, log);
  }

  get sizeBytes(): number {
    return this.client.size;
  }

  /** Whether another write may be issued now. */
  get ready(): boolean {
    return this.failure === undefined && this.inFlight.size < DISK_QUEUE_DEPTH;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  /** Issues a write; `data` must not change afterwards. */
  write(offset: number, data: Buffer, fua: boolean): void {
    this.unflushed ||= !fua;
    this.track(
      this.client.write(offset, data, { fua }).then(() => {
        this.stats.writes++;
        this.stats.bytesWritten += data.length;
      }),
    );
  }

  flush(): void {
    this.unflushed = false;
    this.track(this.client.flush().then(() => void this.stats.flushes++));
  }

  /** Resolves once no write is in flight and everything written is flushed. */
  async quiesce(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
    if (this.unflushed && this.failure === undefined) {
      this.flush();
      await Promise.all([...this.inFlight]);
    }
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.client.read(offset, length);
  }

  async close(): Promise<void> {
    await this.quiesce().catch(() => undefined);
    await this.client.disconnect().catch(() => undefined);
  }

  private track(op: Promise<void>): void {
    const tracked = op.catch((err: unknown) => {
      this.stats.errors++;
      if (this.failure === undefined) {
        this.failure = err instanceof Error ? err : new Error(String(err));
        this.log(`disk I/O failed, no more disk writes: ${this.failure.message}`);
      }
    });
    const settled = tracked.finally(() => this.inFlight.delete(settled));
    this.inFlight.add(settled);
  }
}
